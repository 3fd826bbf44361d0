// Shared helpers for the CUDA kernel tests: skip cleanly without a CUDA build or device, poison kernel outputs,
// relative RMS errors in fp64.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#ifdef HYLO_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "hylo/kernels/common/cuda_check.h"
#endif

#include <cmath>

namespace hylo::kernels_test {

inline bool cuda_ready() {
#ifdef HYLO_HAVE_CUDA
  return at::cuda::is_available();
#else
  return false;
#endif
}

// Every test starts with this: skips without CUDA, else turns on NaN-poisoning of kernel outputs.
#ifdef HYLO_HAVE_CUDA
#define HYLO_REQUIRE_CUDA()                                                          \
  do {                                                                               \
    if (!::hylo::kernels_test::cuda_ready()) GTEST_SKIP() << "no CUDA device";       \
    ::hylo::kernels::set_poison_outputs(true);                                       \
  } while (0)
#else
#define HYLO_REQUIRE_CUDA() GTEST_SKIP() << "built without HYLO_CUDA"
#endif

// ||a - ref|| / ||ref|| in fp64 on the CPU; NaN anywhere in a gives NaN (which fails every EXPECT_LT).
inline double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  const at::Tensor x = a.to(at::kCPU, at::kDouble), r = ref.to(at::kCPU, at::kDouble);
  return (x - r).norm().item<double>() / std::max(r.norm().item<double>(), 1e-300);
}

inline bool all_finite(const at::Tensor& a) { return at::isfinite(a.to(at::kCPU)).all().item<bool>(); }

inline double unit_roundoff(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::ldexp(1.0, -53);
    case at::kFloat: return std::ldexp(1.0, -24);
    case at::kBFloat16: return std::ldexp(1.0, -8);
    case at::kHalf: return std::ldexp(1.0, -11);
    default: return 0.0;
  }
}

}  // namespace hylo::kernels_test
