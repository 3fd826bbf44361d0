// The CUDA SSD kernels (kernels/ssd) equal the ATen forms (ops/ssd) on fresh random inputs with a trained
// Mamba2's magnitudes: lengths 1, chunk-1, chunk, chunk+1 and odd lengths over several chunks, several heads,
// head dims, d_state values and group layouts, with and without an initial state and D; outputs NaN-poisoned
// before every call. The error against an fp64 reference (ssd_naive on fp64 copies of exactly the rounded inputs
// the kernel sees) is bounded by 4x the ATen form's own error in the working dtype (the same computation on the
// CPU) plus a floor of 1e-5: both kernels do all arithmetic in fp32, like the ATen form, so they differ from it
// only in summation order (a few dozen fp32 roundoffs on these sums). With bf16/fp16 outputs both forms carry the
// output rounding, which the 4x covers.
// Also: the decode kernel in place, a prefill split in two (state carried) equals one go, the ops route CUDA
// tensors to the kernels when no gradient is needed, and unsupported calls stay on the GPU in the ATen form.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kernels_gdn/cuda_test_util.h"
#include "mamba2/test_util.h"
#include "hylo/ops/ssd.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/ssd/ssd_cuda.h"
#endif

namespace hylo {
namespace {

using kernels_test::rel_err;

#ifdef HYLO_HAVE_CUDA
constexpr double kFloor = 1e-5;

struct Case {
  int64_t batch, T, H, P, N, G, Gc;
  bool state, with_D;
};
std::string tag(const Case& c, at::ScalarType xt, at::ScalarType dtt) {
  return "B=" + std::to_string(c.batch) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " P=" + std::to_string(c.P) + " N=" + std::to_string(c.N) + " G=" + std::to_string(c.G) +
         " Gc=" + std::to_string(c.Gc) + (c.state ? " +state" : "") + (c.with_D ? " +D" : "") + " " +
         c10::toString(xt) + "/" + c10::toString(dtt);
}

// The inputs in the dtypes a caller passes: x, B, C, D in xt (the model dtype), dt and A in dtt (the mixer
// passes fp32), the state fp32.
test::SsdInputs typed(const Case& c, at::ScalarType xt, at::ScalarType dtt, uint64_t seed) {
  test::SsdInputs in = test::make_ssd_inputs(c.batch, c.T, c.H, c.P, c.N, c.G, c.Gc, c.state, seed);
  in.x = in.x.to(xt), in.B = in.B.to(xt), in.C = in.C.to(xt);
  in.D = c.with_D ? in.D.to(xt) : at::Tensor();
  in.dt = in.dt.to(dtt), in.A = in.A.to(dtt);
  if (in.state.defined()) in.state = in.state.to(at::kFloat);
  return in;
}
test::SsdInputs moved(test::SsdInputs in, at::Device dev, bool fp64 = false) {
  for (at::Tensor* t : in.all())
    if (t->defined()) *t = fp64 ? t->to(dev, at::kDouble) : t->to(dev);
  return in;
}
// fp64 truth on exactly the values the kernel sees.
SsdOutput reference(const test::SsdInputs& in) {
  const test::SsdInputs d = moved(in, at::kCPU, /*fp64=*/true);
  return ssd_naive(d.x, d.dt, d.A, d.B, d.C, d.D, d.state);
}
at::Tensor token(const at::Tensor& t) { return t.select(1, 0); }  // [B, 1, ...] -> [B, ...]

void expect_close(const std::string& what, const SsdOutput& got, const SsdOutput& aten, const SsdOutput& ref,
                  at::ScalarType xt) {
  ASSERT_EQ(got.y.sizes(), ref.y.sizes()) << what;
  ASSERT_EQ(got.y.scalar_type(), xt) << what;
  ASSERT_EQ(got.final_state.sizes(), ref.final_state.sizes()) << what;
  ASSERT_EQ(got.final_state.scalar_type(), at::kFloat) << what;
  const double ey = rel_err(got.y, ref.y), es = rel_err(got.final_state, ref.final_state);
  const double ay = rel_err(aten.y, ref.y), as = rel_err(aten.final_state, ref.final_state);
  std::printf("  %-78s y %.2e (aten %.2e)  state %.2e (aten %.2e)\n", what.c_str(), ey, ay, es, as);
  EXPECT_LE(ey, 4.0 * ay + kFloor) << what;
  EXPECT_LE(es, 4.0 * as + kFloor) << what;
}

void check_chunk(const Case& c, at::ScalarType xt, at::ScalarType dtt, uint64_t seed) {
  const test::SsdInputs cpu = typed(c, xt, dtt, seed);
  const SsdOutput ref = reference(cpu);
  const SsdOutput aten = ssd_chunk(cpu.x, cpu.dt, cpu.A, cpu.B, cpu.C, cpu.D, cpu.state, 256);
  const test::SsdInputs g = moved(cpu, at::kCUDA);
  const SsdOutput got = kernels::ssd_chunk_cuda(g.x, g.dt, g.A, g.B, g.C, g.D, g.state);
  expect_close("chunk " + tag(c, xt, dtt), got, aten, ref, xt);
}

TEST(SsdCuda, ChunkEqualsReferenceAcrossShapes) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 1;
  const auto f32 = at::kFloat, bf = at::kBFloat16, f16 = at::kHalf;
  // Lengths around the kernel's chunk of 64, both d_state values and head dims of the plans (recipes/plans/*m2*).
  for (int64_t T : {1, 2, 63, 64, 65, 129, 333})
    check_chunk({1, T, 4, 64, 64, 1, 4, T % 2 == 1, true}, f32, f32, seed++);
  check_chunk({2, 200, 3, 128, 128, 1, 3, true, true}, bf, f32, seed++);  // the mixer's dtypes
  check_chunk({1, 517, 2, 128, 64, 2, 2, true, false}, bf, f32, seed++);
  check_chunk({2, 77, 8, 64, 128, 2, 8, false, true}, f32, f32, seed++);   // Zebra: B per kv group, C per head
  check_chunk({1, 95, 6, 48, 16, 3, 2, true, true}, f16, f16, seed++);     // odd P and N, B and C groups differ
  check_chunk({3, 1, 2, 100, 96, 1, 1, true, true}, bf, bf, seed++);
  check_chunk({1, 1000, 2, 64, 64, 1, 2, true, true}, bf, f32, seed++);    // 16 chunks
}

TEST(SsdCuda, ChunkSplitPrefillEqualsOneGo) {
  HYLO_REQUIRE_CUDA();
  const Case c{1, 300, 2, 64, 128, 1, 2, true, true};
  const test::SsdInputs g = moved(typed(c, at::kFloat, at::kFloat, 7), at::kCUDA);
  const SsdOutput whole = kernels::ssd_chunk_cuda(g.x, g.dt, g.A, g.B, g.C, g.D, g.state);
  for (int64_t cut : {1, 64, 130}) {
    auto part = [&](const at::Tensor& t, int64_t t0, int64_t n) { return t.narrow(1, t0, n); };
    const int64_t rest = c.T - cut;
    const SsdOutput a = kernels::ssd_chunk_cuda(part(g.x, 0, cut), part(g.dt, 0, cut), g.A, part(g.B, 0, cut),
                                                part(g.C, 0, cut), g.D, g.state);
    const SsdOutput b = kernels::ssd_chunk_cuda(part(g.x, cut, rest), part(g.dt, cut, rest), g.A,
                                                part(g.B, cut, rest), part(g.C, cut, rest), g.D, a.final_state);
    const double ey = rel_err(at::cat({a.y, b.y}, 1), whole.y), es = rel_err(b.final_state, whole.final_state);
    std::printf("  split at %ld vs one go: y %.2e state %.2e\n", static_cast<long>(cut), ey, es);
    EXPECT_LE(ey, kFloor) << "cut " << cut;
    EXPECT_LE(es, kFloor) << "cut " << cut;
  }
}

// The decode kernel over T tokens (the op passes T = 1), against ssd_naive in fp64 and ssd_recurrent token by
// token in the working dtype.
void check_step(const Case& c, at::ScalarType xt, at::ScalarType dtt, bool in_place, uint64_t seed) {
  const test::SsdInputs cpu = typed(c, xt, dtt, seed);
  const SsdOutput ref = reference(cpu);
  SsdOutput aten{at::Tensor(), cpu.state};
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < c.T; ++t) {
    aten = ssd_recurrent(cpu.x.select(1, t), cpu.dt.select(1, t), cpu.A, cpu.B.select(1, t), cpu.C.select(1, t),
                         cpu.D, aten.final_state);
    ys.push_back(aten.y);
  }
  aten.y = at::stack(ys, 1);  // [B, T, H, P]
  const test::SsdInputs g = moved(cpu, at::kCUDA);
  at::Tensor out_state = in_place && g.state.defined() ? g.state.clone() : at::Tensor();
  const SsdOutput got = kernels::ssd_step_cuda(g.x, g.dt, g.A, g.B, g.C, g.D, in_place ? out_state : g.state,
                                               out_state);
  if (in_place && out_state.defined()) EXPECT_EQ(got.final_state.data_ptr(), out_state.data_ptr());
  expect_close(std::string("step ") + (in_place ? "in place " : "") + tag(c, xt, dtt), got, aten, ref, xt);
}

