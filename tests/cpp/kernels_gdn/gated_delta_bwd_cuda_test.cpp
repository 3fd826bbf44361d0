// The CUDA chunked backward of the gated delta rule (gated_delta_chunk_backward_cuda) and its autograd wrapper:
// the gradients of q, k, v, g, beta and the initial state equal fp64 autograd through the ATen chunk form
// (ops::gated_delta_chunk on fp64 copies of exactly the rounded inputs and upstream gradients), at lengths 1, 63,
// 64, 65, odd lengths and 2K, several heads and head dims including the HyLo shapes (3 heads, K 128, V 256) and
// (6 heads, K 256, V 512), with and without an initial state and a final-state gradient. Outputs are NaN-poisoned.
//
// Tolerance, per gradient: relative RMS error <= 4x the same function's error in fp32 (ATen autograd on fp32 copies,
// chunk 32 so the op keeps the ATen form on the GPU) plus a floor. The kernels round their tensor-core operands to
// bf16 once each (unit roundoff u = 2^-8) and accumulate in fp32, so dq, dk, dv and d initial_state, each a sum of
// products of such operands, carry a few u: floor 4u = 1.6e-2, as the forward's. dg and dbeta are sums over the
// chunk of terms of both signs (the reverse cumulative sum of d gamma, the rows of dA o K K^T), which cancel and
// leave a larger relative error: floor 8u = 3.1e-2 (fla's own tests allow 2e-2 on these two against an fp32
// reference).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "../gdn/gdn_chunk_backward_ref.h"
#include "../gdn/gdn_test_util.h"
#include "cuda_test_util.h"
#include "hylo/core/result.h"
#include "hylo/ops/gated_delta.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/gated_delta/chunk_backward_trace.h"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"
#endif

namespace hylo {
namespace {

#ifdef HYLO_HAVE_CUDA
using kernels_test::rel_err;

struct Case {
  int64_t B, T, H, Dk, Dv;
  bool state, d_final;
};

// Inputs as the kernel gets them (on the GPU, q/k in qk_t, v and d_o in v_t, g/beta/state/d_final fp32).
struct Inputs {
  at::Tensor q, k, v, g, beta, state, d_o, d_final;
};

Inputs make(const Case& c, at::ScalarType qk_t, at::ScalarType v_t, uint64_t seed) {
  const gdn_test::DeltaInputs in = gdn_test::random_inputs(c.B, c.T, c.H, c.Dk, c.Dv, c.state, seed);
  at::manual_seed(seed + 7);
  const auto gpu = at::TensorOptions().device(at::kCUDA);
  Inputs x;
  x.q = in.q.to(gpu.dtype(qk_t));
  x.k = in.k.to(gpu.dtype(qk_t));
  x.v = in.v.to(gpu.dtype(v_t));
  x.g = in.g.to(gpu.dtype(at::kFloat));
  x.beta = in.beta.to(gpu.dtype(at::kFloat));
  if (c.state) x.state = in.state.to(gpu.dtype(at::kFloat));
  x.d_o = at::randn(in.v.sizes(), at::kDouble).to(gpu.dtype(v_t));
  if (c.d_final) x.d_final = at::randn({c.B, c.H, c.Dv, c.Dk}, at::kDouble).to(gpu.dtype(at::kFloat));
  return x;
}

// Gradients by autograd through the ATen chunk form in dtype ct on the GPU (chunk 32: the op never routes that
// size to the kernel, and for fp64 no kernel takes fp64 anyway). Order: q, k, v, g, beta, state.
std::vector<at::Tensor> aten_grads(const Inputs& x, double scale, at::ScalarType ct, int64_t chunk) {
  std::vector<at::Tensor> leaves = {x.q, x.k, x.v, x.g, x.beta};
  if (x.state.defined()) leaves.push_back(x.state);
  for (auto& l : leaves) l = l.to(ct).detach().requires_grad_(true);
  const GatedDeltaOutput r = gated_delta_chunk(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], scale,
                                               x.state.defined() ? leaves[5] : at::Tensor(), chunk);
  at::Tensor loss = (r.o * x.d_o.to(ct)).sum();
  if (x.d_final.defined()) loss = loss + (r.final_state * x.d_final.to(ct)).sum();
  loss.backward();
  std::vector<at::Tensor> g;
  for (auto& l : leaves) g.push_back(l.grad());
  return g;
}

std::string tag(const Case& c, at::ScalarType qk_t, at::ScalarType v_t) {
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " Dk=" + std::to_string(c.Dk) + " Dv=" + std::to_string(c.Dv) + " state=" + std::to_string(c.state) +
         " d_final=" + std::to_string(c.d_final) + " " + c10::toString(qk_t) + "/" + c10::toString(v_t);
}

constexpr double kFloor = 4.0 / 256.0;        // 4 u_bf16: dq, dk, dv, d initial_state
constexpr double kFloorGates = 8.0 / 256.0;   // 8 u_bf16: dg, dbeta

// segments: the backward's context-parallel split (0 = chosen from the GPU's size, as in training).
void check_backward(const Case& c, at::ScalarType qk_t, at::ScalarType v_t, uint64_t seed, int segments = 0) {
  const Inputs x = make(c, qk_t, v_t, seed);
  const double scale = 1.0 / std::sqrt(double(c.Dk));
  const std::vector<at::Tensor> ref = aten_grads(x, scale, at::kDouble, 64);
  const std::vector<at::Tensor> f32 = aten_grads(x, scale, at::kFloat, 32);
  const kernels::GatedDeltaGrads got = kernels::gated_delta_chunk_backward_cuda(x.q, x.k, x.v, x.g, x.beta, scale,
                                                                                x.state, x.d_o, x.d_final, segments);
  const std::vector<at::Tensor> mine = {got.dq, got.dk, got.dv, got.dg, got.dbeta, got.d_initial_state};
  const std::vector<at::ScalarType> types = {qk_t, qk_t, v_t, at::kFloat, at::kFloat, at::kFloat};
  const char* names[] = {"dq", "dk", "dv", "dg", "dbeta", "dstate"};
  const std::string t = tag(c, qk_t, v_t) + " segments=" + std::to_string(segments);
  std::printf("  bwd %-84s", t.c_str());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_TRUE(mine[i].defined()) << names[i] << " " << t;
    ASSERT_EQ(mine[i].sizes(), ref[i].sizes()) << names[i] << " " << t;
    EXPECT_EQ(mine[i].scalar_type(), types[i]) << names[i] << " " << t;
    const double e = rel_err(mine[i], ref[i]), a = rel_err(f32[i], ref[i]);
    const double floor = (i == 3 || i == 4) ? kFloorGates : kFloor;
    std::printf(" %s %.1e(%.0e)", names[i], e, a);
    EXPECT_LE(e, 4.0 * a + floor) << names[i] << " " << t;
  }
  std::printf("\n");
  if (!c.state) EXPECT_FALSE(got.d_initial_state.defined()) << t;
}

