// The CUDA causal conv1d (kernels/causal_conv1d) equals the ATen op (ops/causal_conv1d) on fresh random inputs:
// output within a small multiple of the ATen form's own error in the same dtype against an fp64 reference (plus
// a floor of a few units of roundoff), the new conv state bit-equal (it is a copy of inputs), every output element
// written (outputs are NaN-poisoned before each call), chunked prefill equal to one go, and the op itself routes
// CUDA tensors to the kernel and unsupported widths to the ATen form on the GPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>

#include "cuda_test_util.h"
#include "hylo/ops/causal_conv1d.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/causal_conv1d/causal_conv1d_cuda.h"
#endif

namespace hylo {
namespace {

using kernels_test::rel_err;
using kernels_test::unit_roundoff;

#ifdef HYLO_HAVE_CUDA
struct ConvCase {
  int64_t B, T, C, K;
  bool bias, state, silu;
  at::ScalarType dtype;
};

void check_case(const ConvCase& c, uint64_t seed) {
  at::manual_seed(seed);
  const auto d = at::kDouble;
  at::Tensor x = at::randn({c.B, c.T, c.C}, d).to(c.dtype);                                        // [B, T, C]
  at::Tensor w = (at::randn({c.C, c.K}, d) / std::sqrt(double(c.K))).to(c.dtype);                 // [C, K]
  at::Tensor bias = c.bias ? at::randn({c.C}, d).to(c.dtype) : at::Tensor();                       // [C]
  at::Tensor st = c.state && c.K > 1 ? at::randn({c.B, c.C, c.K - 1}, d).to(c.dtype) : at::Tensor();  // [B,C,K-1]
  auto dbl = [](const at::Tensor& t) { return t.defined() ? t.to(at::kDouble) : t; };
  auto gpu = [](const at::Tensor& t) { return t.defined() ? t.to(at::kCUDA) : t; };
  auto ref = causal_conv1d(dbl(x), dbl(w), dbl(bias), dbl(st), c.silu);       // fp64 reference
  auto aten = causal_conv1d(x, w, bias, st, c.silu);                          // the ATen form, same dtype
  auto got = kernels::causal_conv1d_cuda(gpu(x), gpu(w), gpu(bias), gpu(st), c.silu);
  const std::string tag = "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " C=" + std::to_string(c.C) +
                          " K=" + std::to_string(c.K) + " bias=" + std::to_string(c.bias) +
                          " state=" + std::to_string(c.state) + " silu=" + std::to_string(c.silu) + " " +
                          c10::toString(c.dtype);
  ASSERT_EQ(got.first.sizes(), aten.first.sizes()) << tag;
  ASSERT_EQ(got.first.scalar_type(), c.dtype) << tag;
  ASSERT_TRUE(got.first.is_cuda()) << tag;
  const double e_aten = rel_err(aten.first, ref.first), e_got = rel_err(got.first, ref.first);
  // Both round the same fp32 sum once to the output dtype; the kernel's sum order differs (fp32, <= K terms).
  EXPECT_LE(e_got, 2.0 * e_aten + 8.0 * unit_roundoff(c.dtype) + 1e-12) << tag << " aten err " << e_aten;
  EXPECT_TRUE(at::equal(got.second.cpu(), aten.second)) << tag << ": new conv state differs";
}

TEST(CausalConv1dCuda, EqualsAtenAcrossShapes) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 1;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16})
    for (int64_t T : {1, 2, 3, 31, 32, 33, 100})
      for (int64_t K : {1, 2, 4})
        for (int64_t C : {5, 130})
          check_case({2, T, C, K, (T + K) % 2 == 0, T % 3 != 0, K != 2, dt}, seed++);
  check_case({1, 1000, 384, 4, false, true, true, at::kBFloat16}, seed++);
  check_case({3, 77, 64, 8, true, true, true, at::kHalf}, seed++);
}

TEST(CausalConv1dCuda, ChunkedPrefillEqualsOneGo) {
  HYLO_REQUIRE_CUDA();
  at::manual_seed(7);
  const int64_t B = 2, T = 90, C = 96, K = 4;
  at::Tensor x = at::randn({B, T, C}, at::kCUDA);                  // [B, T, C]
  at::Tensor w = at::randn({C, K}, at::kCUDA);                     // [C, K]
  at::Tensor st = at::randn({B, C, K - 1}, at::kCUDA);             // [B, C, K-1]
  auto whole = kernels::causal_conv1d_cuda(x, w, at::Tensor(), st, true);
  at::Tensor state = st;
  std::vector<at::Tensor> parts;
  for (auto [t0, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 1}, {3, 40}, {43, 47}}) {
    auto r = kernels::causal_conv1d_cuda(x.narrow(1, t0, n), w, at::Tensor(), state, true);
    parts.push_back(r.first);
    state = r.second;
  }
  EXPECT_TRUE(at::equal(at::cat(parts, 1), whole.first));  // same fp32 arithmetic per element: bit-equal
  EXPECT_TRUE(at::equal(state, whole.second));
}

TEST(CausalConv1dCuda, OpRoutesCudaTensorsAndKeepsUnsupportedOnGpu) {
  HYLO_REQUIRE_CUDA();
  at::manual_seed(8);
  at::Tensor x = at::randn({1, 9, 16}, at::kCUDA);
  at::Tensor w4 = at::randn({16, 4}, at::kCUDA), w9 = at::randn({16, 9}, at::kCUDA);  // width 9: no kernel
  auto k4 = causal_conv1d(x, w4, at::Tensor(), at::Tensor(), true);
  auto direct = kernels::causal_conv1d_cuda(x, w4, at::Tensor(), at::Tensor(), true);
  EXPECT_TRUE(at::equal(k4.first, direct.first)) << "the op did not use the kernel for a CUDA tensor";
  auto k9 = causal_conv1d(x, w9, at::Tensor(), at::Tensor(), true);
  EXPECT_TRUE(k9.first.is_cuda() && k9.second.is_cuda()) << "unsupported width must stay on the GPU";
  auto ref9 = causal_conv1d(x.cpu().to(at::kDouble), w9.cpu().to(at::kDouble), at::Tensor(), at::Tensor(), true);
  EXPECT_LT(rel_err(k9.first, ref9.first), 1e-5);
}
#else
TEST(CausalConv1dCuda, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }
#endif

}  // namespace
}  // namespace hylo
