// The engine against full-forward recomputation (issue 9's acceptance, CPU): a hybrid with one layer of each mixer
// kind runs several requests through chunked prefill, continuous batching, preemption and prefix hits, and every
// logits row it produced equals a stateless forward over the same tokens, and every greedy token equals the argmax
// of that forward. fp64 shows the forms are the same function (rounding-level differences); fp32 shows the
// engine's error is of the same size as a plain forward's, both measured against fp64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "hylo/core/result.h"
#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/engine.h"
#include "engine_test_util.h"
#include "shared/tiny_models.h"

namespace hylo::engine {
namespace {

using test::full_logits;
using test::random_prompt;

// fp64 models keep their recurrent state in fp64 too (the pools default to fp32 state).
EngineOptions for_model(const CausalLM& model, EngineOptions o) {
  o.state_dtype = model.options().dtype().toScalarType() == at::kDouble ? at::kDouble : at::kFloat;
  return o;
}

std::unique_ptr<CausalLM> mixed_model(at::ScalarType dtype, uint64_t seed = 17) {
  return test::random_model(mixed_config(), dtype, seed);
}

EngineOptions small_options(int64_t page_size, int64_t chunk) {
  EngineOptions o;
  o.page_size = page_size;
  o.prefill_chunk = chunk;
  o.max_step_tokens = std::max<int64_t>(chunk, 16);
  o.max_sequences = 8;
  o.cuda_graphs = false;
  return o;
}

// Sets memory_bytes so that the pools hold `pages` pages (and every slot).
EngineOptions with_pages(CausalLM& model, EngineOptions o, int64_t pages) {
  o = for_model(model, o);
  o.memory_bytes = int64_t{1} << 40;  // only planned, never allocated
  const MemoryPlan p = CachePools::plan(model, o);
  o.memory_bytes = p.bytes_per_slot * p.num_slots + p.bytes_per_page * pages;
  return o;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / b.to(at::kDouble).abs().max()).item<double>();
}

void expect_greedy_consistent(const at::Tensor& full, int64_t prompt_len, const std::vector<int64_t>& output) {
  for (size_t i = 0; i < output.size(); ++i)
    EXPECT_EQ(full[prompt_len - 1 + static_cast<int64_t>(i)].argmax().item<int64_t>(), output[i]) << "token " << i;
}

// The log-probabilities reported with each generated token equal the full forward's (fp32 logits either way; the
// bound covers fp32 log-softmax rounding and is far below what a wrong state or position would change).
void expect_logprobs_match(const at::Tensor& full, int64_t prompt_len, const std::vector<int64_t>& output,
                           const std::vector<double>& logprobs) {
  ASSERT_EQ(output.size(), logprobs.size());
  at::Tensor lp = at::log_softmax(full, -1);
  for (size_t i = 0; i < output.size(); ++i)
    EXPECT_NEAR(logprobs[i], lp[prompt_len - 1 + static_cast<int64_t>(i)][output[i]].item<double>(), 1e-5)
        << "token " << i;
}

std::vector<double> collect_logprobs(std::vector<double>& into, const Event& e) {
  if (e.token >= 0) into.push_back(e.logprob);
  return into;
}

struct Case {
  int64_t page_size, chunk;
  bool bucketed = false;  // decode steps through DecodeGraphs' bucket buffers (the CUDA-graph path, run eagerly)
};

class EngineExactness : public ::testing::TestWithParam<Case> {};

// Five requests of different lengths, two of them arriving while the others run: mixed decode + prefill steps.
TEST_P(EngineExactness, EveryRowEqualsFullForward) {
  const Case c = GetParam();
  auto model = mixed_model(at::kDouble);
  EngineOptions o = small_options(c.page_size, c.chunk);
  o.bucketed_decode_on_cpu = c.bucketed;
  Engine engine(*model, with_pages(*model, o, 200));
  const std::vector<int64_t> lengths = {1, 7, 19, 33, 50};
  std::vector<SeqId> ids;
  std::vector<std::vector<int64_t>> prompts;
  auto submit = [&](size_t i) {
    Request r;
    r.prompt = random_prompt(lengths[i], 100 + i);
    r.max_new_tokens = 12 + static_cast<int64_t>(i);
    r.sampling.temperature = 0;
    r.keep_logits = true;
    r.prompt_logprobs = true;
    prompts.push_back(r.prompt);
    ids.push_back(engine.submit(std::move(r)));
  };
  for (size_t i = 0; i < 3; ++i) submit(i);
  for (int s = 0; s < 3; ++s) engine.step();
  submit(3);
  engine.step();
  submit(4);
  engine.run_until_done();
  for (size_t i = 0; i < ids.size(); ++i) {
    const SequenceResult& r = engine.result(ids[i]);
    ASSERT_EQ(r.finish, FinishReason::kLength);
    ASSERT_EQ(static_cast<int64_t>(r.output.size()), 12 + static_cast<int64_t>(i));
    at::Tensor full = full_logits(*model, prompts[i], r.output);
    ASSERT_EQ(r.logits.size(0), full.size(0)) << "request " << i;
    EXPECT_LT(max_rel_diff(r.logits, full), 1e-10) << "request " << i;
    expect_greedy_consistent(full, lengths[i], r.output);
    // Prompt log-probs: log_softmax of the same rows at the next prompt token.
    ASSERT_EQ(static_cast<int64_t>(r.prompt_logprobs.size()), lengths[i] - 1);
    at::Tensor lp = at::log_softmax(full, -1);
    for (int64_t p = 0; p + 1 < lengths[i]; ++p)
      EXPECT_NEAR(r.prompt_logprobs[static_cast<size_t>(p)], lp[p][prompts[i][static_cast<size_t>(p + 1)]].item<double>(), 1e-9);
  }
  EngineStats st = engine.stats();
  EXPECT_EQ(st.pages_used, 0);
  EXPECT_EQ(st.slots_used, 0);
}

INSTANTIATE_TEST_SUITE_P(ChunksAndPages, EngineExactness,
                         ::testing::Values(Case{1, 1}, Case{1, 5}, Case{3, 6}, Case{4, 8}, Case{16, 16}, Case{4, 64},
                                           Case{16, 2048}, Case{1, 5, true}, Case{4, 8, true}, Case{16, 2048, true}),
                         [](const auto& info) {
                           return "page" + std::to_string(info.param.page_size) + "_chunk" +
                                  std::to_string(info.param.chunk) + (info.param.bucketed ? "_bucketed" : "");
                         });

// Greedy decoding for 128 tokens: identical tokens to recomputing the whole sequence.
TEST(Engine, Greedy128TokensEqualFullRecomputation) {
  auto model = mixed_model(at::kDouble, 3);
  Engine engine(*model, with_pages(*model, small_options(4, 8), 100));
  Request r;
  r.prompt = random_prompt(21, 7);
  r.max_new_tokens = 128;
  r.sampling.temperature = 0;
  std::vector<double> logprobs;
  SequenceResult res = run_one(engine, r, [&](const Event& e) { collect_logprobs(logprobs, e); });
  ASSERT_EQ(res.output.size(), 128u);
  const at::Tensor full = full_logits(*model, r.prompt, res.output);
  expect_greedy_consistent(full, 21, res.output);
  expect_logprobs_match(full, 21, res.output, logprobs);
}

// Pages for fewer tokens than the requests need together: sequences are preempted and recomputed, and the rows
// they end with are still those of a full forward.
void preemption_keeps_results_exact(bool bucketed) {
  auto model = mixed_model(at::kDouble, 5);
  EngineOptions o = small_options(4, 8);
  o.bucketed_decode_on_cpu = bucketed;
  Engine engine(*model, with_pages(*model, o, 16 + (bucketed ? 1 : 0)));  // 64 tokens for four 40-token requests
  std::vector<SeqId> ids;
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    Request r;
    r.prompt = random_prompt(10 + 3 * i, 50 + i);
    r.max_new_tokens = 24;
    r.sampling.temperature = 0;
    r.keep_logits = true;
    prompts.push_back(r.prompt);
    ids.push_back(engine.submit(std::move(r)));
  }
  engine.run_until_done();
  EXPECT_GT(engine.stats().preemptions, 0);
  int64_t preempted = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const SequenceResult& r = engine.result(ids[i]);
    preempted += r.preemptions;
    at::Tensor full = full_logits(*model, prompts[i], r.output);
    EXPECT_LT(max_rel_diff(r.logits, full), 1e-10) << "request " << i;
    expect_greedy_consistent(full, static_cast<int64_t>(prompts[i].size()), r.output);
  }
  EXPECT_GT(preempted, 0);
}