TEST(GatedDeltaBwdCuda, GradientsEqualFp64AutogradAcrossShapes) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 200;
  const auto bf = at::kBFloat16, f32 = at::kFloat;
  check_backward({1, 1, 2, 64, 64, false, false}, bf, bf, seed++);
  check_backward({1, 1, 3, 128, 256, true, true}, f32, bf, seed++);
  check_backward({2, 63, 3, 128, 256, true, true}, f32, bf, seed++);   // the mixer's dtypes: fp32 q/k, bf16 v
  check_backward({1, 64, 1, 64, 192, true, false}, bf, bf, seed++);
  check_backward({1, 65, 2, 128, 128, false, true}, f32, f32, seed++);
  check_backward({2, 129, 2, 256, 512, true, true}, bf, bf, seed++);
  check_backward({1, 333, 3, 128, 256, false, false}, f32, bf, seed++);  // odd length, several chunks
  check_backward({1, 517, 2, 256, 128, true, true}, f32, bf, seed++);
  check_backward({1, 1000, 1, 64, 512, false, true}, bf, bf, seed++);
}

TEST(GatedDeltaBwdCuda, GradientsAtTwoKTokensForTheHyloShapes) {
  HYLO_REQUIRE_CUDA();
  check_backward({1, 2048, 3, 128, 256, true, true}, at::kFloat, at::kBFloat16, 300);
  check_backward({1, 2048, 3, 128, 256, false, false}, at::kFloat, at::kBFloat16, 301);
  check_backward({1, 2048, 6, 256, 512, false, true}, at::kFloat, at::kBFloat16, 302);
  check_backward({1, 2047, 6, 256, 512, true, false}, at::kBFloat16, at::kBFloat16, 303);
}

