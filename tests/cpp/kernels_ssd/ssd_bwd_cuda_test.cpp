// The CUDA chunked SSD backward (kernels::ssd_chunk_backward_cuda) and its autograd wrapper (ssd_chunk_autograd,
// which ssd_chunk uses on CUDA when a gradient is needed): the gradients of x, dt, A, B, C, D and the initial state
// against autograd through ssd_naive in fp64 on exactly the rounded inputs and upstream gradients the kernel sees,
// at lengths 1, chunk-1, chunk, chunk+1, odd lengths over several chunks and 1000 tokens, several heads, head
// dims, d_state values and group layouts, with and without D, an initial state and a final-state gradient. Every
// output and intermediate is NaN-poisoned before the call.
//
// Tolerance, per gradient: relative RMS error <= 4x the error of the same gradient from autograd through the ATen
// chunk form (ssd_chunk on the CPU, the differentiable reference) in the working dtype, plus a floor of 1e-5. The
// kernels compute in fp32 like the ATen form and differ from it only in summation order (a few dozen fp32
// roundoffs per sum); gradients in bf16/fp16 carry the same final rounding in both. A wrong term is an O(1) error.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/csrc/autograd/function.h>

#include "kernels_gdn/cuda_test_util.h"
#include "mamba2/test_util.h"
#include "hylo/core/result.h"
#include "hylo/ops/ssd.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/ssd/ssd_cuda.h"
#endif

namespace hylo {
namespace {

#ifdef HYLO_HAVE_CUDA
using kernels_test::rel_err;

constexpr double kFloor = 1e-5;

struct Case {
  int64_t batch, T, H, P, N, G, Gc;
  bool state, with_D, d_final;
};

std::string tag(const Case& c, at::ScalarType xt) {
  return "B=" + std::to_string(c.batch) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " P=" + std::to_string(c.P) + " N=" + std::to_string(c.N) + " G=" + std::to_string(c.G) +
         " Gc=" + std::to_string(c.Gc) + (c.state ? " +state" : "") + (c.with_D ? " +D" : "") +
         (c.d_final ? " +dfinal" : "") + " " + c10::toString(xt);
}

// Leaves in a caller's dtypes: x, B, C, D in xt (the model dtype), dt and A fp32 (the mixer's), the state fp32;
// dy in xt (y's dtype), d_final fp32. Order of `leaves`: x, dt, A, B, C, D, state (D, state may be undefined).
struct Problem {
  std::vector<at::Tensor> leaves;
  at::Tensor dy, d_final;
};

Problem make(const Case& c, at::ScalarType xt, uint64_t seed, at::Device dev) {
  test::SsdInputs in = test::make_ssd_inputs(c.batch, c.T, c.H, c.P, c.N, c.G, c.Gc, c.state, seed);
  at::manual_seed(seed + 11);
  Problem p;
  const auto o = at::TensorOptions().device(dev);
  p.leaves = {in.x.to(o.dtype(xt)), in.dt.to(o.dtype(at::kFloat)), in.A.to(o.dtype(at::kFloat)),
              in.B.to(o.dtype(xt)), in.C.to(o.dtype(xt)), c.with_D ? in.D.to(o.dtype(xt)) : at::Tensor(),
              c.state ? in.state.to(o.dtype(at::kFloat)) : at::Tensor()};
  p.dy = at::randn({c.batch, c.T, c.H, c.P}, at::kDouble).to(o.dtype(xt));
  if (c.d_final) p.d_final = at::randn({c.batch, c.H, c.P, c.N}, at::kDouble).to(o.dtype(at::kFloat));
  return p;
}

enum class Form { kNaive, kChunk };

// Gradients of sum(y dy) + sum(final_state d_final) by autograd through `form`, every leaf moved to the CPU and
// (fp64 = true) to fp64 first. Undefined leaves give undefined gradients.
std::vector<at::Tensor> cpu_grads(const Problem& p, Form form, bool fp64) {
  std::vector<at::Tensor> L = p.leaves;
  for (auto& l : L)
    if (l.defined()) l = (fp64 ? l.to(at::kCPU, at::kDouble) : l.cpu()).detach().requires_grad_(true);
  const SsdOutput o = form == Form::kNaive ? ssd_naive(L[0], L[1], L[2], L[3], L[4], L[5], L[6])
                                           : ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 256);
  const at::ScalarType ct = fp64 ? at::kDouble : at::kFloat;
  at::Tensor loss = (o.y.to(ct) * p.dy.to(at::kCPU, ct)).sum();
  if (p.d_final.defined()) loss = loss + (o.final_state.to(ct) * p.d_final.to(at::kCPU, ct)).sum();
  loss.backward();
  std::vector<at::Tensor> g;
  for (auto& l : L) g.push_back(l.defined() ? l.grad() : at::Tensor());
  return g;
}

std::vector<at::Tensor> as_list(const kernels::SsdGrads& g) {
  return {g.dx, g.ddt, g.dA, g.dB, g.dC, g.dD, g.d_initial_state};
}
const char* const kNames[] = {"dx", "ddt", "dA", "dB", "dC", "dD", "dstate"};

void check_backward(const Case& c, at::ScalarType xt, uint64_t seed) {
  const Problem p = make(c, xt, seed, at::kCUDA);
  const std::vector<at::Tensor> ref = cpu_grads(p, Form::kNaive, /*fp64=*/true);
  const std::vector<at::Tensor> aten = cpu_grads(p, Form::kChunk, /*fp64=*/false);
  const auto& L = p.leaves;
  const std::vector<at::Tensor> got =
      as_list(kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], p.dy, p.d_final));
  const std::string t = tag(c, xt);
  std::printf("  bwd %-72s", t.c_str());
  for (size_t i = 0; i < got.size(); ++i) {
    if (!L[i].defined()) {
      EXPECT_FALSE(got[i].defined()) << kNames[i] << " given without its input, " << t;
      continue;
    }
    ASSERT_TRUE(got[i].defined()) << kNames[i] << " " << t;
    ASSERT_EQ(got[i].sizes(), L[i].sizes()) << kNames[i] << " " << t;
    EXPECT_EQ(got[i].scalar_type(), L[i].scalar_type()) << kNames[i] << " " << t;
    EXPECT_TRUE(got[i].is_cuda()) << kNames[i] << " " << t;
    const double e = rel_err(got[i], ref[i]), a = rel_err(aten[i], ref[i]);
    std::printf(" %s %.1e(%.0e)", kNames[i], e, a);
    EXPECT_LE(e, 4.0 * a + kFloor) << kNames[i] << " " << t;
  }
  std::printf("\n");
}