TEST(Engine, PreemptionKeepsResultsExact) { preemption_keeps_results_exact(false); }
TEST(Engine, PreemptionKeepsResultsExactBucketed) { preemption_keeps_results_exact(true); }

// pool_bytes_needed sizes the pools to a known workload exactly: with that budget `sequences` sequences of T tokens
// fit at once (bucketed decode's scratch page and slot counted), and with one page's bytes less they do not.
void pool_bytes_needed_is_exact(bool bucketed) {
  auto model = mixed_model(at::kDouble, 4);
  EngineOptions o = for_model(*model, small_options(3, 8));
  o.bucketed_decode_on_cpu = bucketed;
  o.prefix_snapshots = 1;
  const int64_t tokens = 5 * o.page_size, sequences = 3;
  o.max_sequences = sequences;
  o.memory_bytes = pool_bytes_needed(*model, o, tokens, sequences);
  {
    Engine engine(*model, o);
    EXPECT_EQ(engine.memory_plan().pool_bytes, o.memory_bytes);
    EXPECT_EQ(engine.memory_plan().max_tokens_per_sequence, sequences * tokens);
    std::vector<SeqId> ids;
    for (int i = 0; i < sequences; ++i) {
      Request r;
      r.prompt = random_prompt(tokens - 1, 20 + i);
      r.max_new_tokens = 1;
      ids.push_back(engine.submit(std::move(r)));
    }
    engine.run_until_done();
    EXPECT_EQ(engine.stats().preemptions, 0);  // all three ran at once
    for (SeqId id : ids) EXPECT_EQ(engine.result(id).output.size(), 1u);
  }
  o.memory_bytes -= with_pages(*model, o, 1).memory_bytes - with_pages(*model, o, 0).memory_bytes;  // one page
  Engine smaller(*model, o);
  EXPECT_EQ(smaller.memory_plan().max_tokens_per_sequence, sequences * tokens - o.page_size);
}

