// cuda_host_emu: the SSD chunked backward (kernels/ssd/ssd_chunk_bwd.cu) on the host emulation. Every input's
// gradient against autograd through ssd_naive in fp64 on the same rounded inputs and upstream gradients, beside
// the ATen chunk form's own gradient error in the working dtype (the GPU tests' bound: kernel error at most 4x the
// ATen error plus a floor; tests/cpp/kernels_ssd/ssd_bwd_cuda_test.cpp). Then the autograd wrapper: its outputs
// are the forward kernel's and its gradients the backward kernel's, bit for bit.
//   ssd_bwd_check B T H P N G Gc WITH_STATE WITH_D WITH_DFINAL f32|bf16
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/ssd/ssd_cuda.h"
#include "hylo/ops/ssd.h"
#include "test_util.h"  // tests/cpp/mamba2: make_ssd_inputs
using namespace hylo;
double rel(const at::Tensor& a, const at::Tensor& r) {
  at::Tensor x = a.to(at::kDouble), y = r.to(at::kDouble);
  return (x - y).norm().item<double>() / std::max(y.norm().item<double>(), 1e-300);
}
// Leaves x, dt, A, B, C, D, state (D and state may be undefined); gradients by autograd of
// sum(y dy) + sum(final d_final) through `f` with every leaf cast to ct.
using Fn = SsdOutput (*)(const std::vector<at::Tensor>&);
std::vector<at::Tensor> grads(std::vector<at::Tensor> L, const at::Tensor& dy, const at::Tensor& dfin,
                              at::ScalarType ct, bool cast, Fn f) {
  for (auto& l : L)
    if (l.defined()) l = (cast ? l.to(ct) : l).detach().clone().requires_grad_(true);
  const SsdOutput o = f(L);
  at::Tensor loss = (o.y.to(ct) * dy.to(ct)).sum();
  if (dfin.defined()) loss = loss + (o.final_state.to(ct) * dfin.to(ct)).sum();
  loss.backward();
  std::vector<at::Tensor> g;
  for (auto& l : L) g.push_back(l.defined() ? l.grad() : at::Tensor());
  return g;
}
int main(int argc, char** argv) {
  if (argc != 12) {
    std::fprintf(stderr, "usage: ssd_bwd_check B T H P N G Gc WITH_STATE WITH_D WITH_DFINAL f32|bf16\n");
    return 2;
  }
  kernels::set_poison_outputs(true);
  auto arg = [&](int i) { return int64_t(std::stol(argv[i])); };
  const int64_t B = arg(1), T = arg(2), H = arg(3), P = arg(4), N = arg(5), G = arg(6), Gc = arg(7);
  const bool st = arg(8) != 0, wd = arg(9) != 0, wf = arg(10) != 0;
  const at::ScalarType xt = std::string(argv[11]) == "bf16" ? at::kBFloat16 : at::kFloat;
  test::SsdInputs in = test::make_ssd_inputs(B, T, H, P, N, G, Gc, st, 977 + T);
  std::vector<at::Tensor> L = {in.x.to(xt), in.dt.to(at::kFloat), in.A.to(at::kFloat), in.B.to(xt), in.C.to(xt),
                               wd ? in.D.to(xt) : at::Tensor(), st ? in.state.to(at::kFloat) : at::Tensor()};
  at::manual_seed(31 + T);
  const at::Tensor dy = at::randn({B, T, H, P}, at::kDouble).to(xt);
  const at::Tensor dfin = wf ? at::randn({B, H, P, N}, at::kDouble).to(at::kFloat) : at::Tensor();
  auto naive = [](const std::vector<at::Tensor>& l) { return ssd_naive(l[0], l[1], l[2], l[3], l[4], l[5], l[6]); };
  auto chunk = [](const std::vector<at::Tensor>& l) { return ssd_chunk(l[0], l[1], l[2], l[3], l[4], l[5], l[6], 64); };
  const std::vector<at::Tensor> ref = grads(L, dy, dfin, at::kDouble, true, naive);
  const std::vector<at::Tensor> aten = grads(L, dy, dfin, at::kFloat, false, chunk);
  const kernels::SsdGrads k = kernels::ssd_chunk_backward_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6], dy, dfin);
  const std::vector<at::Tensor> mine = {k.dx, k.ddt, k.dA, k.dB, k.dC, k.dD, k.d_initial_state};
  const char* names[] = {"dx", "ddt", "dA", "dB", "dC", "dD", "dstate"};
  bool ok = true;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (!ref[i].defined()) {
      if (mine[i].defined()) { std::printf(" %s defined without its input: FAIL", names[i]); ok = false; }
      continue;
    }
    const bool shape_ok = mine[i].defined() && mine[i].sizes().equals(ref[i].sizes()) &&
                          mine[i].scalar_type() == L[i].scalar_type();
    const double e = shape_ok ? rel(mine[i], ref[i]) : 1e300, a = rel(aten[i], ref[i]);
    const bool pass = e <= 4 * a + 1e-5;
    ok = ok && pass;
    std::printf(" %s %.1e(%.0e)%s", names[i], e, a, pass ? "" : " FAIL");
  }
  std::printf("\n");
  // The wrapper: forward equals the kernel, gradients equal the backward kernel (from y and the final state).
  std::vector<at::Tensor> W = L;
  for (auto& l : W)
    if (l.defined()) l = l.detach().clone().requires_grad_(true);
  const SsdOutput fw = kernels::ssd_chunk_autograd(W[0], W[1], W[2], W[3], W[4], W[5], W[6]);
  const SsdOutput fk = kernels::ssd_chunk_cuda(L[0], L[1], L[2], L[3], L[4], L[5], L[6]);
  bool wrap = at::equal(fw.y, fk.y) && at::equal(fw.final_state, fk.final_state);
  // The GPU tests find the wrapper in autograd graphs by this name.
  wrap = wrap && fw.y.grad_fn() && fw.y.grad_fn()->name().find("SsdChunkFn") != std::string::npos;
  at::Tensor loss = (fw.y.to(at::kFloat) * dy.to(at::kFloat)).sum();
  if (dfin.defined()) loss = loss + (fw.final_state * dfin).sum();
  loss.backward();
  for (size_t i = 0; i < W.size(); ++i)
    if (W[i].defined()) wrap = wrap && W[i].grad().defined() && at::equal(W[i].grad(), mine[i]);
  std::printf("  wrapper equals the kernels: %s\n", wrap ? "ok" : "FAIL");
  return ok && wrap ? 0 : 1;
}
