// The split-KV MLA latent decode kernel (kernels/mla_decode) against an fp64 reference of the same attention core,
// with the tolerance derived from the ATen absorbed form's own bf16 error on the same inputs; and the CUDA decode
// path of ops::mla_attention_absorbed (which calls the kernel) against the fp64 decompressed form. Needs a CUDA
// device; skips cleanly without one (CPU CI) or in builds without the kernels.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "hylo/ops/mla.h"
#include "hylo/ops/tensor_util.h"
#if HYLO_HAVE_CUDA
#include "hylo/kernels/mla_decode/mla_decode.h"
#endif

namespace hylo {
namespace {

#if !HYLO_HAVE_CUDA
TEST(MlaDecodeKernel, NeedsCudaBuild) { GTEST_SKIP() << "built without HYLO_CUDA: no kernels to test"; }
#else

#define REQUIRE_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device"

at::Tensor randn_cuda(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)).to(at::kCUDA);
}

// Attention core per sequence b over its first len[b] keys, in `dtype` the way the ATen absorbed form computes it
// (scores by matmul in dtype, softmax in fp32 or fp64, probabilities back in dtype, ctx by matmul); fp64 inputs
// give the exact reference. q_lat [B,H,C], q_pe [B,H,R], c [B,S,C], kr [B,S,R]; returns [B,H,C] fp64.
at::Tensor core_reference(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& c, const at::Tensor& kr,
                          const std::vector<int64_t>& lens, double scale) {
  std::vector<at::Tensor> outs;
  for (int64_t b = 0; b < q_lat.size(0); ++b) {
    const int64_t n = lens[b];
    if (n == 0) {
      outs.push_back(at::zeros({q_lat.size(1), q_lat.size(2)}, q_lat.options().dtype(at::kDouble)));
      continue;
    }
    at::Tensor cs = c[b].narrow(0, 0, n), ks = kr[b].narrow(0, 0, n);                       // [n, C], [n, R]
    at::Tensor scores = at::matmul(q_lat[b], cs.t()) + at::matmul(q_pe[b], ks.t());         // [H, n]
    at::Tensor probs = at::softmax(scores.to(compute_type(scores.scalar_type())) * scale, -1)
                           .to(scores.scalar_type());                                      // [H, n]
    outs.push_back(at::matmul(probs, cs).to(at::kDouble));                                  // [H, C]
  }
  return at::stack(outs);
}

struct Shape {
  int64_t b, h, c, r;
  std::vector<int64_t> lens;  // per sequence; S = max
};

// Runs the kernel on fresh inputs of `shape` (cache as the two column ranges of one [B, S+3, C+R] buffer, as the
// mixer's cache), poisoned output, and checks error(kernel) <= 2 * error(ATen bf16) + 2^-9 against fp64.
void check_kernel(const Shape& sh, int64_t splits, uint64_t seed) {
  const int64_t s = *std::max_element(sh.lens.begin(), sh.lens.end());
  const double scale = 1.0 / std::sqrt(double(sh.c / 4 + sh.r));
  at::Tensor q_lat = randn_cuda({sh.b, sh.h, sh.c}, seed);             // [B, H, C]
  at::Tensor q_pe = randn_cuda({sh.b, sh.h, sh.r}, seed + 1);          // [B, H, R]
  at::Tensor cache = randn_cuda({sh.b, s + 3, sh.c + sh.r}, seed + 2);  // [B, S+3, C+R]
  at::Tensor q_lat16 = q_lat.to(at::kBFloat16), q_pe16 = q_pe.to(at::kBFloat16);
  at::Tensor cache16 = cache.to(at::kBFloat16);
  at::Tensor c16 = cache16.narrow(1, 0, s).narrow(2, 0, sh.c), k16 = cache16.narrow(1, 0, s).narrow(2, sh.c, sh.r);
  // The reference sees the bf16-rounded inputs in fp64: the kernel is judged on its arithmetic alone.
  at::Tensor want = core_reference(q_lat16.to(at::kDouble), q_pe16.to(at::kDouble), c16.to(at::kDouble),
                                   k16.to(at::kDouble), sh.lens, scale);
  at::Tensor aten = core_reference(q_lat16, q_pe16, c16, k16, sh.lens, scale);
  at::Tensor lens = at::tensor(std::vector<int>(sh.lens.begin(), sh.lens.end()), at::kInt).to(at::kCUDA);
  at::Tensor out = at::full({sh.b, sh.h, sh.c}, NAN, q_lat16.options());
  kernels::mla_latent_decode(q_lat16, q_pe16, c16, k16, lens, scale, splits, out);
  ASSERT_FALSE(at::isnan(out).any().item<bool>()) << "unwritten (poisoned) outputs remain";
  const double err = relative_rms_error(out, want), ref_err = relative_rms_error(aten, want);
  const double max_err = (out.to(at::kDouble) - want).abs().max().item<double>();
  const double ref_max = (aten - want).abs().max().item<double>();
  std::printf("B=%ld H=%ld C=%ld R=%ld S=%ld splits=%ld: rel rms %.3g (ATen bf16 %.3g), max abs %.3g (%.3g)\n",
              long(sh.b), long(sh.h), long(sh.c), long(sh.r), long(s), long(splits), err, ref_err, max_err, ref_max);
  EXPECT_LE(err, 2.0 * ref_err + std::ldexp(1.0, -9));
  EXPECT_LE(max_err, 2.0 * ref_max + std::ldexp(1.0, -7));
}