TEST(Engine, PoolBytesNeededIsExact) { pool_bytes_needed_is_exact(false); }
TEST(Engine, PoolBytesNeededIsExactBucketed) { pool_bytes_needed_is_exact(true); }

// A second turn that repeats the first turn's tokens reuses its pages and recurrent-state snapshot: fewer tokens
// are computed and the answer is the same as without the cache.
TEST(Engine, PrefixHitReusesPagesAndState) {
  auto model = mixed_model(at::kDouble, 9);
  EngineOptions o = with_pages(*model, small_options(4, 8), 100);
  o.prefix_snapshots = 4;
  o = with_pages(*model, o, 100);
  Engine engine(*model, o);
  Request first;
  first.prompt = random_prompt(30, 1);
  first.max_new_tokens = 10;
  first.sampling.temperature = 0;
  SequenceResult a = run_one(engine, first);

  Request second;
  second.prompt = first.prompt;
  second.prompt.insert(second.prompt.end(), a.output.begin(), a.output.end());
  const auto more = random_prompt(9, 2);
  second.prompt.insert(second.prompt.end(), more.begin(), more.end());
  second.max_new_tokens = 16;
  second.sampling.temperature = 0;
  std::vector<double> logprobs;
  SequenceResult b = run_one(engine, second, [&](const Event& e) { collect_logprobs(logprobs, e); });
  EngineStats st = engine.stats();
  EXPECT_GE(st.prefix_hits, 1);
  EXPECT_GE(b.cached_prompt_tokens, 36);  // the first turn's 40 tokens end on a page boundary at 36 or 40
  EXPECT_EQ(b.cached_prompt_tokens % 4, 0);
  const at::Tensor full = full_logits(*model, second.prompt, b.output);
  const auto n = static_cast<int64_t>(second.prompt.size());
  expect_greedy_consistent(full, n, b.output);
  expect_logprobs_match(full, n, b.output, logprobs);

  // The same second request in an engine without the cache gives the same tokens.
  EngineOptions cold = o;
  cold.prefix_snapshots = 0;
  Engine fresh(*model, cold);
  EXPECT_EQ(run_one(fresh, second).output, b.output);
}

TEST(Engine, CancelEndsTheSequenceAndFreesItsMemory) {
  auto model = mixed_model(at::kFloat, 4);
  Engine engine(*model, with_pages(*model, small_options(4, 8), 100));
  Request r;
  r.prompt = random_prompt(12, 3);
  r.max_new_tokens = 50;
  const SeqId keep = engine.submit(r);
  const SeqId drop = engine.submit(r);
  for (int i = 0; i < 5; ++i) engine.step();
  engine.cancel(drop);
  engine.run_until_done();
  EXPECT_EQ(engine.result(drop).finish, FinishReason::kCancelled);
  EXPECT_LT(engine.result(drop).output.size(), 50u);
  EXPECT_EQ(engine.result(keep).output.size(), 50u);
  EXPECT_EQ(engine.stats().pages_used, 0);
  EXPECT_EQ(engine.stats().slots_used, 0);
}

