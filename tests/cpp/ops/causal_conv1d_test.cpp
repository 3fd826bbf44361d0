// causal_conv1d against an explicit per-element loop, and the state threading that chunked prefill and decode
// rely on: running a sequence in pieces (down to one token) must give the same outputs and final state.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "hylo/ops/causal_conv1d.h"

namespace hylo {
namespace {

// The definition, written as loops in fp64: y[b,t,c] = bias[c] + sum_k w[c,k] * x[b, t-(K-1)+k, c], where
// indices before 0 read the state (index j<0 -> state[b, c, K-1+j]).
at::Tensor conv_loop(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& state,
                     bool silu) {
  at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(1);
  at::Tensor y = at::zeros({B, T, C}, at::kDouble);
  auto xa = xd.accessor<double, 3>();
  auto wa = wd.accessor<double, 2>();
  auto ya = y.accessor<double, 3>();
  at::Tensor sd = state.defined() ? state.to(at::kDouble) : at::zeros({B, C, K - 1}, at::kDouble);
  auto sa = sd.accessor<double, 3>();
  at::Tensor bd = bias.defined() ? bias.to(at::kDouble) : at::zeros({C}, at::kDouble);
  auto ba = bd.accessor<double, 1>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double acc = ba[c];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t j = t - (K - 1) + k;
          acc += wa[c][k] * (j >= 0 ? xa[b][j][c] : sa[b][c][K - 1 + j]);
        }
        ya[b][t][c] = silu ? acc / (1.0 + std::exp(-acc)) : acc;
      }
  return y;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(CausalConv1d, MatchesLoopInFp64) {
  at::manual_seed(1);
  for (int64_t K : {1, 2, 4}) {
    for (int64_t T : {1, 2, 3, 7}) {
      for (bool with_bias : {false, true}) {
        for (bool with_state : {false, true}) {
          const int64_t B = 2, C = 5;
          at::Tensor x = at::randn({B, T, C}, at::kDouble);
          at::Tensor w = at::randn({C, K}, at::kDouble);
          at::Tensor bias = with_bias ? at::randn({C}, at::kDouble) : at::Tensor();
          at::Tensor state = with_state ? at::randn({B, C, K - 1}, at::kDouble) : at::Tensor();
          for (bool silu : {false, true}) {
            auto [y, s] = causal_conv1d(x, w, bias, state, silu);
            ASSERT_EQ(y.sizes(), x.sizes());
            ASSERT_EQ(s.sizes(), (at::IntArrayRef{B, C, K - 1}));
            EXPECT_LT(max_abs_diff(y, conv_loop(x, w, bias, state, silu)), 1e-12)
                << "K=" << K << " T=" << T << " bias=" << with_bias << " state=" << with_state;
          }
        }
      }
    }
  }
}

TEST(CausalConv1d, NewStateHoldsLastInputsIncludingOldState) {
  const int64_t B = 1, C = 2, K = 4;
  at::Tensor state = at::arange(B * C * (K - 1), at::kDouble).reshape({B, C, K - 1});  // [B, C, K-1]
  at::Tensor x = 100.0 + at::arange(B * 1 * C, at::kDouble).reshape({B, 1, C});       // [B, 1, C]
  at::Tensor w = at::ones({C, K}, at::kDouble);
  auto [y, s] = causal_conv1d(x, w, at::Tensor(), state, false);
  // One new token: the oldest state column drops out, the new input enters at the end.
  at::Tensor expected = at::cat({state.narrow(2, 1, K - 2), x.transpose(1, 2)}, 2);
  EXPECT_EQ(max_abs_diff(s, expected), 0.0);
  // A long input: the state is simply the last K-1 inputs.
  at::Tensor xl = at::randn({B, 9, C}, at::kDouble);
  auto [yl, sl] = causal_conv1d(xl, w, at::Tensor(), state, false);
  EXPECT_EQ(max_abs_diff(sl, xl.narrow(1, 9 - (K - 1), K - 1).transpose(1, 2)), 0.0);
}

TEST(CausalConv1d, PiecesAndSingleStepsEqualOneCall) {
  at::manual_seed(2);
  const int64_t B = 2, T = 13, C = 6, K = 4;
  at::Tensor x = at::randn({B, T, C}, at::kDouble);
  at::Tensor w = at::randn({C, K}, at::kDouble);
  at::Tensor bias = at::randn({C}, at::kDouble);
  auto [y_full, s_full] = causal_conv1d(x, w, bias, at::Tensor(), true);
  // Pieces of lengths 1, 2 (< K-1), 3, 1, 6: each continues from the previous state.
  std::vector<int64_t> lengths = {1, 2, 3, 1, 6};
  at::Tensor state;
  std::vector<at::Tensor> outs;
  int64_t t0 = 0;
  for (int64_t len : lengths) {
    auto [y, s] = causal_conv1d(x.narrow(1, t0, len), w, bias, state, true);
    outs.push_back(y);
    state = s;
    t0 += len;
  }
  ASSERT_EQ(t0, T);
  EXPECT_LT(max_abs_diff(at::cat(outs, 1), y_full), 1e-13);
  EXPECT_EQ(max_abs_diff(state, s_full), 0.0);
}

// fp32 and bf16 inputs: the error against the fp64 loop on the same (rounded) inputs is bounded by the
// accumulation rounding of K+1 fp32 terms plus the final rounding to the working dtype.
TEST(CausalConv1d, LowPrecisionWithinDerivedBound) {
  at::manual_seed(3);
  const int64_t B = 2, T = 33, C = 16, K = 4;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    at::Tensor x = at::randn({B, T, C}).to(dt);
    at::Tensor w = at::randn({C, K}).to(dt);
    at::Tensor bias = at::randn({C}).to(dt);
    auto [y, s] = causal_conv1d(x, w, bias, at::Tensor(), false);
    EXPECT_EQ(y.scalar_type(), dt);
    at::Tensor ref = conv_loop(x, w, bias, at::Tensor(), false);  // [B, T, C] fp64 on the rounded inputs
    // |sum| <= sum of |terms|: accumulated rounding <= (K+1) * u32 * sum|terms|; output rounding <= u_dt * |y|.
    at::Tensor mag = conv_loop(x.abs(), w.abs(), bias.abs(), at::Tensor(), false);
    const double u32 = std::ldexp(1.0, -24);
    const double u_dt = dt == at::kFloat ? u32 : std::ldexp(1.0, -8);
    at::Tensor bound = (K + 2) * u32 * mag + u_dt * ref.abs();
    at::Tensor excess = (y.to(at::kDouble) - ref).abs() - bound;
    EXPECT_LE(excess.max().item<double>(), 0.0) << "dtype " << at::toString(dt);
  }
}

