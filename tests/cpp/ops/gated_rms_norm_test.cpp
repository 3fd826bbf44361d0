// gated_rms_norm against the formula written out per group in fp64, for both gate orders, shared [G] and
// per-channel [N] weights; fp32/bf16 outputs within a bound derived from the dtype's rounding.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "hylo/ops/gated_rms_norm.h"

namespace hylo {
namespace {

// Explicit loops: for each row r and group g, u = x (or x*silu(z)) over the group, y = u/sqrt(mean(u^2)+eps)*w
// (times silu(z) when the norm comes first).
at::Tensor reference(const at::Tensor& x, const at::Tensor& z, const at::Tensor& w, double eps, bool norm_first,
                     int64_t G) {
  const int64_t N = x.size(-1);
  at::Tensor xd = x.to(at::kDouble).reshape({-1, N}).contiguous();
  at::Tensor zd = z.to(at::kDouble).reshape({-1, N}).contiguous();
  at::Tensor wd = w.to(at::kDouble).contiguous();
  at::Tensor y = at::empty_like(xd);
  auto xa = xd.accessor<double, 2>();
  auto za = zd.accessor<double, 2>();
  auto wa = wd.accessor<double, 1>();
  auto ya = y.accessor<double, 2>();
  auto silu = [](double v) { return v / (1.0 + std::exp(-v)); };
  for (int64_t r = 0; r < xd.size(0); ++r)
    for (int64_t g0 = 0; g0 < N; g0 += G) {
      double ss = 0;
      for (int64_t i = g0; i < g0 + G; ++i) {
        const double u = norm_first ? xa[r][i] : xa[r][i] * silu(za[r][i]);
        ss += u * u;
      }
      const double inv = 1.0 / std::sqrt(ss / G + eps);
      for (int64_t i = g0; i < g0 + G; ++i) {
        const double wi = w.size(0) == N ? wa[i] : wa[i - g0];
        ya[r][i] = norm_first ? xa[r][i] * inv * wi * silu(za[r][i]) : xa[r][i] * silu(za[r][i]) * inv * wi;
      }
    }
  return y.reshape(x.sizes());
}

TEST(GatedRmsNorm, MatchesFormulaInFp64) {
  at::manual_seed(1);
  const double eps = 1e-5;
  for (bool norm_first : {true, false}) {
    // GDN style: weight [G] shared by H heads laid out along the last dim.
    at::Tensor x = at::randn({2, 3, 4 * 8}, at::kDouble);
    at::Tensor z = at::randn({2, 3, 4 * 8}, at::kDouble);
    at::Tensor w = at::randn({8}, at::kDouble);
    EXPECT_LT((gated_rms_norm(x, z, w, eps, norm_first) - reference(x, z, w, eps, norm_first, 8)).abs().max()
                  .item<double>(),
              1e-13);
    // Mamba2 style: weight [N] per channel, group width given explicitly.
    at::Tensor wn = at::randn({32}, at::kDouble);
    EXPECT_LT((gated_rms_norm(x, z, wn, eps, norm_first, 16) - reference(x, z, wn, eps, norm_first, 16)).abs().max()
                  .item<double>(),
              1e-13);
    // One group spanning everything; a tiny-magnitude input where eps matters.
    at::Tensor xs = 1e-3 * at::randn({5, 12}, at::kDouble);
    at::Tensor zs = at::randn({5, 12}, at::kDouble);
    at::Tensor ws = at::randn({12}, at::kDouble);
    EXPECT_LT((gated_rms_norm(xs, zs, ws, eps, norm_first) - reference(xs, zs, ws, eps, norm_first, 12)).abs().max()
                  .item<double>(),
              1e-13);
  }
}

TEST(GatedRmsNorm, LowPrecisionWithinDerivedBound) {
  at::manual_seed(2);
  const int64_t G = 64;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    for (bool norm_first : {true, false}) {
      at::Tensor x = at::randn({4, 2 * G}).to(dt);
      at::Tensor z = at::randn({4, 2 * G}).to(dt);
      at::Tensor w = (1.0 + 0.1 * at::randn({G})).to(dt);
      at::Tensor y = gated_rms_norm(x, z, w, 1e-6, norm_first);
      ASSERT_EQ(y.scalar_type(), dt);
      at::Tensor ref = reference(x, z, w, 1e-6, norm_first, G);  // fp64 on the same rounded inputs
      // fp32 arithmetic: a sum of G squares (G*u32 relative), rsqrt, silu and a few products (~10 u32) relative
      // to the magnitude |y|; then one rounding to the output dtype (u_dt * |y|).
      const double u32 = std::ldexp(1.0, -24);
      const double u_dt = dt == at::kFloat ? u32 : std::ldexp(1.0, -8);
      const double rel = (G + 10) * u32 + u_dt;
      at::Tensor excess = (y.to(at::kDouble) - ref).abs() - rel * ref.abs() - 1e-30;
      EXPECT_LE(excess.max().item<double>(), 0.0) << at::toString(dt) << " norm_first=" << norm_first;
    }
  }
}

TEST(GatedRmsNorm, RejectsMismatchedShapes) {
  at::Tensor x = at::randn({2, 12});
  EXPECT_ANY_THROW(gated_rms_norm(x, at::randn({2, 11}), at::ones({12}), 1e-6, true));
  EXPECT_ANY_THROW(gated_rms_norm(x, x, at::ones({5}), 1e-6, true));        // 5 does not divide 12
  EXPECT_ANY_THROW(gated_rms_norm(x, x, at::ones({6}), 1e-6, true, 4));     // weight neither [4] nor [12]
}

}  // namespace
}  // namespace hylo
