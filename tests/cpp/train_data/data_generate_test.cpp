// Teacher-generated data with tiny random models: the samples are a pure function of the seed, the engine gives
// each sample the tokens of the reference loop (infer/generate.h generate()) for its prompt and seed, prompts are
// slices of the prompt text, and --mask-prompt leaves only generated tokens as targets.
#include <gtest/gtest.h>

#include <random>

#include "data_test_util.h"
#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/generate.h"
#include "hylo/train/data_generate.h"
#include "hylo/train/data_shuffle.h"
#include "shared/tiny_models.h"

namespace hylo::train {
namespace {

ModelConfig tiny_llama(int64_t vocab) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 256;
  for (int i = 0; i < 2; ++i) {
    LayerSpec l;
    l.mixer = MixerKind::kGqa;
    l.gqa.num_heads = 4;
    l.gqa.num_kv_heads = 2;
    l.gqa.head_dim = 8;
    l.intermediate_size = 48;
    c.layers.push_back(l);
  }
  return c;
}

class TeacherSamples : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(testing::gpt2_tokenizer()))
      GTEST_SKIP() << testing::gpt2_tokenizer() << " missing (scripts/setup.sh unpacks it)";
    tok_ = std::make_unique<tok::Tokenizer>(tok::Tokenizer::from_path(testing::gpt2_tokenizer()).value_or_throw());
    model_ = CausalLM::random(tiny_llama(tok_->vocab_size()), 3);
    conv_ = doc_convention(*tok_, "").value_or_throw();
    testing::write_text(tmp_ / "prompts.txt",
                        "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money "
                        "in my purse, and nothing particular to interest me on shore, I thought I would sail about "
                        "a little and see the watery part of the world.");
    testing::write_text(tmp_ / "short.txt", "Too short.");
    corpus_ = tokenize_prompt_files(*tok_, {tmp_ / "prompts.txt", tmp_ / "short.txt"});
  }
  TeacherSampleOptions options(uint64_t seed) const {
    TeacherSampleOptions o;
    o.num_samples = 5;
    o.max_new_tokens = 6;
    o.min_prompt_tokens = 4;
    o.max_prompt_tokens = 9;
    o.sampling.temperature = 1.0;
    o.sampling.top_p = 0.9;
    o.sampling.seed = seed;
    o.progress = false;
    return o;
  }
  std::vector<Document> run(const TeacherSampleOptions& o) {
    return generate_teacher_documents(*model_, *tok_, conv_, corpus_, o, 0);
  }
  testing::TempDir tmp_;
  std::unique_ptr<tok::Tokenizer> tok_;
  std::unique_ptr<CausalLM> model_;
  DocConvention conv_;
  PromptCorpus corpus_;
};

std::vector<std::vector<uint32_t>> tokens_of(const std::vector<Document>& docs) {
  std::vector<std::vector<uint32_t>> t;
  for (const auto& d : docs) t.push_back(d.tokens);
  return t;
}

TEST_F(TeacherSamples, DeterministicBySeed) {
  const auto a = run(options(1)), b = run(options(1)), c = run(options(2));
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(tokens_of(a), tokens_of(b));
  EXPECT_NE(tokens_of(a), tokens_of(c));
}

// --gen-seconds: once the limit has passed no sample starts, the first batch always does, and what was made is the
// first k samples of the unlimited run (so a dataset cut short by a lease is reproducible from its count).
TEST_F(TeacherSamples, TimeLimitKeepsTheFirstSamplesOfTheFullRun) {
  TeacherSampleOptions o = options(5);
  o.num_samples = 6;
  o.batch = 2;
  const auto full = run(o);
  ASSERT_EQ(full.size(), 6u);

  o.max_seconds = 1e-9;  // passed before the second batch could start
  GenerationStats st;
  const auto cut = generate_teacher_documents(*model_, *tok_, conv_, corpus_, o, 0, &st);
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(st.samples, 2);
  const auto all = tokens_of(full);
  EXPECT_EQ(tokens_of(cut), std::vector<std::vector<uint32_t>>(all.begin(), all.begin() + 2));

  o.max_seconds = 1e6;  // a limit never reached changes nothing
  EXPECT_EQ(tokens_of(run(o)), tokens_of(full));

  o.max_seconds = -1;
  EXPECT_THROW(run(o), Error);
}

