// The CUDA side of the decode-step fusions (skipped without a CUDA build/device):
//  - kernels/rms_norm/add_rms_norm.cu against the ATen reference (ops::rms_norm_reference, `h + m`), fp32 / bf16 /
//    fp16, with and without the residual, D below, at and above one block's width;
//  - the fused GDN decode kernel fed the packed projection output (column views with row stride sum N) gives
//    exactly what it gives for contiguous copies of the same values (same kernel, same numbers: bitwise);
//  - kernels/swiglu/silu_mul.cu on the two halves of a packed [R, 2F] buffer against ATen's silu(gate) * up;
//  - a whole hybrid decode step with every fusion on equals the same step with them off, within bf16 tolerance.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <string>

#include "hylo/model/causal_lm.h"
#include "hylo/ops/packed_linear.h"
#include "hylo/ops/rms_norm.h"
#include "kernels_gdn/cuda_test_util.h"
#include "shared/tiny_models.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/gated_delta/gdn_decode_fused.h"
#include "hylo/kernels/rms_norm/add_rms_norm.h"
#include "hylo/kernels/swiglu/silu_mul.h"
#endif

namespace hylo {
namespace {

#ifdef HYLO_HAVE_CUDA
// The rounding unit of a storage dtype (half an ulp at 1): bf16 2^-8, fp16 2^-11, fp32 2^-24.
double unit_roundoff(at::ScalarType t) {
  return t == at::kBFloat16 ? std::ldexp(1.0, -8) : t == at::kHalf ? std::ldexp(1.0, -11) : std::ldexp(1.0, -24);
}

// The kernel and ATen sum r^2 in different orders: rstd differs relatively by at most ~D u32 (plus rsqrt's ~2 ulp),
// and each of the two roundings to the storage dtype (normed, then w * normed) may then land on the neighbouring
// value: |y - y_ref| <= (4 u + 2 D u32 + 8 u32) |y_ref|, with an absolute floor for values near zero.
void expect_norm_close(const at::Tensor& got, const at::Tensor& want, int64_t D, const std::string& what) {
  const double u = unit_roundoff(want.scalar_type()), u32 = std::ldexp(1.0, -24);
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const at::Tensor bound = (4 * u + 2.0 * D * u32 + 8 * u32) * w.abs() + 1e-6;
  const double excess = ((g - w).abs() - bound).max().item<double>();
  EXPECT_LE(excess, 0.0) << what << ": max |diff| " << (g - w).abs().max().item<double>();
}

TEST(AddRmsNormCuda, EqualsAtenReference) {
  HYLO_REQUIRE_CUDA();
  c10::InferenceMode inference;  // ops::rms_norm routes to the kernel in inference only
  at::manual_seed(1);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (std::vector<int64_t> shape : {std::vector<int64_t>{1, 1, 576}, {3, 7, 2048}, {2, 5, 100}, {4, 8192}}) {
      const auto o = at::TensorOptions().dtype(t).device(at::kCUDA);
      const int64_t D = shape.back();
      at::Tensor h = at::randn(shape, o), m = at::randn(shape, o), w = (1.0 + 0.1 * at::randn({D}, o)).to(t);
      const double eps = 1e-5;
      const std::string tag = std::string(c10::toString(t)) + " " + c10::str(at::IntArrayRef(shape));
      auto [r, y] = kernels::add_rms_norm_cuda(h, m, w, eps);
      at::Tensor r_ref = h + m;
      EXPECT_TRUE(at::equal(r, r_ref)) << tag << ": the residual sum rounds as ATen's add";
      expect_norm_close(y, ops::rms_norm_reference(r_ref, w, eps), D, tag + " add+norm");
      auto [none, y2] = kernels::add_rms_norm_cuda(h, at::Tensor(), w, eps);
      EXPECT_FALSE(none.defined());
      expect_norm_close(y2, ops::rms_norm_reference(h, w, eps), D, tag + " norm");
      // The routed ops take the kernel for these calls and give the same values.
      EXPECT_TRUE(at::equal(ops::rms_norm(h, w, eps), y2)) << tag;
      EXPECT_TRUE(at::equal(ops::add_rms_norm(h, m, w, eps).normed, y)) << tag;
    }
  }
}

TEST(AddRmsNormCuda, UnsupportedCallsFallBackToAten) {
  HYLO_REQUIRE_CUDA();
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor h = at::randn({2, 64}, o), w32 = at::ones({64}, o.dtype(at::kFloat));
  EXPECT_FALSE(kernels::add_rms_norm_cuda_supported(h, at::Tensor(), w32)) << "weight of another dtype";
  EXPECT_FALSE(kernels::add_rms_norm_cuda_supported(h.t(), at::Tensor(), at::ones({2}, o))) << "not contiguous";
  EXPECT_TRUE(at::equal(ops::rms_norm(h, w32, 1e-5), ops::rms_norm_reference(h, w32, 1e-5)));
  EXPECT_THROW(kernels::add_rms_norm_cuda(h, at::Tensor(), w32, 1e-5), std::exception);
}

// Same rounding points as ATen (SiLU rounded to the dtype, then the product), but SiLU's exp may differ from
// ATen's in its last fp32 bit, which can move the rounded SiLU to the neighbouring value: |diff| <= 2 u |ref|.
TEST(SiluMulCuda, PackedHalvesEqualAten) {
  HYLO_REQUIRE_CUDA();
  at::manual_seed(4);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t R : {1, 7}) {
      const int64_t F = 1536;
      at::Tensor gu = 3.0 * at::randn({R, 2 * F}, at::TensorOptions().dtype(t).device(at::kCUDA));
      at::Tensor g = gu.narrow(1, 0, F), u = gu.narrow(1, F, F);
      ASSERT_TRUE(kernels::silu_mul_cuda_supported(g, u));
      at::Tensor got = kernels::silu_mul_cuda(g, u).to(at::kDouble), want = (at::silu(g) * u).to(at::kDouble);
      const double excess = ((got - want).abs() - 2 * unit_roundoff(t) * want.abs()).max().item<double>();
      EXPECT_LE(excess, 0.0) << c10::toString(t) << " R=" << R;
    }
  }
}

