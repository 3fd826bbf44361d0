// Times hylo's CUDA SSD kernels (kernels/ssd) against the ATen forms on the same GPU in the same process, at the
// Mamba2 shapes of recipes/plans/*m2*.yaml. A program, not a test: one line per figure, `key value...`:
//   chunk H P N G T ms_kernel X ms_aten X err X    (batch 1, bf16 x/B/C/D, fp32 dt/A, initial and final state;
//                                                   err = relative RMS difference of y between the two forms)
//   step B H P N G us_kernel X us_aten X           (one decode token, fp32 state written in place)
//   fwdbwd H P N G T ms_kernel X ms_aten X err X   (training: forward and backward of ssd_chunk with every input
//                                                   requiring a gradient, batch 1, no initial state; the kernel side
//                                                   is ssd_chunk_autograd; err = relative RMS difference of dx)
// The ATen forms run with HYLO_SSD_KERNELS=0, the kernels with =1 (forced past the routing crossover of ops/ssd.cpp,
// so the rows show where it lies). Timings are medians of CUDA event pairs after warm-up.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include <torch/csrc/autograd/autograd.h>

#include "cuda_event_timing.h"
#include "hylo/ops/ssd.h"

namespace {

using hylo::bench::median_cuda_ms;

void use_kernels(bool on) { setenv("HYLO_SSD_KERNELS", on ? "1" : "0", 1); }

struct Inputs {
  at::Tensor x, dt, A, B, C, D, state;
};

// Random inputs with a trained layer's magnitudes (as tests/cpp/mamba2/test_util.h): dt in about [1e-3, 0.5].
Inputs make(int64_t batch, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  const auto bf = f32.dtype(at::kBFloat16);
  Inputs in;
  in.x = at::randn({batch, T, H, P}, f32).to(bf);
  in.dt = at::softplus(at::randn({batch, T, H}, f32) - 4.0);
  in.A = -(at::rand({H}, f32) * 15 + 1);
  in.B = at::randn({batch, T, G, N}, f32).to(bf);
  in.C = at::randn({batch, T, H, N}, f32).to(bf);
  in.D = at::randn({H}, f32).to(bf);
  in.state = at::randn({batch, H, P, N}, f32);
  return in;
}

void bench_chunk(int64_t H, int64_t P, int64_t N, int64_t G, int64_t T) {
  const Inputs in = make(1, T, H, P, N, G);
  auto run = [&] { return hylo::ssd_chunk(in.x, in.dt, in.A, in.B, in.C, in.D, in.state, 256); };
  use_kernels(true);
  const at::Tensor yk = run().y;
  const double mk = median_cuda_ms([&] { run(); }, 3, 11);
  use_kernels(false);
  const at::Tensor ya = run().y;
  const double ma = median_cuda_ms([&] { run(); }, 3, 11);
  const at::Tensor d = yk.to(at::kDouble) - ya.to(at::kDouble);
  const double err = d.norm().item<double>() / ya.to(at::kDouble).norm().item<double>();
  std::printf("chunk H %ld P %ld N %ld G %ld T %ld ms_kernel %.3f ms_aten %.3f err %.2e\n", long(H), long(P),
              long(N), long(G), long(T), mk, ma, err);
}

void bench_step(int64_t batch, int64_t H, int64_t P, int64_t N, int64_t G) {
  const Inputs in = make(batch, 1, H, P, N, G);
  at::Tensor S = in.state.clone();
  auto tok = [](const at::Tensor& t) { return t.select(1, 0); };
  auto run = [&] { hylo::ssd_recurrent(tok(in.x), tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, S, S); };
  use_kernels(true);
  const double uk = 1000 * median_cuda_ms(run, 10, 101);
  use_kernels(false);
  const double ua = 1000 * median_cuda_ms(run, 10, 101);
  std::printf("step B %ld H %ld P %ld N %ld G %ld us_kernel %.1f us_aten %.1f\n", long(batch), long(H), long(P),
              long(N), long(G), uk, ua);
}

// Forward + backward (training): x, dt, A, B, C, D require a gradient; the gradients come from torch::autograd::grad
// (no accumulation into .grad between repetitions).
void bench_fwdbwd(int64_t H, int64_t P, int64_t N, int64_t G, int64_t T) {
  Inputs in = make(1, T, H, P, N, G);
  std::vector<at::Tensor> leaves = {in.x, in.dt, in.A, in.B, in.C, in.D};
  for (auto& l : leaves) l = l.detach().requires_grad_(true);
  const at::Tensor dy = at::randn_like(in.x);
  auto run = [&] {
    const hylo::SsdOutput o = hylo::ssd_chunk(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5],
                                              at::Tensor(), 256);
    return torch::autograd::grad({o.y}, leaves, {dy});
  };
  use_kernels(true);
  const at::Tensor dxk = run()[0];
  const double mk = median_cuda_ms([&] { run(); }, 2, 7);
  use_kernels(false);
  const at::Tensor dxa = run()[0];
  const double ma = median_cuda_ms([&] { run(); }, 2, 7);
  const at::Tensor d = dxk.to(at::kDouble) - dxa.to(at::kDouble);
  const double err = d.norm().item<double>() / dxa.to(at::kDouble).norm().item<double>();
  std::printf("fwdbwd H %ld P %ld N %ld G %ld T %ld ms_kernel %.3f ms_aten %.3f err %.2e\n", long(H), long(P),
              long(N), long(G), long(T), mk, ma, err);
}

}  // namespace

int main() {
  if (!at::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  at::manual_seed(0);
  // (H, P = head_dim, N = d_state, G = kv groups of B): SmolLM2-135M, Llama-3.2-1B, Llama-3.2-3B, Qwen3-1.7B plans.
  const std::vector<std::vector<int64_t>> shapes = {{9, 64, 64, 3}, {32, 64, 64, 8}, {24, 128, 128, 8},
                                                    {16, 128, 128, 8}};
  {
    c10::InferenceMode inference;
    for (const auto& s : shapes)
      for (int64_t T : {512, 4096}) bench_chunk(s[0], s[1], s[2], s[3], T);
    for (const auto& s : shapes)
      for (int64_t batch : {1, 32}) bench_step(batch, s[0], s[1], s[2], s[3]);
  }
  // Training (autograd on, outside the inference scope).
  for (const auto& s : shapes)
    for (int64_t T : {2048, 8192}) bench_fwdbwd(s[0], s[1], s[2], s[3], T);
  use_kernels(true);
  return 0;
}