// max_sequences is the most sequences running at once for a model without recurrent layers too (its pages would
// allow more), and the requests beyond it wait and still get their tokens.
TEST(Engine, MaxSequencesBoundsTheRunningSetOfATransformer) {
  ModelConfig c = mixed_config();
  for (auto& layer : c.layers) layer.mixer = MixerKind::kGqa;
  c.layers[1].mla = {};
  auto model = test::random_model(c, at::kFloat, 8);
  EngineOptions o = with_pages(*model, small_options(4, 8), 200);
  o.max_sequences = 2;
  Engine engine(*model, o);
  Request r;
  r.prompt = random_prompt(6, 5);
  r.max_new_tokens = 6;
  std::vector<SeqId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(engine.submit(r));
  int64_t most = 0;
  while (engine.stats().running + engine.stats().waiting > 0) {
    engine.step();
    most = std::max(most, engine.stats().running);
  }
  EXPECT_EQ(most, 2);
  for (SeqId id : ids) EXPECT_EQ(engine.result(id).output.size(), 6u);
}

// Sampling depends only on the sequence's own parameters and seed, not on what else shares its steps.
TEST(Engine, SamplingIsIndependentOfBatchComposition) {
  auto model = mixed_model(at::kDouble, 8);
  Engine engine(*model, with_pages(*model, small_options(4, 8), 200));
  Request r;
  r.prompt = random_prompt(9, 4);
  r.max_new_tokens = 20;
  r.sampling.temperature = 0.9;
  r.sampling.top_p = 0.9;
  r.sampling.seed = 1234;
  const auto alone = run_one(engine, r).output;
  Request other = r;
  other.prompt = random_prompt(23, 5);
  other.sampling.seed = 99;
  const SeqId o1 = engine.submit(other);
  const SeqId mine = engine.submit(r);
  const SeqId o2 = engine.submit(other);
  engine.run_until_done();
  EXPECT_EQ(engine.result(mine).output, alone);
  (void)o1;
  (void)o2;
}

TEST(Engine, RequestLargerThanMemoryIsRefusedWithTheNumberThatFits) {
  auto model = mixed_model(at::kFloat);
  Engine engine(*model, with_pages(*model, small_options(4, 8), 10));  // 40 tokens
  Request r;
  r.prompt = random_prompt(30, 1);
  r.max_new_tokens = 20;
  try {
    engine.submit(r);
    FAIL() << "a 50-token request was accepted by a 40-token engine";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("50"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at most 40 tokens"), std::string::npos) << msg;
  }
  EXPECT_FALSE(engine.has_work());
  r.max_new_tokens = 10;
  EXPECT_EQ(run_one(engine, r).output.size(), 10u);
}

TEST(Engine, MalformedRequestsAreRefused) {
  auto model = mixed_model(at::kFloat);
  Engine engine(*model, with_pages(*model, small_options(4, 8), 10));
  Request empty;
  EXPECT_THROW(engine.submit(empty), Error);
  Request bad_id;
  bad_id.prompt = {1, 2, 101};
  EXPECT_THROW(engine.submit(bad_id), Error);
  Request bad_p;
  bad_p.prompt = {1};
  bad_p.sampling.top_p = 0;
  EXPECT_THROW(engine.submit(bad_p), Error);
  EXPECT_FALSE(engine.has_work());
}

// fp32: the engine's deviation from the fp64 forward is no larger than a plain fp32 forward's (a small multiple).
TEST(Engine, Fp32ErrorIsThatOfAPlainForward) {
  auto m64 = mixed_model(at::kDouble, 12);
  auto m32 = mixed_model(at::kFloat, 12);
  Engine engine(*m32, with_pages(*m32, small_options(4, 8), 100));
  Request r;
  r.prompt = random_prompt(40, 6);
  r.max_new_tokens = 8;
  r.sampling.temperature = 0;
  r.keep_logits = true;
  SequenceResult res = run_one(engine, r);
  at::Tensor ref = full_logits(*m64, r.prompt, res.output);
  at::Tensor plain = full_logits(*m32, r.prompt, res.output);
  const double plain_err = max_rel_diff(plain, ref);
  EXPECT_LE(max_rel_diff(res.logits, ref), 4 * plain_err + 1e-6);
}

}  // namespace
}  // namespace hylo::engine