TEST(GdnDecodeFusedPacked, StridedProjectionRowsEqualContiguous) {
  HYLO_REQUIRE_CUDA();
  at::manual_seed(2);
  const int64_t H = 3, Dk = 128, Dv = 256, K = 4, B = 5, S = 9;
  const auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const int64_t widths[] = {H * Dk, H * Dk, H * Dv, H, H, H * Dv};
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  at::Tensor packed = at::randn({B, total}, bf);  // [B, sum N]: what the packed GEMM returns
  std::vector<at::Tensor> views;
  int64_t off = 0;
  for (int64_t w : widths) views.push_back(packed.narrow(1, off, w)), off += w;
  kernels::GdnDecodeParams prm{0.5 * at::randn({H * Dk, K}, bf), 0.5 * at::randn({H * Dk, K}, bf),
                               0.5 * at::randn({H * Dv, K}, bf), at::randn({H}, bf), at::randn({H}, bf),
                               1.0 + 0.1 * at::randn({Dv}, bf), 1e-5, 1.0 / std::sqrt(double(Dk))};
  auto make_pools = [&] {
    at::manual_seed(3);
    return kernels::GdnDecodePools{at::randn({S, H * Dk, K - 1}, bf), at::randn({S, H * Dk, K - 1}, bf),
                                   at::randn({S, H * Dv, K - 1}, bf),
                                   0.1 * at::randn({S, H, Dv, Dk}, bf.dtype(at::kFloat))};
  };
  const at::Tensor slots = at::tensor({7, 1, 4, 0, 8}, at::kLong).to(at::kCUDA);
  kernels::GdnDecodePools p1 = make_pools(), p2 = make_pools();
  const at::Tensor y1 = kernels::gdn_decode_fused_cuda(views[0], views[1], views[2], views[3], views[4], views[5],
                                                       prm, p1, slots);
  const at::Tensor y2 = kernels::gdn_decode_fused_cuda(views[0].contiguous(), views[1].contiguous(),
                                                       views[2].contiguous(), views[3].contiguous(),
                                                       views[4].contiguous(), views[5].contiguous(), prm, p2, slots);
  EXPECT_TRUE(at::equal(y1, y2));
  EXPECT_TRUE(at::equal(p1.recurrent, p2.recurrent));
  EXPECT_TRUE(at::equal(p1.conv_q, p2.conv_q));
  EXPECT_TRUE(at::equal(p1.conv_v, p2.conv_v));
  // A view whose columns are strided is refused with the argument's name.
  EXPECT_THROW(kernels::gdn_decode_fused_cuda(at::randn({H * Dk, B}, bf).t(), views[1], views[2], views[3], views[4],
                                              views[5], prm, p1, slots),
               std::exception);
}

// A whole bf16 hybrid decode step on the GPU with the fusions on (packed projections, fused add+norm) against
// the same model with them off: per step, logits within a bf16 budget of their scale (the fused forms round at
// the same points; the norm's reduction order and the GEMM shapes may move a value by one bf16 unit, which the
// following layers carry: 16 u of the logits' scale, as the engine's GPU parity tests allow).
TEST(DecodeStepFusedCuda, ModelStepEqualsUnfused) {
  HYLO_REQUIRE_CUDA();
  ModelConfig config = mixed_config();
  LoadOptions lo;
  lo.dtype = at::kBFloat16;
  lo.device = at::Device(at::kCUDA);
  auto model = CausalLM::random(config, /*seed=*/3, lo);
  c10::InferenceMode inference;
  auto run = [&](bool fused) {
    ops::PackedLinear::set_enabled(fused);
    ops::set_fused_rms_norm(fused);
    auto st = model->new_state(1, 16);
    model->forward(at::tensor({5, 9, 2, 7}, at::kLong).view({1, 4}), st.get());
    at::Tensor l = model->forward(at::full({1, 1}, 11, at::kLong), st.get());
    ops::PackedLinear::set_enabled(true);
    ops::set_fused_rms_norm(true);
    return l.to(at::kDouble).cpu();
  };
  const at::Tensor a = run(true), b = run(false);
  const double scale = b.abs().max().item<double>();
  EXPECT_LE((a - b).abs().max().item<double>(), 16 * unit_roundoff(at::kBFloat16) * scale);
}
#endif

TEST(DecodeFuseCuda, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }

}  // namespace
}  // namespace hylo
