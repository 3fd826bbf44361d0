// The MLA rope slice: DeepSeek-V3 YaRN frequencies and mscale, pair order, rotation properties.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "hylo/core/result.h"
#include "hylo/ops/rope_yarn.h"
#include "mla_test_util.h"

namespace hylo {
namespace {

using ops::RopePairOrder;

RopeConfig yarn(double factor, int64_t original, double theta = 10000.0) {
  RopeConfig r;
  r.type = "yarn";
  r.theta = theta;
  r.factor = factor;
  r.original_max_position_embeddings = original;
  return r;
}

TEST(RopeYarn, FactorOneIsPlainRope) {
  RopeConfig plain;
  plain.theta = 500000.0;
  RopeConfig y = yarn(1.0, 2048, 500000.0);
  at::Tensor a = ops::mla_rope_inv_freq(plain, 32), b = ops::mla_rope_inv_freq(y, 32);  // [16]
  EXPECT_EQ(mla_test::max_abs_diff(a, b), 0.0);
  for (int64_t i = 0; i < 16; ++i)
    EXPECT_DOUBLE_EQ(a[i].item<double>(), std::pow(500000.0, -2.0 * static_cast<double>(i) / 32.0));
  EXPECT_EQ(ops::mla_rope_cos_sin_scale(y), 1.0);
}

TEST(RopeYarn, MscaleFollowsDeepSeek) {
  // HyLo Llama-64K: factor 32, mscale 1, mscale_all_dim 0 -> cos/sin scaled by 0.1 ln 32 + 1 (HYLO.md 2.3).
  RopeConfig r = yarn(32.0, 2048);
  EXPECT_NEAR(ops::mla_rope_cos_sin_scale(r), 0.1 * std::log(32.0) + 1.0, 1e-15);
  EXPECT_NEAR(ops::mla_rope_cos_sin_scale(r), 1.3465735902799727, 1e-15);
  // DeepSeek-V3 proper: mscale == mscale_all_dim -> ratio 1, and the softmax scale carries mscale^2 instead.
  r.mscale = 0.707;
  r.mscale_all_dim = 0.707;
  r.factor = 40.0;
  EXPECT_NEAR(ops::mla_rope_cos_sin_scale(r), 1.0, 1e-15);
  MlaSpec s;
  s.qk_nope_head_dim = 128;
  s.qk_rope_head_dim = 64;
  s.rope = r;
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(ops::mla_softmax_scale(s), m * m / std::sqrt(192.0), 1e-15);
  // Zebra/HyLo: mscale_all_dim 0 -> plain (nope+rope)^-1/2 whatever the factor.
  s.rope = yarn(32.0, 2048);
  EXPECT_NEAR(ops::mla_softmax_scale(s), 1.0 / std::sqrt(192.0), 1e-17);
  // An explicit attention_factor wins.
  r.attention_factor = 0.5;
  EXPECT_EQ(ops::mla_rope_cos_sin_scale(r), 0.5);
  EXPECT_EQ(ops::yarn_get_mscale(0.5, 1.0), 1.0);
}

TEST(RopeYarn, RampBetweenCorrectionDims) {
  // dim 64, base 1e4, original 4096: correction dims 64 ln(4096/(2 pi 32)) / (2 ln 1e4) = 10.47 -> floor 10 and
  // 64 ln(4096/(2 pi)) / (2 ln 1e4) = 22.51 -> ceil 23 (worked by hand). Below 10 the frequencies extrapolate
  // (unchanged), from 23 on they interpolate (divided by the factor), in between they blend linearly.
  RopeConfig r = yarn(8.0, 4096);
  at::Tensor inv = ops::mla_rope_inv_freq(r, 64);  // [32]
  for (int64_t i = 0; i < 32; ++i) {
    const double theta = std::pow(10000.0, -2.0 * static_cast<double>(i) / 64.0);
    const double ramp = std::clamp((static_cast<double>(i) - 10.0) / 13.0, 0.0, 1.0);
    const double want = theta / 8.0 * ramp + theta * (1.0 - ramp);
    EXPECT_NEAR(inv[i].item<double>(), want, 1e-15 * theta) << "i=" << i;
    if (i <= 10) EXPECT_DOUBLE_EQ(inv[i].item<double>(), theta);
    if (i >= 23) EXPECT_NEAR(inv[i].item<double>(), theta / 8.0, 1e-16 * theta);
  }
  // Without truncation the ramp runs between the unrounded dims 10.47 and 22.51, so index 10 is untouched
  // and index 11 already blends.
  r.truncate = false;
  at::Tensor untruncated = ops::mla_rope_inv_freq(r, 64);
  EXPECT_DOUBLE_EQ(untruncated[10].item<double>(), inv[10].item<double>());
  EXPECT_GT(untruncated[11].item<double>(), inv[11].item<double>());
}

TEST(RopeYarn, PairPermutation) {
  at::Tensor x = at::arange(8, at::TensorOptions().dtype(at::kDouble)).reshape({1, 8});
  at::Tensor p = ops::deepseek_pair_permute(x);
  const double want[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(p[0][i].item<double>(), want[i]);
}

// Rotates the stored pairs explicitly: DeepSeek pairs (2i, 2i+1) land at (i, i + d/2); half-split pairs are
// (i, i + d/2) in place. Both by angle pos * inv_freq_i, times the cos/sin scale.
TEST(RopeYarn, RotationMatchesExplicitPairs) {
  const int64_t d = 8, t = 3;
  RopeConfig r = yarn(4.0, 16);
  at::Tensor pos = at::tensor({0, 5, 1000}, at::TensorOptions().dtype(at::kLong));
  ops::RotaryTables tab = ops::mla_rope_tables(r, d, pos, at::kDouble, at::kCPU);
  at::Tensor inv = ops::mla_rope_inv_freq(r, d);
  const double scale = ops::mla_rope_cos_sin_scale(r);
  at::Tensor x = mla_test::randn({1, t, 2, d}, 11);  // [B, T, N, Dr]
  at::Tensor ds = ops::apply_mla_rope(x, tab, RopePairOrder::kDeepSeekPairs);
  at::Tensor hs = ops::apply_mla_rope(x, tab, RopePairOrder::kHalfSplit);
  for (int64_t ti = 0; ti < t; ++ti)
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < d / 2; ++i) {
        const double a = pos[ti].item<double>() * inv[i].item<double>();
        const double c = std::cos(a) * scale, s = std::sin(a) * scale;
        const double x0 = x[0][ti][n][2 * i].item<double>(), x1 = x[0][ti][n][2 * i + 1].item<double>();
        EXPECT_NEAR(ds[0][ti][n][i].item<double>(), x0 * c - x1 * s, 1e-13);
        EXPECT_NEAR(ds[0][ti][n][i + d / 2].item<double>(), x1 * c + x0 * s, 1e-13);
        const double h0 = x[0][ti][n][i].item<double>(), h1 = x[0][ti][n][i + d / 2].item<double>();
        EXPECT_NEAR(hs[0][ti][n][i].item<double>(), h0 * c - h1 * s, 1e-13);
        EXPECT_NEAR(hs[0][ti][n][i + d / 2].item<double>(), h1 * c + h0 * s, 1e-13);
      }
}

// q.k after rotation depends only on the position difference (times scale^2), for both orders -- the property
// that makes a cache of already-rotated k_pe valid.
TEST(RopeYarn, ScoresDependOnRelativePosition) {
  const int64_t d = 32;
  RopeConfig r = yarn(32.0, 2048, 500000.0);
  at::Tensor q = mla_test::randn({1, 1, 1, d}, 1), k = mla_test::randn({1, 1, 1, d}, 2);
  for (RopePairOrder order : {RopePairOrder::kDeepSeekPairs, RopePairOrder::kHalfSplit}) {
    auto score = [&](int64_t qm, int64_t kn) {
      at::TensorOptions o = at::TensorOptions().dtype(at::kLong);
      at::Tensor rq = ops::apply_mla_rope(q, ops::mla_rope_tables(r, d, at::tensor({qm}, o), at::kDouble, at::kCPU), order);
      at::Tensor rk = ops::apply_mla_rope(k, ops::mla_rope_tables(r, d, at::tensor({kn}, o), at::kDouble, at::kCPU), order);
      return (rq * rk).sum().item<double>();
    };
    const double base = score(7, 3);
    EXPECT_NEAR(score(100007, 100003), base, 1e-9 * std::abs(base) + 1e-9);
    const double m = ops::mla_rope_cos_sin_scale(r);
    EXPECT_NEAR(score(5, 5), m * m * (order == RopePairOrder::kDeepSeekPairs
                                          ? (ops::deepseek_pair_permute(q) * ops::deepseek_pair_permute(k)).sum()
                                          : (q * k).sum()).item<double>(), 1e-12);
  }
}

TEST(RopeYarn, Errors) {
  RopeConfig r = yarn(4.0, 0);
  EXPECT_THROW(ops::mla_rope_inv_freq(r, 8), Error);  // yarn without the original window
  r.type = "llama3";
  EXPECT_THROW(ops::mla_rope_inv_freq(r, 8), Error);  // not a DeepSeek/Zebra MLA rope
  EXPECT_THROW(ops::mla_rope_inv_freq(RopeConfig{}, 7), Error);  // odd width
}

}  // namespace
}  // namespace hylo