// Stage by stage against the hand-written ATen backward (the same decomposition, fp64, on q and k rounded to bf16
// as the kernels round them): when an end-to-end gradient above fails, the first stage listed here that fails is
// the kernel to look at (prep/states recompute: t, h, vnew; dv_local; dstates: dh, dvnew; dqk: dw, dk_part, dgam;
// wy: the final gradients). Each intermediate is a few bf16-rounded products away from the inputs: floor 4u.
TEST(GatedDeltaBwdCuda, EachStageEqualsTheHandWrittenReference) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 700;
  for (const Case& c : {Case{1, 150, 2, 128, 128, true, true}, Case{2, 70, 1, 256, 192, false, true},
                        Case{1, 64, 3, 64, 64, true, false}, Case{1, 1, 1, 128, 256, true, true}}) {
    const Inputs x = make(c, at::kFloat, at::kBFloat16, seed++);
    const double scale = 1.0 / std::sqrt(double(c.Dk));
    auto d = [](const at::Tensor& t) { return t.defined() ? t.to(at::kCPU, at::kDouble) : t; };
    gdn_test::DeltaBackwardTrace rt;
    const gdn_test::DeltaGrads rg = gdn_test::chunk_backward_reference(
        d(x.q.to(at::kBFloat16)), d(x.k.to(at::kBFloat16)), d(x.v), d(x.g), d(x.beta), scale, d(x.state), d(x.d_o),
        d(x.d_final), 64, &rt);
    kernels::gdn::BackwardTrace kt;
    const kernels::GatedDeltaGrads kg = kernels::gdn::chunk_backward_traced(x.q, x.k, x.v, x.g, x.beta, scale,
                                                                            x.state, x.d_o, x.d_final, 1, &kt);
    const std::vector<std::tuple<const char*, at::Tensor, at::Tensor>> stages = {
        {"t", kt.t, rt.t},          {"h", kt.h, rt.h},       {"vnew", kt.vnew, rt.vnew},
        {"dv_local", kt.dvl, rt.dvl}, {"dh", kt.dh, rt.dh},  {"dvnew", kt.dvnew, rt.dvnew},
        {"dw", kt.dw, rt.dw},       {"dk_part", kt.dk_part, rt.dk_part}, {"dgam", kt.dgam, rt.dgam},
        {"dq", kg.dq, rg.dq},       {"dk", kg.dk, rg.dk},    {"dv", kg.dv, rg.dv},
        {"dg", kg.dg, rg.dg},       {"dbeta", kg.dbeta, rg.dbeta}};
    const std::string t = tag(c, at::kFloat, at::kBFloat16);
    std::printf("  stages %-60s", t.c_str());
    for (const auto& [name, got, want] : stages) {
      ASSERT_EQ(got.sizes(), want.sizes()) << name << " " << t;
      const double e = rel_err(got, want);
      const bool gate = std::string(name) == "dg" || std::string(name) == "dbeta" || std::string(name) == "dgam";
      std::printf(" %s %.1e", name, e);
      EXPECT_LE(e, gate ? kFloorGates : kFloor) << name << " " << t;
    }
    if (c.state) EXPECT_LE(rel_err(kg.d_initial_state, rg.dstate), kFloor) << "d initial_state " << t;
    std::printf("\n");
  }
}

// The reverse state walk split along the sequence (segment walks from zero and on the identity, a scan, then all
// segments in parallel) is the same function as one serial walk.
TEST(GatedDeltaBwdCuda, ContextParallelEqualsReference) {
  HYLO_REQUIRE_CUDA();
  const Case c{1, 1000, 2, 128, 256, true, true};  // 16 chunks
  for (int P : {1, 3, 4, 16}) check_backward(c, at::kFloat, at::kBFloat16, 800, P);
  check_backward({1, 2049, 1, 256, 512, true, true}, at::kBFloat16, at::kBFloat16, 801, 8);
  check_backward({2, 700, 3, 64, 64, false, true}, at::kFloat, at::kBFloat16, 802, 5);
  check_backward({1, 700, 1, 128, 128, true, false}, at::kFloat, at::kBFloat16, 803, 11);
}

TEST(GatedDeltaBwdCuda, BackwardIsDeterministic) {
  HYLO_REQUIRE_CUDA();  // no atomics anywhere: two calls give the same bits (a race would show here)
  const Inputs x = make({2, 200, 3, 128, 256, true, true}, at::kFloat, at::kBFloat16, 400);
  const kernels::GatedDeltaGrads a =
      kernels::gated_delta_chunk_backward_cuda(x.q, x.k, x.v, x.g, x.beta, 0.09, x.state, x.d_o, x.d_final);
  const kernels::GatedDeltaGrads b =
      kernels::gated_delta_chunk_backward_cuda(x.q, x.k, x.v, x.g, x.beta, 0.09, x.state, x.d_o, x.d_final);
  EXPECT_TRUE(at::equal(a.dq, b.dq) && at::equal(a.dk, b.dk) && at::equal(a.dv, b.dv) && at::equal(a.dg, b.dg) &&
              at::equal(a.dbeta, b.dbeta) && at::equal(a.d_initial_state, b.d_initial_state));
}

