// The logit-free KL (kernels/kl_from_hidden) against the naive full-logit KL: values and the gradients d hs, d Ws
// of sum_n w_n KL_n, against fp64 autograd, with tolerances derived from the same full-logit math in the working
// dtype (the chunked PyTorch baseline's arithmetic: logits by matmul in the dtype, then fp32 log_softmax).
// The CUDA caching allocator is filled with NaN before each call, so outputs carved from reused blocks that the
// kernels failed to write would show. Skips without a CUDA device or without the kernels.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>

#include "hylo/ops/tensor_util.h"
#if HYLO_HAVE_CUDA
#include "hylo/kernels/kl_from_hidden/kl_from_hidden.h"
#endif

namespace hylo {
namespace {

#if !HYLO_HAVE_CUDA
TEST(KlFromHiddenKernel, NeedsCudaBuild) { GTEST_SKIP() << "built without HYLO_CUDA: no kernels to test"; }
#else

struct Result {
  at::Tensor kl, loss, dhs, dws;  // [N], [], [N, Ds], [V, Ds] (fp64 copies)
};

// Full-logit KL in the inputs' dtype (fp32 softmax for bf16 inputs, as the baseline), with autograd.
Result full_logit(const at::Tensor& hs0, const at::Tensor& ht, const at::Tensor& ws0, const at::Tensor& wt,
                  const at::Tensor& w, double tau) {
  at::Tensor hs = hs0.detach().clone().set_requires_grad(true), ws = ws0.detach().clone().set_requires_grad(true);
  at::ScalarType soft = hs.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor ls = at::log_softmax(at::matmul(hs, ws.t()).to(soft) / tau, -1);    // [N, V]
  at::Tensor lt = at::log_softmax(at::matmul(ht, wt.t()).to(soft) / tau, -1);    // [N, V]
  at::Tensor kl = (lt.exp() * (lt - ls)).sum(-1);                                 // [N]
  at::Tensor loss = (kl * w.to(soft)).sum();
  loss.backward();
  return {kl.detach().to(at::kDouble), loss.detach().to(at::kDouble), hs.grad().to(at::kDouble),
          ws.grad().to(at::kDouble)};
}

void poison_allocator() {
  at::Tensor p = at::full({int64_t{1} << 28}, NAN, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
}

double rel(const at::Tensor& a, const at::Tensor& b) { return relative_rms_error(a.to(at::kDouble), b); }

void check(int64_t n, int64_t v, int64_t ds, int64_t dt, double tau, at::ScalarType dtype, int64_t tile,
           uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto rnd = [&](at::IntArrayRef s, double sd) {
    return (at::randn(s, gen, at::TensorOptions().dtype(at::kDouble)) * sd).to(dtype).to(at::kCUDA);
  };
  // Logit spread of a few units, as trained LM heads give.
  at::Tensor hs = rnd({n, ds}, 1.0), ht = rnd({n, dt}, 1.0);
  at::Tensor ws = rnd({v, ds}, 2.0 / std::sqrt(double(ds))), wt = rnd({v, dt}, 2.5 / std::sqrt(double(dt)));
  at::Tensor w = at::rand({n}, gen, at::TensorOptions().dtype(at::kDouble)).to(at::kCUDA);
  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const Result want = full_logit(f64(hs), f64(ht), f64(ws), f64(wt), w, tau);
  const Result same = full_logit(hs, ht, ws, wt, w, tau);

  at::Tensor hsv = hs.detach().clone().set_requires_grad(true), wsv = ws.detach().clone().set_requires_grad(true);
  poison_allocator();
  at::Tensor kl = kernels::kl_from_hidden(hsv, ht, wsv, wt, tau, tile);  // [N] fp32
  ASSERT_EQ(kl.sizes(), at::IntArrayRef({n}));
  ASSERT_FALSE(at::isnan(kl).any().item<bool>());
  at::Tensor loss = (kl * w.to(at::kFloat)).sum();
  poison_allocator();
  loss.backward();
  ASSERT_FALSE(at::isnan(hsv.grad()).any().item<bool>());
  ASSERT_FALSE(at::isnan(wsv.grad()).any().item<bool>());
  ASSERT_EQ(hsv.grad().scalar_type(), dtype);

  const double e_kl = rel(kl, want.kl), r_kl = rel(same.kl, want.kl);
  const double e_hs = rel(hsv.grad(), want.dhs), r_hs = rel(same.dhs, want.dhs);
  const double e_ws = rel(wsv.grad(), want.dws), r_ws = rel(same.dws, want.dws);
  std::printf("N=%ld V=%ld Ds=%ld Dt=%ld tau=%.1f %s tile=%ld: rel rms kl %.3g (ATen %.3g) dhs %.3g (%.3g) "
              "dws %.3g (%.3g)\n",
              long(n), long(v), long(ds), long(dt), tau, c10::toString(dtype), long(tile), e_kl, r_kl, e_hs, r_hs,
              e_ws, r_ws);
  // Floors: the fp32 statistics' own rounding (fp32 inputs) or the bf16 rounding of the returned gradients.
  const double floor = dtype == at::kFloat ? 1e-5 : std::ldexp(1.0, -8);
  EXPECT_LE(e_kl, 2.0 * r_kl + (dtype == at::kFloat ? 1e-5 : 1e-3));
  EXPECT_LE(e_hs, 2.0 * r_hs + floor);
  EXPECT_LE(e_ws, 2.0 * r_ws + floor);
}

#define REQUIRE_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device"

TEST(KlFromHiddenKernel, Fp32MatchesFullLogitKlAndGradients) {
  REQUIRE_CUDA();
  check(1, 1000, 64, 96, 1.0, at::kFloat, 256, 1);
  check(37, 1000, 64, 96, 2.0, at::kFloat, 256, 2);    // 1000 = 3 x 256 + 232: a ragged last tile
  check(300, 4099, 64, 48, 1.0, at::kFloat, 0, 3);     // one tile over the whole vocabulary
  check(300, 4099, 32, 32, 1.5, at::kFloat, 1000, 4);
}

TEST(KlFromHiddenKernel, Bf16MatchesFullLogitKlAndGradients) {
  REQUIRE_CUDA();
  check(37, 1000, 64, 96, 1.0, at::kBFloat16, 256, 5);
  check(513, 8192, 128, 192, 2.0, at::kBFloat16, 0, 6);
  check(513, 8191, 128, 64, 1.0, at::kBFloat16, 2048, 7);
}

// More rows than one tile's row chunk (2^25 / tile): the row-chunked accumulation of d Ws.
TEST(KlFromHiddenKernel, RowChunks) {
  REQUIRE_CUDA();
  check(40000, 1024, 32, 32, 1.0, at::kFloat, 1024, 8);
}

#endif  // HYLO_HAVE_CUDA

}  // namespace
}  // namespace hylo
