// The CUDA gated delta kernels (kernels/gated_delta) equal the ATen forms (ops/gated_delta) on fresh random
// inputs: lengths 1, chunk-1, chunk+1 and odd lengths, several heads and head dims, with and without an initial
// state; outputs NaN-poisoned before every call; the error against an fp64 reference (the ATen chunk form on
// fp64 copies of exactly the rounded inputs) is bounded by a small multiple of the ATen form's own error in the
// working dtype plus a floor:
//   step kernel: all fp32 arithmetic (as the ATen form), floor 1e-5 (a few dozen fp32 roundoffs).
//   chunk kernel: tensor-core operands are bf16 (K, Q, V, the UT inverse T, W, U, the per-chunk state h and
//                 v_new, each rounded once, unit roundoff u = 2^-8), fp32 accumulation; each output is a sum of
//                 products of such operands, so its relative error is a few u: floor 4u = 1.6e-2.
// Splitting a prefill in two (state carried) and splitting the sequence into segments (context parallel) give the
// same function; the op routes CUDA tensors to the kernels when no gradient is needed, else/unsupported shapes
// stay on the GPU in the ATen form.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "../gdn/gdn_test_util.h"
#include "cuda_test_util.h"
#include "hylo/ops/gated_delta.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"
#endif

namespace hylo {
namespace {

using gdn_test::DeltaInputs;
using kernels_test::rel_err;

#ifdef HYLO_HAVE_CUDA
// Inputs in the dtypes a caller passes: q/k in qk_t, v in v_t, g/beta fp32, state fp32.
struct Typed {
  at::Tensor q, k, v, g, beta, state;
};
Typed typed(const DeltaInputs& in, at::ScalarType qk_t, at::ScalarType v_t) {
  return {in.q.to(qk_t), in.k.to(qk_t), in.v.to(v_t), in.g.to(at::kFloat), in.beta.to(at::kFloat),
          in.state.defined() ? in.state.to(at::kFloat) : in.state};
}
Typed on_gpu(const Typed& t) {
  auto g = [](const at::Tensor& x) { return x.defined() ? x.to(at::kCUDA) : x; };
  return {g(t.q), g(t.k), g(t.v), g(t.g), g(t.beta), g(t.state)};
}
// fp64 reference on exactly the values the kernel sees.
GatedDeltaOutput reference(const Typed& t, double scale) {
  auto d = [](const at::Tensor& x) { return x.defined() ? x.to(at::kCPU, at::kDouble) : x; };
  return gated_delta_chunk(d(t.q), d(t.k), d(t.v), d(t.g), d(t.beta), scale, d(t.state), 64);
}

struct Case {
  int64_t B, T, H, Dk, Dv;
  bool state;
};
std::string tag(const Case& c, const char* types) {
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " Dk=" + std::to_string(c.Dk) + " Dv=" + std::to_string(c.Dv) + " state=" + std::to_string(c.state) + " " +
         types;
}

constexpr double kChunkFloor = 4.0 / 256.0;  // 4 u_bf16
constexpr double kStepFloor = 1e-5;

void check_chunk(const Case& c, at::ScalarType qk_t, at::ScalarType v_t, int segments, uint64_t seed) {
  const DeltaInputs in = gdn_test::random_inputs(c.B, c.T, c.H, c.Dk, c.Dv, c.state, seed);
  const double scale = 1.0 / std::sqrt(double(c.Dk));
  const Typed cpu = typed(in, qk_t, v_t);
  const GatedDeltaOutput ref = reference(cpu, scale);
  const GatedDeltaOutput aten = gated_delta_chunk(cpu.q, cpu.k, cpu.v, cpu.g, cpu.beta, scale, cpu.state, 64);
  const Typed g = on_gpu(cpu);
  const GatedDeltaOutput got = kernels::gated_delta_chunk_cuda(g.q, g.k, g.v, g.g, g.beta, scale, g.state, segments);
  const std::string t = tag(c, (std::string(c10::toString(qk_t)) + "/" + c10::toString(v_t) + " segments=" +
                                std::to_string(segments)).c_str());
  ASSERT_EQ(got.o.sizes(), aten.o.sizes()) << t;
  ASSERT_EQ(got.o.scalar_type(), v_t) << t;
  ASSERT_EQ(got.final_state.sizes(), aten.final_state.sizes()) << t;
  const double eo = rel_err(got.o, ref.o), es = rel_err(got.final_state, ref.final_state);
  const double ao = rel_err(aten.o, ref.o), as = rel_err(aten.final_state, ref.final_state);
  std::printf("  chunk %-70s o %.2e (aten %.2e)  state %.2e (aten %.2e)\n", t.c_str(), eo, ao, es, as);
  EXPECT_LE(eo, 4.0 * ao + kChunkFloor) << t;
  EXPECT_LE(es, 4.0 * as + kChunkFloor) << t;
}

TEST(GatedDeltaCuda, ChunkEqualsReferenceAcrossShapes) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 11;
  const auto bf = at::kBFloat16, f32 = at::kFloat;
  check_chunk({1, 1, 2, 64, 64, false}, bf, bf, 0, seed++);
  check_chunk({2, 63, 3, 128, 128, true}, bf, bf, 0, seed++);
  check_chunk({1, 64, 1, 64, 192, true}, f32, bf, 0, seed++);     // the mixer's dtypes: fp32 q/k, bf16 v
  check_chunk({1, 65, 2, 128, 256, true}, f32, f32, 0, seed++);
  check_chunk({2, 129, 2, 256, 512, true}, bf, bf, 0, seed++);
  check_chunk({1, 333, 3, 128, 256, false}, bf, bf, 0, seed++);   // odd length, several chunks
  check_chunk({1, 517, 2, 256, 128, true}, f32, bf, 0, seed++);
}

TEST(GatedDeltaCuda, ChunkContextParallelEqualsOneSegment) {
  HYLO_REQUIRE_CUDA();
  const Case c{1, 1000, 2, 128, 256, true};  // 16 chunks
  for (int P : {1, 3, 4, 16}) check_chunk(c, at::kBFloat16, at::kBFloat16, P, 99);
  check_chunk({1, 2049, 1, 256, 512, true}, at::kBFloat16, at::kBFloat16, 8, 100);
  check_chunk({1, 700, 3, 64, 64, false}, at::kBFloat16, at::kBFloat16, 5, 101);
}

// The state walk's tiling (the default walk per Dk: the register walk's 64 rows of S per block, 4 warps x 16 value
// channels, so Dv 256 gives 4 blocks per head at Dk 128; the shared-memory walk at Dk 256); long sequences (64+
// chunks) with one segment and with the automatic choice, at the benchmark's head shapes, and one chunk / two
// chunks / an odd chunk count.
TEST(GatedDeltaCuda, ChunkStateWalkTilingAndLength) {
  HYLO_REQUIRE_CUDA();
  const auto bf = at::kBFloat16;
  check_chunk({1, 4096, 3, 128, 256, true}, bf, bf, 1, 201);
  check_chunk({1, 4100, 3, 128, 256, true}, bf, bf, 0, 202);
  check_chunk({1, 4096, 6, 256, 512, true}, bf, bf, 1, 203);
  check_chunk({1, 4033, 6, 256, 512, false}, bf, bf, 0, 204);
  check_chunk({2, 64, 3, 256, 512, true}, bf, bf, 1, 205);    // one chunk
  check_chunk({1, 128, 6, 128, 384, true}, bf, bf, 1, 206);   // two chunks, 6 value tiles
  check_chunk({1, 320, 2, 64, 512, true}, bf, bf, 1, 207);    // five chunks
}

// HYLO_GDN_STATE_KERNEL=registers / =shared force the register-resident or the shared-memory state walk (the default
// is registers up to Dk 128), HYLO_GDN_OUTPUT_KERNEL=tiles the earlier output pass (one block per value tile); all
// give the same outputs, and the default is the walk its Dk calls for.
TEST(GatedDeltaCuda, ChunkDefaultAndEarlierKernelsAgree) {
  HYLO_REQUIRE_CUDA();
  for (auto [T, H, Dk, Dv, P] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int>>{
           {1000, 3, 128, 256, 1}, {1000, 3, 128, 256, 4}, {777, 2, 256, 512, 1}, {200, 2, 64, 128, 3}}) {
    const DeltaInputs in = gdn_test::random_inputs(1, T, H, Dk, Dv, true, 300 + T);
    const double scale = 1.0 / std::sqrt(double(Dk));
    const Typed g = on_gpu(typed(in, at::kBFloat16, at::kBFloat16));
    auto run = [&](const char* walk, const char* output) {
      if (walk) ::setenv("HYLO_GDN_STATE_KERNEL", walk, 1);
      if (output) ::setenv("HYLO_GDN_OUTPUT_KERNEL", output, 1);
      GatedDeltaOutput r = kernels::gated_delta_chunk_cuda(g.q, g.k, g.v, g.g, g.beta, scale, g.state, P);
      ::unsetenv("HYLO_GDN_STATE_KERNEL");
      ::unsetenv("HYLO_GDN_OUTPUT_KERNEL");
      return r;
    };
    // Each walk forced (the default picks one by Dk), and the earlier output pass beside the default one.
    const GatedDeltaOutput now = run("registers", nullptr), shr = run("shared", nullptr),
                           tiles = run("registers", "tiles");
    const double eo = rel_err(now.o, shr.o), es = rel_err(now.final_state, shr.final_state);
    const double to = rel_err(now.o, tiles.o), ts = rel_err(now.final_state, tiles.final_state);
    const GatedDeltaOutput dflt = run(nullptr, nullptr);
    EXPECT_TRUE(at::equal(dflt.o, Dk <= 128 ? now.o : shr.o)) << "the default walk is registers up to Dk 128";
    std::printf("  register vs shared walk T=%ld H=%ld Dk=%ld Dv=%ld P=%d: o %.2e state %.2e, "
                "per-tile output o %.2e state %.2e\n", long(T), long(H), long(Dk), long(Dv), P, eo, es, to, ts);
    EXPECT_LE(eo, kChunkFloor);
    EXPECT_LE(es, kChunkFloor);
    EXPECT_LE(to, kChunkFloor);
    EXPECT_EQ(ts, 0.0);  // the output pass does not touch the state
  }
}

TEST(GatedDeltaCuda, ChunkSplitPrefillEqualsOneGo) {
  HYLO_REQUIRE_CUDA();
  const DeltaInputs in = gdn_test::random_inputs(1, 300, 2, 128, 128, true, 5);
  const double scale = 1.0 / std::sqrt(128.0);
  const Typed g = on_gpu(typed(in, at::kBFloat16, at::kBFloat16));
  const GatedDeltaOutput whole = kernels::gated_delta_chunk_cuda(g.q, g.k, g.v, g.g, g.beta, scale, g.state);
  auto part = [&](int64_t t0, int64_t n, const at::Tensor& s) {
    return kernels::gated_delta_chunk_cuda(g.q.narrow(1, t0, n), g.k.narrow(1, t0, n), g.v.narrow(1, t0, n),
                                           g.g.narrow(1, t0, n), g.beta.narrow(1, t0, n), scale, s);
  };
  const GatedDeltaOutput a = part(0, 130, g.state);
  const GatedDeltaOutput b = part(130, 170, a.final_state);
  const double eo = rel_err(at::cat({a.o, b.o}, 1), whole.o), es = rel_err(b.final_state, whole.final_state);
  std::printf("  split vs one go: o %.2e state %.2e\n", eo, es);
  EXPECT_LE(eo, kChunkFloor);
  EXPECT_LE(es, kChunkFloor);
}

void check_step(const Case& c, at::ScalarType qk_t, at::ScalarType v_t, bool in_place, uint64_t seed) {
  const DeltaInputs in = gdn_test::random_inputs(c.B, c.T, c.H, c.Dk, c.Dv, c.state, seed);
  const double scale = 1.0 / std::sqrt(double(c.Dk));
  const Typed cpu = typed(in, qk_t, v_t);
  const GatedDeltaOutput ref = reference(cpu, scale);
  const GatedDeltaOutput aten = gated_delta_recurrent(cpu.q, cpu.k, cpu.v, cpu.g, cpu.beta, scale, cpu.state);
  const Typed g = on_gpu(cpu);
  at::Tensor out_state = in_place && g.state.defined() ? g.state.clone() : at::Tensor();
  const GatedDeltaOutput got = kernels::gated_delta_step_cuda(g.q, g.k, g.v, g.g, g.beta, scale,
                                                              in_place ? out_state : g.state, out_state);
  const std::string t = tag(c, (std::string(c10::toString(qk_t)) + "/" + c10::toString(v_t) +
                                (in_place ? " in-place" : "")).c_str());
  ASSERT_EQ(got.o.sizes(), aten.o.sizes()) << t;
  ASSERT_EQ(got.o.scalar_type(), v_t) << t;
  if (in_place && out_state.defined()) EXPECT_EQ(got.final_state.data_ptr(), out_state.data_ptr()) << t;
  const double eo = rel_err(got.o, ref.o), es = rel_err(got.final_state, ref.final_state);
  const double ao = rel_err(aten.o, ref.o), as = rel_err(aten.final_state, ref.final_state);
  std::printf("  step  %-70s o %.2e (aten %.2e)  state %.2e (aten %.2e)\n", t.c_str(), eo, ao, es, as);
  EXPECT_LE(eo, 4.0 * ao + kStepFloor) << t;
  EXPECT_LE(es, 4.0 * as + kStepFloor) << t;
}

TEST(GatedDeltaCuda, StepEqualsReference) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 40;
  for (int64_t Dk : {32, 64, 128, 256})
    for (int64_t Dv : {64, 100, 512})
      check_step({2, 1, 3, Dk, Dv, true}, at::kFloat, at::kFloat, false, seed++);
  check_step({1, 1, 2, 128, 256, true}, at::kFloat, at::kBFloat16, true, seed++);   // the mixer's decode dtypes
  check_step({1, 5, 2, 128, 256, false}, at::kBFloat16, at::kBFloat16, false, seed++);
  check_step({3, 3, 1, 256, 512, true}, at::kFloat, at::kFloat, true, seed++);
}