// The op routes CUDA tensors that need a gradient through the autograd wrapper: its outputs are the kernel's and
// its gradients the backward kernel's, for each input that requires one, from o alone, the final state alone, or
// both.
TEST(GatedDeltaBwdCuda, OpUsesTheAutogradWrapperWhenGradientsAreNeeded) {
  HYLO_REQUIRE_CUDA();
  const Inputs x = make({1, 150, 2, 128, 128, true, true}, at::kFloat, at::kBFloat16, 500);
  const double scale = 1.0 / std::sqrt(128.0);
  for (bool with_state : {true, false})  // no initial state: training's usual call
    for (int use : {0, 1, 2}) {          // 0: o and final state, 1: o only, 2: final state only
      const at::Tensor s0 = with_state ? x.state : at::Tensor();
      const GatedDeltaOutput fwd = kernels::gated_delta_chunk_cuda(x.q, x.k, x.v, x.g, x.beta, scale, s0);
      std::vector<at::Tensor> leaves = {x.q, x.k, x.v, x.g, x.beta, x.state};
      for (auto& l : leaves) l = l.detach().clone().requires_grad_(true);
      const GatedDeltaOutput r = gated_delta_chunk(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], scale,
                                                   with_state ? leaves[5] : at::Tensor(), 64);
      ASSERT_TRUE(r.o.requires_grad() && r.final_state.requires_grad());
      EXPECT_TRUE(at::equal(r.o, fwd.o)) << "the op did not run the chunk kernel";
      EXPECT_TRUE(at::equal(r.final_state, fwd.final_state));
      at::Tensor loss = use == 2 ? (r.final_state * x.d_final).sum() : (r.o * x.d_o).sum();
      if (use == 0) loss = loss + (r.final_state * x.d_final).sum();
      loss.backward();
      const at::Tensor d_o = use == 2 ? at::zeros_like(x.d_o) : x.d_o;
      const kernels::GatedDeltaGrads want = kernels::gated_delta_chunk_backward_cuda(
          x.q, x.k, x.v, x.g, x.beta, scale, s0, d_o, use == 1 ? at::Tensor() : x.d_final);
      const std::vector<at::Tensor> w = {want.dq, want.dk, want.dv, want.dg, want.dbeta, want.d_initial_state};
      for (size_t i = 0; i < (with_state ? 6u : 5u); ++i)
        EXPECT_TRUE(at::equal(leaves[i].grad(), w[i])) << "input " << i << " use " << use << " state " << with_state;
      if (!with_state) EXPECT_FALSE(leaves[5].grad().defined());
    }
  // Only v requires a gradient: the others get none.
  at::Tensor v = x.v.detach().clone().requires_grad_(true);
  const GatedDeltaOutput r = gated_delta_chunk(x.q, x.k, v, x.g, x.beta, scale, x.state, 64);
  (r.o.to(at::kFloat) * x.d_o.to(at::kFloat)).sum().backward();
  ASSERT_TRUE(v.grad().defined());
  EXPECT_EQ(v.grad().scalar_type(), at::kBFloat16);
  EXPECT_FALSE(x.q.grad().defined());
}

TEST(GatedDeltaBwdCuda, RejectsMismatchedUpstreamGradients) {
  HYLO_REQUIRE_CUDA();
  const Inputs x = make({1, 70, 2, 64, 64, true, true}, at::kFloat, at::kBFloat16, 600);
  EXPECT_THROW(kernels::gated_delta_chunk_backward_cuda(x.q, x.k, x.v, x.g, x.beta, 0.1, x.state,
                                                        x.d_o.narrow(1, 0, 69), x.d_final),
               Error);
  EXPECT_THROW(kernels::gated_delta_chunk_backward_cuda(x.q, x.k, x.v, x.g, x.beta, 0.1, x.state, x.d_o,
                                                        x.d_final.narrow(2, 0, 32)),
               Error);
}
#else
TEST(GatedDeltaBwdCuda, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }
#endif

}  // namespace
}  // namespace hylo