TEST(SsdBwdCuda, GradientsEqualFp64AutogradAcrossShapes) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 40;
  const auto f32 = at::kFloat, bf = at::kBFloat16, f16 = at::kHalf;
  // Lengths around the chunk of 64; the 1B plans' head (P = N = 64), C per head, one B group.
  for (int64_t T : {1, 2, 63, 64, 65, 129, 333})
    check_backward({1, T, 4, 64, 64, 1, 4, T % 2 == 1, T % 3 != 0, T % 4 != 1}, f32, seed++);
  check_backward({2, 200, 3, 128, 128, 1, 3, true, true, true}, bf, seed++);    // 3B/Qwen heads, mixer dtypes
  check_backward({1, 517, 2, 128, 64, 2, 2, true, false, true}, bf, seed++);
  check_backward({2, 77, 8, 64, 128, 2, 8, false, true, false}, f32, seed++);   // Zebra: B per kv group
  check_backward({1, 95, 6, 48, 16, 3, 2, true, true, true}, f16, seed++);      // odd dims, B and C groups differ
  check_backward({3, 1, 2, 100, 96, 1, 1, true, true, true}, bf, seed++);
  check_backward({1, 1000, 2, 64, 64, 1, 2, true, true, true}, bf, seed++);     // 16 chunks
  check_backward({1, 131, 4, 64, 64, 4, 4, false, false, false}, f32, seed++);  // training's usual call
}

// Each gradient's terms alone: only the final state's gradient (the readout of y untouched), and only dy.
TEST(SsdBwdCuda, GradientsFromTheFinalStateAloneAndFromYAlone) {
  HYLO_REQUIRE_CUDA();
  const Case c{1, 150, 3, 64, 64, 1, 3, true, true, true};
  Problem p = make(c, at::kFloat, 90, at::kCUDA);
  const Problem keep = p;
  p.dy = at::zeros_like(p.dy);
  for (int use : {0, 1}) {
    if (use == 1) p = keep, p.d_final = at::Tensor();
    const std::vector<at::Tensor> ref = cpu_grads(p, Form::kNaive, true);
    const std::vector<at::Tensor> aten = cpu_grads(p, Form::kChunk, false);
    const auto& L = p.leaves;
    const std::vector<at::Tensor> got =
        as_list(kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], p.dy, p.d_final));
    std::printf("  %s:", use == 0 ? "final state only" : "y only");
    for (size_t i = 0; i < got.size(); ++i) {
      const double e = rel_err(got[i], ref[i]), a = rel_err(aten[i], ref[i]);
      std::printf(" %s %.1e(%.0e)", kNames[i], e, a);
      EXPECT_LE(e, 4.0 * a + kFloor) << kNames[i] << " use " << use;
    }
    std::printf("\n");
  }
}