// The four upcycled widths 160, 192, 320, 576 x context lengths around the tiles (32 and 64 tokens) x heads.
TEST(MlaDecodeKernel, MatchesReferenceAcrossWidthsLengthsAndHeads) {
  REQUIRE_CUDA();
  const int64_t widths[][2] = {{128, 32}, {128, 64}, {256, 64}, {512, 64}};
  const int64_t lengths[] = {1, 7, 31, 33, 63, 65, 127, 129, 4097};
  const int64_t heads[] = {1, 9, 16, 32};
  uint64_t seed = 100;
  for (const auto& w : widths)
    for (int64_t s : lengths)
      for (int64_t h : heads) check_kernel({1, h, w[0], w[1], {s}}, 0, seed += 7);
}

// More heads than one CTA's 64 (several head blocks), and head counts that leave part of an m-tile empty.
TEST(MlaDecodeKernel, ManyHeads) {
  REQUIRE_CUDA();
  for (int64_t h : {40, 64, 65, 128}) check_kernel({1, h, 512, 64, {1000}}, 0, 300 + h);
  check_kernel({1, 100, 128, 32, {777}}, 0, 411);
}

// Batches with their own lengths (0 included: ctx 0), and the split count forced low, odd and past the tiles.
TEST(MlaDecodeKernel, PerSequenceLengthsAndSplits) {
  REQUIRE_CUDA();
  check_kernel({4, 16, 128, 32, {1, 300, 0, 2049}}, 0, 501);
  check_kernel({3, 9, 512, 64, {65, 64, 63}}, 0, 502);
  for (int64_t splits : {1, 3, 7, 1000}) check_kernel({2, 32, 256, 64, {5000, 333}}, splits, 503 + splits);
}

// A long context filling the GPU with one sequence.
TEST(MlaDecodeKernel, LongContext) {
  REQUIRE_CUDA();
  check_kernel({1, 16, 512, 64, {200001}}, 0, 601);
  check_kernel({1, 32, 128, 32, {131073}}, 0, 602);
}

// ops::mla_attention_absorbed on bf16 CUDA decode (the kernel path, W_UK / W_UV included) against the fp64
// decompressed form; its error is bounded by the same op's bf16 error on the CPU (the ATen form).
TEST(MlaDecodeKernel, AbsorbedOpUsesKernelOnCuda) {
  REQUIRE_CUDA();
  struct Case { int64_t b, s, h, g, p, r, v, c, offset; };
  for (const Case k : {Case{2, 70, 8, 2, 64, 32, 64, 128, 69}, Case{1, 300, 9, 3, 64, 64, 64, 128, 200},
                       Case{1, 129, 16, 16, 128, 64, 128, 512, 128}}) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(k.s * 31 + k.h);
    auto rnd = [&](at::IntArrayRef shape) { return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)); };
    at::Tensor q_nope = rnd({k.b, 1, k.h, k.p}), q_pe = rnd({k.b, 1, k.h, k.r});
    at::Tensor c_kv = rnd({k.b, k.s, k.c}), k_pe = rnd({k.b, k.s, k.r});
    at::Tensor w = rnd({k.g * (k.p + k.v), k.c}) / std::sqrt(double(k.c));
    auto bf = [](const at::Tensor& t) { return t.to(at::kBFloat16); };
    auto f64 = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kDouble); };
    const double scale = 1.0 / std::sqrt(double(k.p + k.r));
    at::Tensor want = ops::mla_attention_decompressed(f64(q_nope), f64(q_pe), f64(c_kv), f64(k_pe), f64(w), k.g, scale,
                                                      k.offset);
    at::Tensor cpu = ops::mla_attention_absorbed(bf(q_nope), bf(q_pe), bf(c_kv), bf(k_pe), bf(w), k.g, scale, k.offset);
    at::Tensor gpu = ops::mla_attention_absorbed(bf(q_nope).cuda(), bf(q_pe).cuda(), bf(c_kv).cuda(),
                                                 bf(k_pe).cuda(), bf(w).cuda(), k.g, scale, k.offset);
    ASSERT_EQ(gpu.sizes(), want.sizes());
    const double err = relative_rms_error(gpu.cpu(), want), ref_err = relative_rms_error(cpu, want);
    std::printf("absorbed op B=%ld S=%ld H=%ld G=%ld C=%ld offset=%ld: rel rms %.3g (CPU bf16 %.3g)\n", long(k.b),
                long(k.s), long(k.h), long(k.g), long(k.c), long(k.offset), err, ref_err);
    EXPECT_LE(err, 2.0 * ref_err + std::ldexp(1.0, -9));
  }
}

// Operands the kernel does not take are refused by the predicate (the op then keeps its ATen form).
TEST(MlaDecodeKernel, SupportPredicate) {
  REQUIRE_CUDA();
  auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::zeros({1, 4, 128}, o), qp = at::zeros({1, 4, 32}, o);
  at::Tensor c = at::zeros({1, 10, 128}, o), kp = at::zeros({1, 10, 32}, o);
  EXPECT_TRUE(kernels::mla_latent_decode_supported(q, qp, c, kp));
  EXPECT_FALSE(kernels::mla_latent_decode_supported(q.to(at::kFloat), qp, c, kp));
  EXPECT_FALSE(kernels::mla_latent_decode_supported(at::zeros({1, 4, 96}, o), qp, at::zeros({1, 10, 96}, o), kp));
  EXPECT_FALSE(kernels::mla_latent_decode_supported(q, qp, c.cpu(), kp));
}

#endif  // HYLO_HAVE_CUDA

}  // namespace
}  // namespace hylo