TEST_F(TeacherSamples, PromptsAreSlicesOfOneFileAndMaskedOut) {
  TeacherSampleOptions o = options(4);
  o.mask_prompt = true;
  const auto prompts = draw_prompts(corpus_, o);
  const auto docs = run(o);
  const std::vector<int32_t>& text = corpus_.files[0];
  for (size_t i = 0; i < docs.size(); ++i) {
    const auto& p = prompts[i];
    ASSERT_GE(p.size(), 4u);
    ASSERT_LE(p.size(), 9u);
    EXPECT_NE(std::search(text.begin(), text.end(), p.begin(), p.end()), text.end()) << i;
    const Document& d = docs[i];
    ASSERT_EQ(d.mask.size(), d.tokens.size());
    // GPT-2 adds no BOS: the document starts with the prompt slice, masked out; generated tokens are targets;
    // the document end appended after a length stop is not a target.
    for (size_t t = 0; t < p.size(); ++t) {
      EXPECT_EQ(d.tokens[t], static_cast<uint32_t>(p[t]));
      EXPECT_EQ(d.mask[t], 0);
    }
    const size_t generated = d.tokens.size() - p.size() - 1;
    EXPECT_EQ(generated, 6u);  // a random model over 50257 ids essentially never draws <|endoftext|>
    for (size_t t = p.size(); t < p.size() + generated; ++t) EXPECT_EQ(d.mask[t], 1);
    EXPECT_EQ(d.tokens.back(), static_cast<uint32_t>(*conv_.doc_end_id));
    EXPECT_EQ(d.mask.back(), 0);
  }
}

// What generate_teacher_documents must give, from the reference loop one sample at a time: sample i is its prompt
// (BOS when the convention adds one) + generate() with seed (seed, i) + the document end unless it ended with EOS.
std::vector<std::vector<uint32_t>> reference_tokens(CausalLM& model, const tok::Tokenizer& tok,
                                                    const DocConvention& conv, const PromptCorpus& corpus,
                                                    const TeacherSampleOptions& o, int64_t* eos_stops) {
  std::vector<std::vector<uint32_t>> out;
  const auto prompts = draw_prompts(corpus, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> prompt;
    if (conv.bos_added && conv.bos_id) prompt.push_back(*conv.bos_id);
    prompt.insert(prompt.end(), prompts[i].begin(), prompts[i].end());
    GenerateOptions go;
    go.sampling = o.sampling;
    go.sampling.seed = derive_seed(o.sampling.seed, kStreamSampler + i);
    go.max_new_tokens = o.max_new_tokens;
    const GenerateResult r = generate(model, &tok, prompt, go);
    std::vector<uint32_t> t(prompt.begin(), prompt.end());
    t.insert(t.end(), r.ids.begin(), r.ids.end());
    if (r.stop_reason == StopReason::kEos) ++*eos_stops;
    else if (conv.doc_end_id) t.push_back(static_cast<uint32_t>(*conv.doc_end_id));
    out.push_back(std::move(t));
  }
  return out;
}

struct EngineCase {
  uint64_t seed;
  double temperature, top_p;
  int64_t top_k, batch;
  double repetition_penalty = 1.0;
};

const EngineCase kEngineCases[] = {
    {1, 0.0, 1.0, 0, 3},          // greedy
    {2, 1.0, 0.9, 0, 2},          // top-p
    {3, 0.7, 1.0, 20, 4},         // temperature and top-k
    {4, 1.3, 0.95, 0, 1},         // one sequence at a time
    {5, 0.8, 1.0, 0, 3, 1.3},     // repetition penalty
};

// The sampling settings and batch of a case, on top of `o`.
TeacherSampleOptions with_case(TeacherSampleOptions o, const EngineCase& c) {
  o.sampling.temperature = c.temperature;
  o.sampling.top_p = c.top_p;
  o.sampling.top_k = c.top_k;
  o.sampling.repetition_penalty = c.repetition_penalty;
  o.batch = c.batch;
  return o;
}

