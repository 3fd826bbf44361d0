// What `hylo generate` and `hylo perplexity` run on the engine against the reference loops they replace
// (infer/generate.h, eval/perplexity.h), on the tiny hybrid with one layer of each mixer kind. In fp64 the two are
// the same function up to rounding, so greedy ids (128 tokens), seeded samples and stop handling must be
// identical, and every per-token NLL equal up to the fp32 rounding of the logits; the engine runs with small pages
// and chunks so that prefill crosses many chunk and page boundaries.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "hylo/eval/perplexity.h"
#include "hylo/eval/perplexity_engine.h"
#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine_generate.h"
#include "hylo/infer/generate.h"
#include "shared/tiny_models.h"

namespace hylo {
namespace {

std::unique_ptr<CausalLM> hybrid_fp64(uint64_t seed = 23) {
  LoadOptions o;
  o.dtype = at::kDouble;
  return CausalLM::random(mixed_config(), seed, o);
}

engine::EngineOptions fp64_options(int64_t page_size, int64_t chunk, int64_t sequences) {
  engine::EngineOptions o;
  o.page_size = page_size;
  o.prefill_chunk = chunk;
  o.max_step_tokens = std::max<int64_t>(chunk, sequences);
  o.max_sequences = sequences;
  o.memory_bytes = int64_t{64} << 20;
  o.state_dtype = at::kDouble;
  o.cuda_graphs = false;
  return o;
}

std::vector<int64_t> random_ids(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (auto& t : p) t = static_cast<int64_t>(rng() % 101);
  return p;
}

TEST(EngineGenerate, Greedy128TokensEqualTheReferenceLoop) {
  auto model = hybrid_fp64();
  const std::vector<int64_t> prompt = random_ids(37, 1);
  GenerateOptions opts;
  opts.sampling.temperature = 0.0;
  opts.max_new_tokens = 128;
  const GenerateResult want = generate(*model, nullptr, prompt, opts);
  for (auto [page, chunk] : {std::pair<int64_t, int64_t>{4, 8}, {16, 16}, {8, 64}}) {
    engine::Engine eng(*model, fp64_options(page, chunk, 2));
    const EngineGenerateResult got = generate(eng, nullptr, prompt, opts);
    EXPECT_EQ(got.generation.ids, want.ids) << "page " << page << " chunk " << chunk;
    EXPECT_EQ(got.generation.stop_reason, StopReason::kLength);
    EXPECT_EQ(got.generation.prompt_tokens, 37);
    EXPECT_EQ(got.generation.decode_steps, 127);
    EXPECT_FALSE(eng.has_work());
  }
}

TEST(EngineGenerate, SamplingPenaltyAndStopIdsMatchTheReferenceLoop) {
  auto model = hybrid_fp64(5);
  const std::vector<int64_t> prompt = random_ids(20, 2);
  engine::Engine eng(*model, fp64_options(8, 8, 1));
  GenerateOptions opts;
  opts.max_new_tokens = 40;
  opts.sampling = SamplingParams{.temperature = 1.3, .top_k = 40, .top_p = 0.95, .seed = 7};
  const auto sampled = generate(*model, nullptr, prompt, opts).ids;
  EXPECT_EQ(generate(eng, nullptr, prompt, opts).generation.ids, sampled);
  opts.sampling = SamplingParams{.temperature = 0.0, .repetition_penalty = 1.5};
  EXPECT_EQ(generate(eng, nullptr, prompt, opts).generation.ids, generate(*model, nullptr, prompt, opts).ids);
  // A stop id ends generation at its first occurrence, included, as in the reference.
  opts.sampling = SamplingParams{.temperature = 0.0};
  const auto full = generate(*model, nullptr, prompt, opts).ids;
  opts.extra_eos_ids = {full[9]};
  const GenerateResult want = generate(*model, nullptr, prompt, opts);
  const EngineGenerateResult got = generate(eng, nullptr, prompt, opts);
  EXPECT_EQ(want.stop_reason, StopReason::kEos);
  EXPECT_EQ(got.generation.stop_reason, StopReason::kEos);
  EXPECT_EQ(got.generation.ids, want.ids);
  opts.max_new_tokens = 0;
  EXPECT_TRUE(generate(eng, nullptr, prompt, opts).generation.ids.empty());
}

// What `hylo chat` relies on: the second turn's prompt starts with the first turn's, and on a hybrid the engine takes
// that prefix from the cache (pages plus a recurrent-state snapshot) instead of recomputing it, with the same ids.
TEST(EngineGenerate, SecondTurnReusesTheFirstOnAHybrid) {
  auto model = hybrid_fp64(11);
  engine::EngineOptions o = fp64_options(8, 8, 1);
  o.prefix_snapshots = 8;
  engine::Engine eng(*model, o);
  GenerateOptions opts;
  opts.sampling.temperature = 0.0;
  opts.max_new_tokens = 12;
  const std::vector<int64_t> turn1 = random_ids(37, 4);
  const EngineGenerateResult r1 = generate(eng, nullptr, turn1, opts);
  EXPECT_EQ(r1.cached_prompt_tokens, 0);
  std::vector<int64_t> turn2 = turn1;
  turn2.insert(turn2.end(), r1.generation.ids.begin(), r1.generation.ids.end());
  for (int64_t t : random_ids(9, 5)) turn2.push_back(t);
  const EngineGenerateResult r2 = generate(eng, nullptr, turn2, opts);
  EXPECT_GE(r2.cached_prompt_tokens, 37 / 8 * 8);  // at least every full page of the first prompt
  EXPECT_LT(r2.cached_prompt_tokens, static_cast<int64_t>(turn2.size()));
  EXPECT_EQ(r2.generation.ids, generate(*model, nullptr, turn2, opts).ids);
  EXPECT_GE(eng.stats().prefix_hits, 1);
}

TEST(EngineGenerate, RefusesWhatTheReferenceRefuses) {
  auto model = hybrid_fp64();
  engine::Engine eng(*model, fp64_options(8, 8, 1));
  GenerateOptions opts;
  EXPECT_THROW(generate(eng, nullptr, std::vector<int64_t>{}, opts), Error);
  EXPECT_THROW(generate(eng, nullptr, std::vector<int64_t>{101}, opts), Error);
  opts.stop_strings = {"x"};
  EXPECT_THROW(generate(eng, nullptr, std::vector<int64_t>{1}, opts), Error);  // no tokenizer to see text
  // Longer than the pools: the engine's error with the number of tokens that fit.
  engine::EngineOptions small = fp64_options(8, 8, 1);
  engine::EngineOptions probe = small;
  probe.memory_bytes = int64_t{1} << 30;  // planned only, for the unit sizes
  const engine::MemoryPlan unit = engine::CachePools::plan(*model, probe);
  small.memory_bytes = 4 * unit.bytes_per_page + unit.num_slots * unit.bytes_per_slot;  // 4 pages = 32 tokens
  engine::Engine tiny(*model, small);
  GenerateOptions many;
  many.max_new_tokens = tiny.memory_plan().max_tokens_per_sequence;
  try {
    generate(tiny, nullptr, std::vector<int64_t>{1, 2}, many);
    FAIL() << "a request over the pools was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(tiny.memory_plan().max_tokens_per_sequence)), std::string::npos)
        << e.what();
  }
}

// Both sides score fp32 logits (the LM head returns fp32 for any model dtype); the reference takes the log-softmax
// in fp32, the engine in fp64. So a per-token NLL may differ by the fp32 rounding of the reference: a few ulps of
// the value (4 x eps x |nll|); sums by the same bound over their terms.
void expect_same_perplexity(const eval::PerplexityResult& got, const eval::PerplexityResult& want) {
  const double ulps = 4 * std::numeric_limits<float>::epsilon();
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.predicted, want.predicted);
  EXPECT_EQ(got.windows, want.windows);
  ASSERT_EQ(got.nll.size(), want.nll.size());
  for (size_t i = 0; i < want.nll.size(); ++i)
    EXPECT_NEAR(got.nll[i], want.nll[i], ulps * std::abs(want.nll[i])) << "prediction " << i;
  EXPECT_NEAR(got.nll_sum, want.nll_sum, ulps * want.nll_sum);
  EXPECT_NEAR(got.nll_mean, want.nll_mean, ulps * want.nll_mean);
  EXPECT_EQ(got.bytes, want.bytes);
  EXPECT_EQ(got.bucket_count, want.bucket_count);
  ASSERT_EQ(got.bucket_nll_sum.size(), want.bucket_nll_sum.size());
  for (size_t b = 0; b < want.bucket_nll_sum.size(); ++b)
    EXPECT_NEAR(got.bucket_nll_sum[b], want.bucket_nll_sum[b], ulps * want.bucket_nll_sum[b]);
  EXPECT_NEAR(got.bits_per_byte, want.bits_per_byte, ulps * want.bits_per_byte);
}

TEST(EnginePerplexity, EqualsTheReferenceForNonOverlappingAndSlidingWindows) {
  auto model = hybrid_fp64(31);
  const std::vector<int64_t> ids = random_ids(203, 3);  // 203: the last window is short
  std::vector<int64_t> token_bytes(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) token_bytes[i] = 1 + static_cast<int64_t>(ids[i] % 4);
  for (int64_t stride : {int64_t{0}, int64_t{17}}) {
    eval::PerplexityOptions o;
    o.context = 48;
    o.stride = stride;
    o.per_token = true;
    o.bucket = 10;
    o.token_bytes = &token_bytes;
    const eval::PerplexityResult want = eval::perplexity(*model, ids, o);
    // Three sequences at once: the windows queue, run side by side and finish out of order.
    engine::Engine eng(*model, fp64_options(8, 16, 3));
    int64_t calls = 0, last = 0;
    const eval::PerplexityResult got = eval::perplexity(eng, ids, o, [&](int64_t done, int64_t total) {
      ++calls;
      last = done;
      EXPECT_EQ(total, want.windows);
    });
    SCOPED_TRACE("stride " + std::to_string(stride));
    expect_same_perplexity(got, want);
    EXPECT_GT(calls, 0);
    EXPECT_EQ(last, want.windows);
  }
}

TEST(EnginePerplexity, RefusesWhatTheReferenceRefuses) {
  auto model = hybrid_fp64();
  engine::Engine eng(*model, fp64_options(8, 16, 2));
  eval::PerplexityOptions o;
  o.context = 1;
  EXPECT_THROW(eval::perplexity(eng, random_ids(10, 1), o), Error);
  o.context = 8;
  EXPECT_THROW(eval::perplexity(eng, std::vector<int64_t>{3}, o), Error);
}

}  // namespace
}  // namespace hylo