TEST(GatedDeltaCuda, OpRoutesToKernelsAndKeepsUnsupportedOnGpu) {
  HYLO_REQUIRE_CUDA();
  const DeltaInputs in = gdn_test::random_inputs(1, 70, 2, 64, 64, true, 77);
  const Typed g = on_gpu(typed(in, at::kFloat, at::kBFloat16));
  const double scale = 0.125;
  const GatedDeltaOutput via_op = gated_delta_chunk(g.q, g.k, g.v, g.g, g.beta, scale, g.state, 64);
  const GatedDeltaOutput direct = kernels::gated_delta_chunk_cuda(g.q, g.k, g.v, g.g, g.beta, scale, g.state);
  EXPECT_TRUE(at::equal(via_op.o, direct.o)) << "chunk op did not use the kernel";
  const GatedDeltaOutput step_op = gated_delta_recurrent(g.q, g.k, g.v, g.g, g.beta, scale, g.state);
  const GatedDeltaOutput step_k = kernels::gated_delta_step_cuda(g.q, g.k, g.v, g.g, g.beta, scale, g.state);
  EXPECT_TRUE(at::equal(step_op.o, step_k.o)) << "recurrent op did not use the kernel";

  // Dk 48: no kernel; the ATen form runs on the GPU and agrees with the fp64 reference.
  const DeltaInputs odd = gdn_test::random_inputs(1, 70, 2, 48, 64, true, 78);
  const Typed go = on_gpu(typed(odd, at::kFloat, at::kFloat));
  const GatedDeltaOutput r = gated_delta_chunk(go.q, go.k, go.v, go.g, go.beta, scale, go.state, 64);
  EXPECT_TRUE(r.o.is_cuda() && r.final_state.is_cuda());
  EXPECT_LT(rel_err(r.o, reference(typed(odd, at::kFloat, at::kFloat), scale).o), 1e-4);

  // A gradient is needed: the ATen form (differentiable) runs, on the GPU.
  at::Tensor v = g.v.to(at::kFloat).clone().requires_grad_(true);
  const GatedDeltaOutput gr = gated_delta_chunk(g.q, g.k, v, g.g, g.beta, scale, g.state, 64);
  EXPECT_TRUE(gr.o.requires_grad() && gr.o.is_cuda());
}
#else
TEST(GatedDeltaCuda, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }
#endif

}  // namespace
}  // namespace hylo