TEST_F(TeacherSamples, EngineGivesTheReferenceTokensOfEverySample) {
  for (const EngineCase& c : kEngineCases) {
    TeacherSampleOptions o = with_case(options(c.seed), c);
    o.num_samples = 7;        // a partial last group: prompts of different lengths run side by side
    o.max_new_tokens = 10;
    int64_t eos_stops = 0;
    const auto expected = reference_tokens(*model_, *tok_, conv_, corpus_, o, &eos_stops);
    GenerationStats st;
    const auto docs = generate_teacher_documents(*model_, *tok_, conv_, corpus_, o, 0, &st);
    EXPECT_EQ(tokens_of(docs), expected) << "seed " << c.seed;
    EXPECT_EQ(st.eos_stops, eos_stops);
  }
}

// The hybrid of tests/cpp/shared (GQA, MLA, GDN and Mamba2 layers) over 101 ids, five of them EOS, so that samples
// end inside their budget; prompts are random ids. The engine runs with 4-token pages, and (second pass) with
// pools for fewer tokens than the running sequences want, so that sequences are preempted and recomputed, and with
// the bucketed decode of the CUDA graphs run eagerly.
TEST_F(TeacherSamples, HybridEngineSamplesEndAtEosAsTheReferenceDoes) {
  ModelConfig config = mixed_config();
  config.eos_token_ids = {3, 17, 42, 64, 90};
  auto model = CausalLM::random(config, 11);
  PromptCorpus corpus;
  std::mt19937_64 rng(5);
  for (int f = 0; f < 3; ++f) {
    std::vector<int32_t> ids(static_cast<size_t>(20 + 7 * f));
    for (auto& t : ids) t = static_cast<int32_t>(rng() % 101);
    corpus.files.push_back(std::move(ids));
  }
  engine::EngineOptions paged;
  paged.page_size = 4;
  paged.prefill_chunk = 8;
  engine::EngineOptions tight = paged;
  {
    engine::EngineOptions probe = paged;
    probe.memory_bytes = int64_t{1} << 40;
    const engine::MemoryPlan unit = engine::CachePools::plan(*model, probe);
    tight.memory_bytes = 12 * unit.bytes_per_page + 5 * unit.bytes_per_slot;  // 48 tokens for 4 sequences
    tight.bucketed_decode_on_cpu = true;
  }
  int64_t total_eos = 0, total_length = 0, tight_preemptions = 0;
  for (const engine::EngineOptions& eo : {paged, tight}) {
    for (const EngineCase& c : kEngineCases) {
      TeacherSampleOptions o = with_case(options(c.seed), c);
      o.num_samples = 9;
      o.max_new_tokens = 14;
      o.min_prompt_tokens = 3;
      o.max_prompt_tokens = 12;
      o.engine = eo;
      int64_t eos_stops = 0;
      const auto expected = reference_tokens(*model, *tok_, conv_, corpus, o, &eos_stops);
      GenerationStats st;
      const auto docs = generate_teacher_documents(*model, *tok_, conv_, corpus, o, 0, &st);
      EXPECT_EQ(tokens_of(docs), expected) << "seed " << c.seed << (eo.bucketed_decode_on_cpu ? " tight" : "");
      EXPECT_EQ(st.eos_stops, eos_stops);
      total_eos += st.eos_stops;
      total_length += o.num_samples - st.eos_stops;
      if (eo.bucketed_decode_on_cpu) tight_preemptions += st.preemptions;
    }
  }
  // Both ways of ending occur, so the comparison above covered samples that end inside their budget.
  EXPECT_GT(total_eos, 0);
  EXPECT_GT(total_length, 0);
  EXPECT_GT(tight_preemptions, 0);  // the tight pools did preempt, so recomputation was compared too
}

TEST_F(TeacherSamples, PromptLongerThanEveryFileIsAnError) {
  TeacherSampleOptions o = options(1);
  o.min_prompt_tokens = o.max_prompt_tokens = 1000;
  EXPECT_THROW(draw_prompts(corpus_, o), Error);
}

}  // namespace
}  // namespace hylo::train
