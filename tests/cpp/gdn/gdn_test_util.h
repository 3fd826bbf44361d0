// Shared helpers for the Gated DeltaNet tests: realistic random inputs of the gated delta rule and error measures.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

namespace hylo::gdn_test {

// One intra-op thread: these tests use tiny tensors, and OpenMP worker threads spinning on a shared, loaded 2-core
// machine made them 50x slower in wall time than single-threaded.
inline const bool kSingleThreaded = (at::set_num_threads(1), true);

struct DeltaInputs {
  at::Tensor q, k;   // [B, T, H, Dk]  L2-normalised along Dk, as the GDN layer feeds them
  at::Tensor v;      // [B, T, H, Dv]
  at::Tensor g;      // [B, T, H]      log decay <= 0
  at::Tensor beta;   // [B, T, H]      in (0, 1)
  at::Tensor state;  // [B, H, Dv, Dk]

  DeltaInputs to(at::ScalarType t) const {
    return {q.to(t), k.to(t), v.to(t), g.to(t), beta.to(t), state.defined() ? state.to(t) : state};
  }
  // The exact values of these inputs after rounding to t, held in fp64 (the reference sees what the kernel sees).
  DeltaInputs rounded(at::ScalarType t) const { return to(t).to(at::kDouble); }
};

// g spans gentle to strong decay (-exp(A_log) * softplus(x) with A in [0.05, 16] as FLA initialises A_log).
inline DeltaInputs random_inputs(int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv, bool with_state,
                                 uint64_t seed) {
  at::manual_seed(seed);
  const auto d = at::kDouble;
  DeltaInputs in;
  in.q = at::randn({B, T, H, Dk}, d);
  in.q = in.q / in.q.norm(2, -1, true);
  in.k = at::randn({B, T, H, Dk}, d);
  in.k = in.k / in.k.norm(2, -1, true);
  in.v = at::randn({B, T, H, Dv}, d);
  at::Tensor A = 0.05 + 15.95 * at::rand({H}, d);                          // [H]
  in.g = -A * at::softplus(at::randn({B, T, H}, d) - 4.0);                // [B, T, H]
  in.beta = at::sigmoid(at::randn({B, T, H}, d));                         // [B, T, H]
  if (with_state) in.state = 0.5 * at::randn({B, H, Dv, Dk}, d);
  return in;
}

inline double max_abs(const at::Tensor& a) { return a.to(at::kDouble).abs().max().item<double>(); }
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}
// Unit roundoff of a dtype (half an ulp at 1).
inline double unit_roundoff(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::ldexp(1.0, -53);
    case at::kFloat: return std::ldexp(1.0, -24);
    case at::kBFloat16: return std::ldexp(1.0, -8);
    case at::kHalf: return std::ldexp(1.0, -11);
    default: return 0.0;
  }
}

}  // namespace hylo::gdn_test