TEST(SsdBwdCuda, BackwardIsDeterministic) {
  HYLO_REQUIRE_CUDA();  // no atomics: two calls give the same bits (a race would show here)
  const Problem p = make({2, 300, 4, 128, 128, 2, 4, true, true, true}, at::kBFloat16, 91, at::kCUDA);
  const auto& L = p.leaves;
  const auto a = as_list(kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], p.dy, p.d_final));
  const auto b = as_list(kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], p.dy, p.d_final));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << kNames[i];
}

bool through_wrapper(const at::Tensor& y) {
  return y.grad_fn() && y.grad_fn()->name().find("SsdChunkFn") != std::string::npos;
}

// ssd_chunk on CUDA with inputs that need a gradient runs the wrapper: its outputs are the forward kernel's and its
// gradients the backward kernel's, for each input that requires one, from y alone, the final state alone, or both.
TEST(SsdBwdCuda, OpUsesTheAutogradWrapperWhenGradientsAreNeeded) {
  HYLO_REQUIRE_CUDA();
  const Problem base = make({2, 150, 4, 64, 64, 2, 4, true, true, true}, at::kBFloat16, 92, at::kCUDA);
  for (bool with_state : {true, false})
    for (bool with_D : {true, false})
      for (int use : {0, 1, 2}) {  // 0: y and final state, 1: y only, 2: final state only
        std::vector<at::Tensor> L = base.leaves;
        if (!with_state) L[6] = at::Tensor();
        if (!with_D) L[5] = at::Tensor();
        const SsdOutput fwd = kernels::ssd_chunk_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6]);
        for (auto& l : L)
          if (l.defined()) l = l.detach().clone().requires_grad_(true);
        const SsdOutput r = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 256);
        const std::string t = "state " + std::to_string(with_state) + " D " + std::to_string(with_D) + " use " +
                              std::to_string(use);
        ASSERT_TRUE(through_wrapper(r.y)) << t;
        EXPECT_TRUE(at::equal(r.y, fwd.y)) << "the op did not run the chunk kernel, " << t;
        EXPECT_TRUE(at::equal(r.final_state, fwd.final_state)) << t;
        at::Tensor loss = use == 2 ? (r.final_state * base.d_final).sum() : (r.y.to(at::kFloat) * base.dy).sum();
        if (use == 0) loss = loss + (r.final_state * base.d_final).sum();
        loss.backward();
        const at::Tensor dy = use == 2 ? at::zeros_like(base.dy) : base.dy;
        const auto want = as_list(kernels::ssd_chunk_backward_cuda(
            base.leaves[0], base.leaves[1], base.leaves[2], base.leaves[3], base.leaves[4],
            with_D ? base.leaves[5] : at::Tensor(), with_state ? base.leaves[6] : at::Tensor(), dy,
            use == 1 ? at::Tensor() : base.d_final));
        for (size_t i = 0; i < L.size(); ++i)
          if (L[i].defined()) EXPECT_TRUE(at::equal(L[i].grad(), want[i])) << kNames[i] << " " << t;
      }
  // Only x requires a gradient (the others are constants): x gets the kernel's, in its dtype.
  at::Tensor x = base.leaves[0].detach().clone().requires_grad_(true);
  const auto& L = base.leaves;
  const SsdOutput r = ssd_chunk(x, L[1], L[2], L[3], L[4], L[5], L[6], 256);
  ASSERT_TRUE(through_wrapper(r.y));
  (r.y.to(at::kFloat) * base.dy.to(at::kFloat)).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().scalar_type(), at::kBFloat16);
  const auto want = kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], base.dy, {});
  EXPECT_TRUE(at::equal(x.grad(), want.dx));
}

