// Helpers shared by the Mamba2 tests: realistic random SSD inputs, error measures and a finite-difference
// gradient check in fp64.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace hylo::test {

// These tests use tiny tensors, for which intra-op threads only cost: on a shared machine their spinning
// multiplied the CPU time of this binary by ~10. Runs once per process (an inline variable).
inline const bool kSingleThreaded = (at::set_num_threads(1), true);

// max |a - ref| / max |ref|, in fp64 (a scale-aware error that one large entry cannot hide behind an RMS).
inline double max_rel_error(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.detach().to(at::kDouble);
  const double scale = r.abs().max().item<double>();
  const double err = (a.detach().to(at::kDouble) - r).abs().max().item<double>();
  return scale > 0 ? err / scale : err;
}

inline double eps_of(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return std::ldexp(1.0, -8);
    case at::kHalf: return std::ldexp(1.0, -11);
    case at::kFloat: return std::numeric_limits<float>::epsilon();
    default: return std::numeric_limits<double>::epsilon();
  }
}

// SSD inputs in fp64 with the magnitudes a trained Mamba2 sees: dt = softplus(raw + dt_bias) in roughly
// [1e-3, 0.5], A = -exp(A_log) with A_log = log U(1, 16), unit-scale x, B, C.
struct SsdInputs {
  at::Tensor x, dt, A, B, C, D, state;  // [Bt,T,H,P] [Bt,T,H] [H] [Bt,T,G,N] [Bt,T,Gc,N] [H] [Bt,H,P,N]
  std::vector<at::Tensor*> all() { return {&x, &dt, &A, &B, &C, &D, &state}; }
};

inline SsdInputs make_ssd_inputs(int64_t batch, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Gc,
                                 bool with_state, uint64_t seed) {
  at::manual_seed(seed);
  auto o = at::TensorOptions().dtype(at::kDouble);
  SsdInputs in;
  in.x = at::randn({batch, T, H, P}, o);
  at::Tensor dt_bias = at::log(at::expm1(at::exp(at::rand({H}, o) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3))));
  in.dt = at::softplus(at::randn({batch, T, H}, o) + dt_bias);
  in.A = -at::exp(at::log(at::rand({H}, o) * 15 + 1));
  in.B = at::randn({batch, T, G, N}, o);
  in.C = at::randn({batch, T, Gc, N}, o);
  in.D = at::randn({H}, o);
  if (with_state) in.state = at::randn({batch, H, P, N}, o);
  return in;
}

// Central finite differences of a scalar fp64 function against its autograd gradient, for every element of
// each input (inputs must be tiny). h = 1e-6 gives truncation ~h^2 and rounding ~1e-16/h, both far below the
// 1e-6 relative tolerance, which a wrong gradient (an O(1) relative error) cannot meet.
inline void expect_gradients_match_finite_differences(
    const std::function<at::Tensor(const std::vector<at::Tensor>&)>& f, std::vector<at::Tensor> inputs,
    const std::vector<std::string>& names) {
  for (auto& t : inputs) t = t.detach().clone().set_requires_grad(true);
  at::Tensor out = f(inputs);
  ASSERT_EQ(out.numel(), 1);
  out.backward();
  const double h = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(inputs[i].grad().defined()) << names[i] << ": no autograd gradient";
    at::Tensor ag = inputs[i].grad().detach().clone();
    at::Tensor fd = at::zeros_like(ag);
    at::Tensor base = inputs[i].detach();
    auto flat = fd.view({-1});
    for (int64_t k = 0; k < base.numel(); ++k) {
      std::vector<at::Tensor> plus, minus;
      for (size_t j = 0; j < inputs.size(); ++j) {
        plus.push_back(inputs[j].detach());
        minus.push_back(inputs[j].detach());
      }
      plus[i] = base.clone();
      minus[i] = base.clone();
      plus[i].view({-1})[k] += h;
      minus[i].view({-1})[k] -= h;
      at::NoGradGuard no_grad;
      flat[k] = (f(plus).item<double>() - f(minus).item<double>()) / (2 * h);
    }
    const double scale = std::max(1.0, ag.abs().max().item<double>());
    const double err = (fd - ag).abs().max().item<double>();
    EXPECT_LE(err, 1e-6 * scale) << names[i] << ": finite differences disagree with autograd (max |grad| "
                                 << ag.abs().max().item<double>() << ")";
  }
}

}  // namespace hylo::test