TEST(SsdCuda, StepEqualsReference) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 100;
  for (int64_t N : {32, 64, 96, 128, 256})
    for (int64_t P : {64, 128, 50})
      check_step({2, 1, 3, P, N, 1, 3, true, true}, at::kFloat, at::kFloat, false, seed++);
  check_step({1, 1, 32, 64, 64, 8, 32, true, true}, at::kBFloat16, at::kFloat, true, seed++);   // 1B plans
  check_step({4, 1, 24, 128, 128, 8, 24, true, true}, at::kBFloat16, at::kFloat, true, seed++); // 3B plans
  check_step({1, 1, 9, 64, 64, 3, 9, false, false}, at::kHalf, at::kHalf, false, seed++);       // no state
  check_step({2, 7, 2, 64, 128, 1, 1, true, true}, at::kFloat, at::kFloat, true, seed++);       // several tokens
}

TEST(SsdCuda, OpsRouteToKernelsAndKeepUnsupportedOnGpu) {
  HYLO_REQUIRE_CUDA();
  const Case c{2, 70, 4, 64, 64, 2, 4, true, true};
  const test::SsdInputs cpu = typed(c, at::kBFloat16, at::kFloat, 9);
  const test::SsdInputs g = moved(cpu, at::kCUDA);
  // Same kernel, same launch: bitwise equal.
  const SsdOutput via_op = ssd_chunk(g.x, g.dt, g.A, g.B, g.C, g.D, g.state, 256);
  const SsdOutput direct = kernels::ssd_chunk_cuda(g.x, g.dt, g.A, g.B, g.C, g.D, g.state);
  EXPECT_TRUE(at::equal(via_op.y, direct.y)) << "ssd_chunk did not use the kernel";
  EXPECT_TRUE(at::equal(via_op.final_state, direct.final_state));
  const at::Tensor state_before = g.state.clone();
  const SsdOutput step_op = ssd_recurrent(token(g.x), token(g.dt), g.A, token(g.B), token(g.C), g.D, g.state);
  const SsdOutput step_k = kernels::ssd_step_cuda(g.x.narrow(1, 0, 1), g.dt.narrow(1, 0, 1), g.A,
                                                  g.B.narrow(1, 0, 1), g.C.narrow(1, 0, 1), g.D, g.state);
  EXPECT_EQ(step_op.y.sizes(), (std::vector<int64_t>{c.batch, c.H, c.P}));
  EXPECT_TRUE(at::equal(step_op.y, step_k.y.select(1, 0))) << "ssd_recurrent did not use the kernel";
  EXPECT_TRUE(at::equal(step_op.final_state, step_k.final_state));
  EXPECT_TRUE(at::equal(g.state, state_before)) << "ssd_recurrent modified its input state";
  // The decode loop's in-place form (what the mixer passes): the kernel writes the state itself; a
  // non-contiguous state_out gets the same values through a copy.
  at::Tensor S = g.state.clone();
  const SsdOutput ip = ssd_recurrent(token(g.x), token(g.dt), g.A, token(g.B), token(g.C), g.D, S, S);
  EXPECT_TRUE(ip.final_state.is_same(S));
  EXPECT_TRUE(at::equal(S, step_k.final_state)) << "in-place state differs from the kernel's";
  EXPECT_TRUE(at::equal(ip.y, step_op.y));
  at::Tensor strided = at::full({c.N, c.P, c.H, c.batch}, 7.0f, S.options()).permute({3, 2, 1, 0});  // [B,H,P,N]
  ssd_recurrent(token(g.x), token(g.dt), g.A, token(g.B), token(g.C), g.D, g.state, strided);
  EXPECT_TRUE(at::equal(strided, step_k.final_state)) << "non-contiguous state_out";

  // Unsupported shapes: P 160 (chunk kernel) and N 48 (step kernel) run the ATen form on the GPU.
  const Case wide{1, 70, 2, 160, 48, 1, 2, true, true};
  const test::SsdInputs wc = typed(wide, at::kFloat, at::kFloat, 10);
  const test::SsdInputs wg = moved(wc, at::kCUDA);
  const SsdOutput wr = ssd_chunk(wg.x, wg.dt, wg.A, wg.B, wg.C, wg.D, wg.state, 64);
  EXPECT_TRUE(wr.y.is_cuda() && wr.final_state.is_cuda());
  EXPECT_LT(rel_err(wr.y, reference(wc).y), 1e-4);
  const SsdOutput ws = ssd_recurrent(token(wg.x), token(wg.dt), wg.A, token(wg.B), token(wg.C), wg.D, wg.state);
  EXPECT_TRUE(ws.y.is_cuda());
  const test::SsdInputs w1 = moved(wc, at::kCPU, /*fp64=*/true);
  const SsdOutput ws_ref = ssd_naive(w1.x.narrow(1, 0, 1), w1.dt.narrow(1, 0, 1), w1.A, w1.B.narrow(1, 0, 1),
                                     w1.C.narrow(1, 0, 1), w1.D, w1.state);
  EXPECT_LT(rel_err(ws.y, token(ws_ref.y)), 1e-4);

  // A gradient is needed: ssd_chunk runs its autograd wrapper (ssd_bwd_cuda_test.cpp), the step the ATen form;
  // both stay on the GPU and differentiable.
  const at::Tensor x = g.x.to(at::kFloat).clone().requires_grad_(true);
  const SsdOutput gr = ssd_chunk(x, g.dt, g.A, g.B, g.C, g.D, g.state, 64);
  EXPECT_TRUE(gr.y.requires_grad() && gr.y.is_cuda());
  const SsdOutput gs = ssd_recurrent(token(x), token(g.dt), g.A, token(g.B), token(g.C), g.D, g.state);
  EXPECT_TRUE(gs.y.requires_grad() && gs.y.is_cuda());
}
#else
TEST(SsdCuda, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }
#endif

}  // namespace
}  // namespace hylo
