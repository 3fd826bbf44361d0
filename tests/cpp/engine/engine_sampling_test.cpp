// The engine's token choice against hylo::Sampler (infer/sampler.h) on the very logits the engine used: requests
// with different sampling parameters share steps (two of them with equal parameters, so they are processed as one
// block), and every token each one got is what its own Sampler::next gives when replayed over the logits rows the
// engine kept (keep_logits). No rounding enters the comparison: the replay reads the same fp32 rows.
#include <gtest/gtest.h>

#include "hylo/infer/engine/engine.h"
#include "hylo/infer/sampler.h"
#include "engine_test_util.h"
#include "shared/tiny_models.h"

namespace hylo::engine {
namespace {

Request sampled_request(int64_t prompt_len, uint64_t seed, double temperature, int64_t top_k, double top_p,
                        double min_p, double repetition_penalty) {
  Request r;
  r.prompt = test::random_prompt(prompt_len, seed);
  r.max_new_tokens = 16;
  r.keep_logits = true;
  r.sampling.temperature = temperature;
  r.sampling.top_k = top_k;
  r.sampling.top_p = top_p;
  r.sampling.min_p = min_p;
  r.sampling.repetition_penalty = repetition_penalty;
  r.sampling.seed = seed * 7919 + 1;
  return r;
}

TEST(EngineSampling, EveryTokenIsWhatTheSequencesSamplerChoosesFromTheSameLogits) {
  // Plain random weights (not test::random_model's sharpened ones): flat distributions, so sampling matters.
  auto model = CausalLM::random(mixed_config(), 23);
  EngineOptions o;
  o.page_size = 4;
  o.prefill_chunk = 8;
  o.max_sequences = 8;
  o.memory_bytes = int64_t{64} << 20;
  o.cuda_graphs = false;
  Engine engine(*model, o);
  const std::vector<Request> requests = {
      sampled_request(5, 1, 1.0, 0, 0.9, 0.0, 1.0),   // these two share a block
      sampled_request(9, 2, 1.0, 0, 0.9, 0.0, 1.0),
      sampled_request(3, 3, 0.7, 12, 1.0, 0.0, 1.0),  // temperature and top-k
      sampled_request(7, 4, 1.2, 0, 1.0, 0.05, 1.0),  // min-p
      sampled_request(6, 5, 0.9, 0, 0.95, 0.0, 1.4),  // repetition penalty: Sampler::next itself
      sampled_request(4, 6, 0.0, 0, 1.0, 0.0, 1.0),   // greedy
  };
  std::vector<SeqId> ids;
  for (const Request& r : requests) ids.push_back(engine.submit(r));
  engine.run_until_done();
  int64_t not_argmax = 0;  // sampled tokens other than their row's argmax: the draws were not all trivial
  for (size_t k = 0; k < requests.size(); ++k) {
    const Request& r = requests[k];
    const SequenceResult& res = engine.result(ids[k]);
    ASSERT_EQ(res.output.size(), 16u) << "request " << k;
    const auto P = static_cast<int64_t>(r.prompt.size());
    ASSERT_EQ(res.logits.size(0), P + 15) << "request " << k;  // every position but the last generated token's
    Sampler replay(r.sampling);
    std::vector<int64_t> history = r.prompt;
    for (size_t j = 0; j < res.output.size(); ++j) {
      const int64_t expected = replay.next(res.logits[P - 1 + static_cast<int64_t>(j)], history);
      EXPECT_EQ(res.output[j], expected) << "request " << k << " token " << j;
      not_argmax += res.output[j] != res.logits[P - 1 + static_cast<int64_t>(j)].argmax().item<int64_t>();
      history.push_back(res.output[j]);
    }
  }
  EXPECT_GT(not_argmax, 10);
}

}  // namespace
}  // namespace hylo::engine