TEST(CausalConv1d, GradientsFlowToInputsWeightsBiasAndState) {
  at::manual_seed(4);
  const int64_t B = 1, T = 3, C = 2, K = 4;
  at::Tensor x = at::randn({B, T, C}, at::kDouble).requires_grad_();
  at::Tensor w = at::randn({C, K}, at::kDouble).requires_grad_();
  at::Tensor bias = at::randn({C}, at::kDouble).requires_grad_();
  at::Tensor state = at::randn({B, C, K - 1}, at::kDouble).requires_grad_();
  auto [y, s] = causal_conv1d(x, w, bias, state, true);
  at::Tensor up = at::randn({B, T, C}, at::kDouble);
  (y * up).sum().backward();
  // Finite differences on every element of every input.
  auto loss = [&](const at::Tensor& xx, const at::Tensor& ww, const at::Tensor& bb, const at::Tensor& ss) {
    return (causal_conv1d(xx, ww, bb, ss, true).first * up).sum().item<double>();
  };
  const double h = 1e-6;
  std::vector<at::Tensor> leaves = {x, w, bias, state};
  for (size_t i = 0; i < leaves.size(); ++i) {
    at::Tensor base = leaves[i].detach();
    at::Tensor flat = base.reshape(-1);
    for (int64_t e = 0; e < flat.numel(); ++e) {
      std::vector<at::Tensor> plus, minus;
      for (size_t j = 0; j < leaves.size(); ++j) {
        plus.push_back(leaves[j].detach().clone());
        minus.push_back(leaves[j].detach().clone());
      }
      plus[i].view(-1)[e] += h;
      minus[i].view(-1)[e] -= h;
      const double fd = (loss(plus[0], plus[1], plus[2], plus[3]) - loss(minus[0], minus[1], minus[2], minus[3])) /
                        (2 * h);
      const double g = leaves[i].grad().reshape(-1)[e].item<double>();
      EXPECT_NEAR(g, fd, 1e-7 * (1.0 + std::abs(fd))) << "leaf " << i << " element " << e;
    }
  }
}

}  // namespace
}  // namespace hylo
