// cuda_host_emu: the autograd wrapper (gated_delta_chunk_autograd) on the host emulation: its gradients are the
// backward kernel's, for each input, from o, the final state or both, with and without an initial state (1 = equal).
#include <ATen/ATen.h>
#include <torch/torch.h>
#include <cstdio>
#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"
using namespace hylo;
int main() {
  kernels::set_poison_outputs(true);
  at::manual_seed(3);
  const int64_t B = 1, T = 70, H = 2, Dk = 64, Dv = 64;
  at::Tensor q = at::randn({B, T, H, Dk}); q = q / q.norm(2, -1, true);
  at::Tensor k = at::randn({B, T, H, Dk}); k = k / k.norm(2, -1, true);
  at::Tensor v = at::randn({B, T, H, Dv}).to(at::kBFloat16);
  at::Tensor g = -0.1 * at::rand({B, T, H}), beta = at::sigmoid(at::randn({B, T, H}));
  at::Tensor s0 = at::randn({B, H, Dv, Dk});
  at::Tensor d_o = at::randn({B, T, H, Dv}).to(at::kBFloat16), d_f = at::randn({B, H, Dv, Dk});
  for (int with_state : {0, 1})
    for (int use : {0, 1, 2}) {
      std::vector<at::Tensor> L = {q, k, v, g, beta, s0};
      for (auto& l : L) l = l.detach().clone().requires_grad_(true);
      at::Tensor init = with_state ? L[5] : at::Tensor();
      auto r = kernels::gated_delta_chunk_autograd(L[0], L[1], L[2], L[3], L[4], 0.125, init);
      at::Tensor loss = use == 2 ? (r.final_state * d_f).sum() : (r.o * d_o).sum();
      if (use == 0) loss = loss + (r.final_state * d_f).sum();
      loss.backward();
      auto w = kernels::gated_delta_chunk_backward_cuda(q, k, v, g, beta, 0.125, with_state ? s0 : at::Tensor(),
                                                        use == 2 ? at::zeros_like(d_o) : d_o, use == 1 ? at::Tensor() : d_f);
      std::vector<at::Tensor> W = {w.dq, w.dk, w.dv, w.dg, w.dbeta, w.d_initial_state};
      std::printf("state %d use %d:", with_state, use);
      for (int i = 0; i < (with_state ? 6 : 5); ++i)
        std::printf(" %d", (int)(L[i].grad().defined() && at::equal(L[i].grad(), W[i])));
      if (!with_state) std::printf(" (s0 grad defined %d)", (int)L[5].grad().defined());
      std::printf("\n");
    }
  // Only v requires a gradient, the initial state is given without one (a stateful forward under training).
  at::Tensor vg = v.detach().clone().requires_grad_(true);
  auto r = kernels::gated_delta_chunk_autograd(q, k, vg, g, beta, 0.125, s0);
  (r.o.to(at::kFloat) * d_o.to(at::kFloat)).sum().backward();
  auto w = kernels::gated_delta_chunk_backward_cuda(q, k, v, g, beta, 0.125, s0, d_o, at::Tensor());
  std::printf("only v: %d\n", (int)(vg.grad().defined() && at::equal(vg.grad(), w.dv)));
}
