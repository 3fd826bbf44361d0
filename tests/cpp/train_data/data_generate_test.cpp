// Teacher-generated data with a tiny random model over the GPT-2 vocabulary: the samples are a pure function
// of the seed, batched decoding gives the one-at-a-time tokens, prompts are slices of the prompt text, and
// --mask-prompt leaves only generated tokens as targets.
#include <gtest/gtest.h>

#include "data_test_util.h"
#include "hylo/train/data_generate.h"

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

TEST_F(TeacherSamples, BatchedDecodingGivesTheOneAtATimeTokens) {
  // Greedy, and one prompt length for all, so batch 1 and batch 3 see the same prompts.
  TeacherSampleOptions o = options(9);
  o.sampling.temperature = 0.0;
  o.min_prompt_tokens = o.max_prompt_tokens = 7;
  const auto single = run(o);
  o.batch = 3;  // 5 samples: a full batch and a partial one
  const auto batched = run(o);
  EXPECT_EQ(tokens_of(single), tokens_of(batched));
  // Sampling: the batched block path draws each row's uniform as its Sampler would, so it gives the
  // one-at-a-time tokens too (the logits of a [B, 1] and a [1, 1] forward differ by rounding only, far below
  // what would move a draw across a token boundary here).
  TeacherSampleOptions s = options(9);
  s.min_prompt_tokens = s.max_prompt_tokens = 6;
  s.max_new_tokens = 12;
  const auto sampled_single = run(s);
  s.batch = 2;
  EXPECT_EQ(tokens_of(run(s)), tokens_of(sampled_single));
  EXPECT_EQ(tokens_of(run(s)), tokens_of(run(s)));
  // With a repetition penalty the batched path uses one Sampler per row: still the one-at-a-time tokens.
  s.sampling.repetition_penalty = 1.3;
  s.batch = 1;
  const auto penalised_single = run(s);
  s.batch = 4;
  EXPECT_EQ(tokens_of(run(s)), tokens_of(penalised_single));
}

TEST_F(TeacherSamples, PromptLongerThanEveryFileIsAnError) {
  TeacherSampleOptions o = options(1);
  o.min_prompt_tokens = o.max_prompt_tokens = 1000;
  EXPECT_THROW(draw_prompts(corpus_, o), Error);
}

}  // namespace
}  // namespace hylo::train
