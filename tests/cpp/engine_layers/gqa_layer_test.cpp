// The GQA engine layer (infer/engine/engine_layer_gqa.cpp) against the mixer's stateless forward, driven like the
// MLA layer (layer_driver.h): page sizes 1, 3 and 16, MHA / GQA / MQA heads, biases, Qwen3's q/k norms and a
// sliding window shorter than the sequences.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "../mla/mla_test_util.h"
#include "hylo/core/result.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/model/mixers/gqa.h"
#include "hylo/ops/paged_decode.h"
#include "layer_driver.h"

namespace hylo::engine {
namespace {

constexpr int64_t kHidden = 12;

std::vector<std::pair<std::string, GqaSpec>> variants() {
  GqaSpec gqa;
  gqa.num_heads = 4;
  gqa.num_kv_heads = 2;
  gqa.head_dim = 6;
  GqaSpec biased = gqa;
  biased.qkv_bias = biased.o_bias = true;
  biased.num_kv_heads = 4;
  GqaSpec qwen3 = gqa;
  qwen3.qk_norm = true;
  qwen3.num_kv_heads = 1;
  GqaSpec window = gqa;
  window.sliding_window = 5;
  return {{"gqa", gqa}, {"mha_bias", biased}, {"mqa_qk_norm", qwen3}, {"window5", window}};
}

std::unique_ptr<GqaMixer> make_mixer(const GqaSpec& spec, uint64_t seed, at::ScalarType dtype) {
  ModelConfig config;
  config.hidden_size = kHidden;
  config.rope.theta = 500.0;
  LayerSpec layer;
  layer.mixer = MixerKind::kGqa;
  layer.gqa = spec;
  config.layers.push_back(layer);
  auto m = std::make_unique<GqaMixer>(config, layer, at::TensorOptions().dtype(dtype));
  mla_test::fill_parameters(*m, seed);
  return m;
}

at::Tensor positions(int64_t t) { return at::arange(t, at::TensorOptions().dtype(at::kLong)); }

const std::vector<int64_t> kPrompts = {1, 5, 17, 3, 26};
const std::vector<int64_t> kTotals = {6, 12, 23, 3, 34};

std::vector<at::Tensor> inputs(uint64_t seed, at::ScalarType dtype) {
  std::vector<at::Tensor> xs;
  for (size_t i = 0; i < kTotals.size(); ++i) xs.push_back(mla_test::randn({1, kTotals[i], kHidden}, seed + i, dtype));
  return xs;
}

struct LayerRun {
  LayerCache cache;
  test::DriveResult result;
};

// Pages start as NaN, so a row read before it is written or a leaking padding row shows up.
LayerRun run_engine(GqaMixer& mixer, const std::vector<at::Tensor>& xs, int64_t page_size, uint64_t seed) {
  LayerRun run;
  int64_t num_pages = 2;
  for (int64_t t : kTotals) num_pages += (t + page_size - 1) / page_size;
  const GqaSpec& s = mixer.spec();
  run.cache.kind = MixerKind::kGqa;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  run.cache.k_pages = at::full({num_pages, page_size, s.num_kv_heads, s.head_dim}, nan, xs[0].options());
  run.cache.v_pages = at::full({num_pages, page_size, s.num_kv_heads, s.head_dim}, nan, xs[0].options());
  auto layer = make_gqa_layer(mixer, run.cache, page_size);
  run.result = test::drive_layer(*layer, xs, kPrompts, page_size, num_pages, /*max_chunk=*/7, seed);
  return run;
}

// fp64 weights and cache. The stateless forward's attention core (ops::causal_attention_reference) runs in fp32
// even for fp64 inputs, so the comparison carries fp32 rounding: the bound is derived as for fp32, from the fp32
// forward's own error against the fp64 one. The cached keys and values are checked against the mixer's projection.
TEST(GqaEngineLayer, MatchesStatelessForwardFp64) {
  for (auto& [name, spec] : variants()) {
    for (int64_t page_size : {1, 3, 16}) {
      const std::string what = name + " page_size " + std::to_string(page_size);
      auto m64 = make_mixer(spec, 3, at::kDouble);
      auto m32 = make_mixer(spec, 3, at::kFloat);
      std::vector<at::Tensor> xs = inputs(300, at::kDouble);
      LayerRun run = run_engine(*m64, xs, page_size, /*seed=*/page_size * 5 + 2);
      EXPECT_GT(run.result.mixed_steps, 0) << what;
      EXPECT_GT(run.result.multi_decode_steps, 0) << what;
      EXPECT_TRUE(run.result.noncontiguous_pages) << what;
      if (page_size > 1) EXPECT_GT(run.result.unaligned_chunks, 0) << what;
      for (size_t i = 0; i < xs.size(); ++i) {
        at::Tensor ref = m64->forward(xs[i], positions(kTotals[i]), nullptr);  // [1, T, D]
        const double base = mla_test::rel_rms(m32->forward(xs[i].to(at::kFloat), positions(kTotals[i]), nullptr), ref);
        const double err = mla_test::rel_rms(run.result.outputs[i], ref);
        EXPECT_LE(err, 4.0 * base + 8.0 * mla_test::kEps32) << what << " seq " << i << ": fp32 " << base
                                                            << ", engine " << err;
        at::Tensor table = at::tensor(run.result.pages[i], at::TensorOptions().dtype(at::kInt)).unsqueeze(0);
        GqaProjection pr = m64->project(xs[i], positions(kTotals[i]));
        at::Tensor k = ops::gather_paged_rows(run.cache.k_pages, table).narrow(1, 0, kTotals[i]);
        at::Tensor v = ops::gather_paged_rows(run.cache.v_pages, table).narrow(1, 0, kTotals[i]);
        EXPECT_LT(mla_test::max_abs_diff(k, pr.k), 1e5 * mla_test::kEps64) << what << " seq " << i;
        EXPECT_LT(mla_test::max_abs_diff(v, pr.v), 1e5 * mla_test::kEps64) << what << " seq " << i;
      }
    }
  }
}

TEST(GqaEngineLayer, Fp32WithinDerivedBound) {
  for (auto& [name, spec] : variants()) {
    auto m64 = make_mixer(spec, 7, at::kDouble);
    auto m32 = make_mixer(spec, 7, at::kFloat);
    std::vector<at::Tensor> xs = inputs(400, at::kDouble), xs32;
    for (const at::Tensor& x : xs) xs32.push_back(x.to(at::kFloat));
    LayerRun run = run_engine(*m32, xs32, /*page_size=*/3, /*seed=*/17);
    for (size_t i = 0; i < xs.size(); ++i) {
      at::Tensor ref = m64->forward(xs[i], positions(kTotals[i]), nullptr);
      const double base = mla_test::rel_rms(m32->forward(xs32[i], positions(kTotals[i]), nullptr), ref);
      const double err = mla_test::rel_rms(run.result.outputs[i], ref);
      EXPECT_LE(err, 4.0 * base + 8.0 * mla_test::kEps32) << name << " seq " << i << ": stateless " << base
                                                          << ", engine " << err;
    }
  }
}

// bf16 weights and KV pages: within a small multiple of the stateless bf16 forward's own error against fp64.
TEST(GqaEngineLayer, Bf16WithinDerivedBound) {
  for (auto& [name, spec] : variants()) {
    auto m64 = make_mixer(spec, 8, at::kDouble);
    auto m16 = make_mixer(spec, 8, at::kBFloat16);
    std::vector<at::Tensor> xs = inputs(500, at::kDouble), xs16;
    for (const at::Tensor& x : xs) xs16.push_back(x.to(at::kBFloat16));
    LayerRun run = run_engine(*m16, xs16, /*page_size=*/16, /*seed=*/29);
    for (size_t i = 0; i < xs.size(); ++i) {
      at::Tensor ref = m64->forward(xs[i], positions(kTotals[i]), nullptr);
      const double base = mla_test::rel_rms(m16->forward(xs16[i], positions(kTotals[i]), nullptr), ref);
      const double err = mla_test::rel_rms(run.result.outputs[i], ref);
      EXPECT_EQ(run.result.outputs[i].scalar_type(), at::kBFloat16);
      EXPECT_LE(err, 4.0 * base) << name << " seq " << i << ": stateless bf16 " << base << ", engine " << err;
    }
  }
}

TEST(GqaEngineLayer, RejectsMismatchedCaches) {
  GqaSpec spec = variants()[0].second;
  auto mixer = make_mixer(spec, 1, at::kDouble);
  LayerCache cache;
  cache.kind = MixerKind::kGqa;
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  cache.k_pages = at::zeros({4, 8, spec.num_kv_heads, spec.head_dim}, f64);
  EXPECT_THROW(make_gqa_layer(*mixer, cache, 8), Error);  // no v_pages
  cache.v_pages = at::zeros({4, 8, spec.num_kv_heads + 1, spec.head_dim}, f64);
  EXPECT_THROW(make_gqa_layer(*mixer, cache, 8), Error);  // v_pages of another shape
  cache.v_pages = at::zeros({4, 8, spec.num_kv_heads, spec.head_dim}, f64);
  EXPECT_THROW(make_gqa_layer(*mixer, cache, 4), Error);  // another page size
  EXPECT_NO_THROW(make_gqa_layer(*mixer, cache, 8));
  cache.kind = MixerKind::kMla;
  EXPECT_THROW(make_mla_layer(*mixer, cache, 8), Error);  // a GQA mixer is not an MLA mixer
}

}  // namespace
}  // namespace hylo::engine