// The switches: HYLO_SSD_KERNEL_BACKWARD=0 and HYLO_SSD_KERNELS=0 keep gradient-needing calls on the ATen form (on
// the GPU, same gradients to fp32 roundoff); unsupported shapes (P = 160) and fp64 take it always.
TEST(SsdBwdCuda, SwitchesAndUnsupportedShapesKeepTheAtenForm) {
  HYLO_REQUIRE_CUDA();
  const Case c{1, 130, 2, 64, 64, 1, 2, true, true, true};
  const Problem p = make(c, at::kFloat, 93, at::kCUDA);
  const std::vector<at::Tensor> ref = cpu_grads(p, Form::kNaive, true);
  for (const char* var : {"HYLO_SSD_KERNEL_BACKWARD", "HYLO_SSD_KERNELS"}) {
    setenv(var, "0", 1);
    std::vector<at::Tensor> L = p.leaves;
    for (auto& l : L) l = l.detach().clone().requires_grad_(true);
    const SsdOutput r = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 64);
    unsetenv(var);
    EXPECT_FALSE(through_wrapper(r.y)) << var;
    EXPECT_TRUE(r.y.is_cuda()) << var;
    ((r.y * p.dy).sum() + (r.final_state * p.d_final).sum()).backward();
    for (size_t i = 0; i < L.size(); ++i) EXPECT_LT(rel_err(L[i].grad(), ref[i]), 1e-4) << kNames[i] << " " << var;
  }
  const Case wide{1, 70, 2, 160, 48, 1, 2, true, true, true};
  const Problem w = make(wide, at::kFloat, 94, at::kCUDA);
  std::vector<at::Tensor> L = w.leaves;
  for (auto& l : L) l = l.detach().clone().requires_grad_(true);
  const SsdOutput r = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 64);
  EXPECT_FALSE(through_wrapper(r.y));
  ((r.y * w.dy).sum() + (r.final_state * w.d_final).sum()).backward();
  const std::vector<at::Tensor> wref = cpu_grads(w, Form::kNaive, true);
  for (size_t i = 0; i < L.size(); ++i) EXPECT_LT(rel_err(L[i].grad(), wref[i]), 1e-4) << kNames[i] << " P=160";
}

// The crossover (ops/ssd.cpp, chunk_kernel_pays): with a 128 x 128 state, up to 40,960 batch x token x head rows
// ssd_chunk runs the kernels, past it the ATen form, forward and with gradients; HYLO_SSD_KERNELS=1 keeps the
// kernels past it and =0 the ATen form below it. The forward routes are told apart bit for bit.
TEST(SsdBwdCuda, LargeStatesPastTheCrossoverTakeTheAtenForm) {
  HYLO_REQUIRE_CUDA();
  at::NoGradGuard no_grad;  // the forward-only route first
  for (int64_t T : {640, 641}) {  // 640 x 64 heads = 40,960 rows: the last one on the kernels
    const Problem p = make({1, T, 64, 128, 128, 8, 64, true, true, false}, at::kBFloat16, 95 + T, at::kCUDA);
    const auto& L = p.leaves;
    const SsdOutput kernel = kernels::ssd_chunk_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6]);
    setenv("HYLO_SSD_KERNELS", "0", 1);
    const SsdOutput aten = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 256);
    setenv("HYLO_SSD_KERNELS", "1", 1);
    const SsdOutput forced = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 256);
    unsetenv("HYLO_SSD_KERNELS");
    const SsdOutput chosen = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 256);
    ASSERT_FALSE(at::equal(kernel.y, aten.y)) << "the two forms must differ in rounding for this test to see a route";
    EXPECT_TRUE(at::equal(forced.y, kernel.y)) << "HYLO_SSD_KERNELS=1 did not run the kernel, T=" << T;
    EXPECT_TRUE(at::equal(chosen.y, T == 640 ? kernel.y : aten.y)) << "wrong route by default, T=" << T;
    EXPECT_TRUE(at::equal(chosen.final_state, T == 640 ? kernel.final_state : aten.final_state)) << "T=" << T;
  }
  {
    at::AutoGradMode grad(true);
    for (int64_t T : {640, 641}) {
      const Problem p = make({1, T, 64, 128, 128, 8, 64, true, true, true}, at::kBFloat16, 97, at::kCUDA);
      std::vector<at::Tensor> L = p.leaves;
      for (auto& l : L) l = l.detach().clone().requires_grad_(true);
      const SsdOutput r = ssd_chunk(L[0], L[1], L[2], L[3], L[4], L[5], L[6], 256);
      EXPECT_EQ(through_wrapper(r.y), T == 640) << "gradient route, T=" << T;
    }
  }
}

TEST(SsdBwdCuda, RejectsMismatchedUpstreamGradients) {
  HYLO_REQUIRE_CUDA();
  const Problem p = make({1, 70, 2, 64, 64, 1, 2, true, true, true}, at::kFloat, 95, at::kCUDA);
  const auto& L = p.leaves;
  EXPECT_THROW(kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], p.dy.narrow(1, 0, 69),
                                                p.d_final),
               Error);
  EXPECT_THROW(kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], p.dy,
                                                p.d_final.narrow(2, 0, 32)),
               Error);
}
#else
TEST(SsdBwdCuda, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }
#endif

}  // namespace
}  // namespace hylo
