// The MLA engine layer (infer/engine/engine_layer_mla.cpp) against the mixer's stateless forward: several sequences
// driven through a paged latent cache with random chunkings, decode steps and mixed batches (layer_driver.h), for
// page sizes 1, 3 and 16, in fp64 (rounding only) and fp32 (a bound derived from the fp32 forward's own error).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "../mla/mla_test_util.h"
#include "hylo/core/result.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/model/mixers/mla.h"
#include "hylo/ops/paged_decode.h"
#include "layer_driver.h"

namespace hylo::engine {
namespace {

constexpr int64_t kHidden = 8;
// fp64: the engine and the stateless forward are the same math in different orders (decode absorbed, prefill over
// different key counts), so they differ by rounding, ~1e-15 here; any indexing mistake is O(1).
constexpr double kFp64Bound = 1e5 * mla_test::kEps64;

std::vector<std::pair<std::string, MlaSpec>> variants() {
  MlaSpec hylo = mla_test::tiny_spec();
  MlaSpec deepseek = hylo;
  deepseek.num_kv_groups = deepseek.num_heads;
  deepseek.latent_norms = true;
  deepseek.rope.mscale = 0.8;
  deepseek.rope.mscale_all_dim = 0.6;
  MlaSpec full_q = hylo;
  full_q.q_lora_rank = 0;
  full_q.bias = true;
  full_q.num_kv_groups = 1;
  return {{"hylo", hylo}, {"deepseek", deepseek}, {"full_q_bias", full_q}};
}

std::unique_ptr<MlaMixer> make_mixer(const MlaSpec& spec, uint64_t seed, at::ScalarType dtype) {
  ModelConfig config = mla_test::config_with(kHidden, spec);
  auto m = std::make_unique<MlaMixer>(config, config.layers[0], at::TensorOptions().dtype(dtype));
  mla_test::fill_parameters(*m, seed);
  return m;
}

at::Tensor positions(int64_t t) { return at::arange(t, at::TensorOptions().dtype(at::kLong)); }

// Prompts and total lengths: a one-token prompt, prompts shorter and longer than a page of 16, one sequence
// without decode steps.
const std::vector<int64_t> kPrompts = {1, 5, 17, 3, 26};
const std::vector<int64_t> kTotals = {6, 12, 23, 3, 34};

struct LayerRun {
  LayerCache cache;
  test::DriveResult result;
};

// Pages start as NaN: a row read before it is written, or a padding row that leaks into a result, shows up.
LayerRun run_engine(MlaMixer& mixer, const std::vector<at::Tensor>& xs, int64_t page_size, uint64_t seed) {
  LayerRun run;
  int64_t num_pages = 2;
  for (int64_t t : kTotals) num_pages += (t + page_size - 1) / page_size;
  run.cache.kind = MixerKind::kMla;
  run.cache.pages = at::full({num_pages, page_size, mixer.spec().cache_width()},
                             std::numeric_limits<double>::quiet_NaN(), xs[0].options());
  auto layer = make_mla_layer(mixer, run.cache, page_size);
  run.result = test::drive_layer(*layer, xs, kPrompts, page_size, num_pages, /*max_chunk=*/7, seed);
  return run;
}

std::vector<at::Tensor> inputs(uint64_t seed, at::ScalarType dtype) {
  std::vector<at::Tensor> xs;
  for (size_t i = 0; i < kTotals.size(); ++i) xs.push_back(mla_test::randn({1, kTotals[i], kHidden}, seed + i, dtype));
  return xs;
}

TEST(MlaEngineLayer, MatchesStatelessForwardFp64) {
  for (auto& [name, spec] : variants()) {
    for (int64_t page_size : {1, 3, 16}) {
      const std::string what = name + " page_size " + std::to_string(page_size);
      auto mixer = make_mixer(spec, 3, at::kDouble);
      std::vector<at::Tensor> xs = inputs(100, at::kDouble);
      LayerRun run = run_engine(*mixer, xs, page_size, /*seed=*/page_size * 7 + 1);
      EXPECT_GT(run.result.mixed_steps, 0) << what;
      EXPECT_GT(run.result.multi_decode_steps, 0) << what;
      EXPECT_TRUE(run.result.noncontiguous_pages) << what;
      if (page_size > 1) EXPECT_GT(run.result.unaligned_chunks, 0) << what;
      double worst = 0;
      for (size_t i = 0; i < xs.size(); ++i) {
        at::Tensor ref = mixer->forward(xs[i], positions(kTotals[i]), nullptr);  // [1, T, D]
        // Per token: |engine - forward| relative to the token's output norm.
        at::Tensor err = (run.result.outputs[i] - ref).norm(2, {2}) / ref.norm(2, {2});
        worst = std::max(worst, err.max().item<double>());
        // The cache holds exactly the mixer's entries for every token, in page-table order.
        at::Tensor table = at::tensor(run.result.pages[i], at::TensorOptions().dtype(at::kInt)).unsqueeze(0);
        at::Tensor cached = ops::gather_paged_rows(run.cache.pages, table).narrow(1, 0, kTotals[i]);
        at::Tensor entry = mixer->project(xs[i], positions(kTotals[i])).entry;
        EXPECT_LT(mla_test::max_abs_diff(cached, entry), kFp64Bound) << what << " seq " << i;
      }
      EXPECT_LT(worst, kFp64Bound) << what;
      RecordProperty(name + "_ps" + std::to_string(page_size) + "_fp64_max_rel", mla_test::sci(worst));
    }
  }
}

// fp32 weights and cache: within a small multiple of the stateless fp32 forward's own error against fp64.
TEST(MlaEngineLayer, Fp32WithinDerivedBound) {
  for (auto& [name, spec] : variants()) {
    for (int64_t page_size : {3, 16}) {
      auto m64 = make_mixer(spec, 5, at::kDouble);
      auto m32 = make_mixer(spec, 5, at::kFloat);
      std::vector<at::Tensor> xs = inputs(200, at::kDouble), xs32;
      for (const at::Tensor& x : xs) xs32.push_back(x.to(at::kFloat));
      LayerRun run = run_engine(*m32, xs32, page_size, /*seed=*/page_size + 11);
      for (size_t i = 0; i < xs.size(); ++i) {
        at::Tensor ref = m64->forward(xs[i], positions(kTotals[i]), nullptr);
        const double base = mla_test::rel_rms(m32->forward(xs32[i], positions(kTotals[i]), nullptr), ref);
        const double err = mla_test::rel_rms(run.result.outputs[i], ref);
        EXPECT_EQ(run.result.outputs[i].scalar_type(), at::kFloat);
        EXPECT_LE(err, 4.0 * base + 8.0 * mla_test::kEps32)
            << name << " page_size " << page_size << " seq " << i << ": stateless fp32 " << base << ", engine " << err;
      }
    }
  }
}

// bf16 weights and a bf16 latent cache (the serving path): within a small multiple of the stateless bf16 forward's
// own error against fp64.
TEST(MlaEngineLayer, Bf16WithinDerivedBound) {
  for (auto& [name, spec] : variants()) {
    auto m64 = make_mixer(spec, 6, at::kDouble);
    auto m16 = make_mixer(spec, 6, at::kBFloat16);
    std::vector<at::Tensor> xs = inputs(250, at::kDouble), xs16;
    for (const at::Tensor& x : xs) xs16.push_back(x.to(at::kBFloat16));
    LayerRun run = run_engine(*m16, xs16, /*page_size=*/3, /*seed=*/23);
    for (size_t i = 0; i < xs.size(); ++i) {
      at::Tensor ref = m64->forward(xs[i], positions(kTotals[i]), nullptr);
      const double base = mla_test::rel_rms(m16->forward(xs16[i], positions(kTotals[i]), nullptr), ref);
      const double err = mla_test::rel_rms(run.result.outputs[i], ref);
      EXPECT_EQ(run.result.outputs[i].scalar_type(), at::kBFloat16);
      EXPECT_LE(err, 4.0 * base) << name << " seq " << i << ": stateless bf16 " << base << ", engine " << err;
    }
  }
}

// Bad input is a hylo::Error naming what was expected, before anything is written.
TEST(MlaEngineLayer, RejectsMismatchedCachesAndBatches) {
  MlaSpec spec = mla_test::tiny_spec();
  auto mixer = make_mixer(spec, 1, at::kDouble);
  const int64_t page_size = 4;
  LayerCache cache;
  cache.kind = MixerKind::kMla;
  cache.pages = at::zeros({6, page_size, spec.cache_width() + 1}, at::TensorOptions().dtype(at::kDouble));
  EXPECT_THROW(make_mla_layer(*mixer, cache, page_size), Error);  // wrong width
  cache.pages = at::zeros({6, page_size, spec.cache_width()}, at::TensorOptions().dtype(at::kDouble));
  EXPECT_THROW(make_mla_layer(*mixer, cache, page_size + 1), Error);  // wrong page size
  auto layer = make_mla_layer(*mixer, cache, page_size);

  at::Tensor x = mla_test::randn({1, 6, kHidden}, 9);
  SeqChunk a{0, 1, 4, 0, {2, 3}};   // decode: 5 tokens over 2 pages
  SeqChunk b{0, 5, 0, 1, {1, 5}};   // prefill of 5 tokens
  StepBatch ok = test::make_step_batch({a, b}, 1, page_size);
  EXPECT_EQ(layer->forward(x, ok).sizes(), (std::vector<int64_t>{1, 6, kHidden}));

  StepBatch wrong_tokens = ok;
  EXPECT_THROW(layer->forward(x.narrow(1, 0, 5), wrong_tokens), Error);
  StepBatch two_decode_tokens = test::make_step_batch({b, a}, 1, page_size);  // entry 0 has 5 tokens
  EXPECT_THROW(layer->forward(x, two_decode_tokens), Error);
  StepBatch short_table = ok;
  short_table.seqs[1].pages = {1};  // 5 tokens need 2 pages
  EXPECT_THROW(layer->forward(x, short_table), Error);
  StepBatch other_page_size = ok;
  other_page_size.page_size = 8;
  EXPECT_THROW(layer->forward(x, other_page_size), Error);

  LayerCache gqa_cache;
  gqa_cache.kind = MixerKind::kGqa;
  EXPECT_THROW(make_gqa_layer(*mixer, gqa_cache, page_size), Error);  // an MLA mixer is not a GQA mixer
}

}  // namespace
}  // namespace hylo::engine
