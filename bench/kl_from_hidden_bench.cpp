// Logit-free KL benchmark (a program, not a test): forward + backward of sum_n w_n KL(p_t || p_s) from the hidden
// states, the tiled kernel path (kernels/kl_from_hidden) against the chunked PyTorch baseline run from ATen in the
// same run (chunks of the sequence, full-vocabulary bf16 logits per chunk, fp32 log_softmax, KL, autograd
// backward per chunk), with time, ratio, peak GPU memory above the inputs, and achieved GEMM FLOP/s against a
// plain bf16 GEMM of the same shape measured in the same run.
//
//   kl_from_hidden_bench [--iters N]
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/core/GradMode.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "hylo/kernels/kl_from_hidden/kl_from_hidden.h"

namespace {

double time_ms(int iters, const std::function<void()>& fn) {
  fn();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  start.record();
  for (int i = 0; i < iters; ++i) fn();
  stop.record();
  stop.synchronize();
  return start.elapsed_time(stop) / iters;
}

int64_t allocated_now() {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current;
}
int64_t peak_since_reset() {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 5;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "kl_from_hidden_bench: no CUDA device\n");
    return 1;
  }
  std::printf("device %s\n", at::cuda::getCurrentDeviceProperties()->name);
  struct Shape {
    int64_t n, v, ds, dt, chunk;
  };
  const std::vector<Shape> shapes = {{16384, 49152, 576, 576, 2048}, {16384, 49152, 576, 576, 4096},
                                     {16384, 49152, 2048, 2048, 2048}, {4096, 128256, 2048, 2048, 1024}};
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const double tau = 2.0;
  std::printf("%-6s %-7s %-5s %-5s %-6s | %-9s %-9s %-7s | %-9s %-9s | %-8s %-8s\n", "N", "V", "Ds", "Dt", "chunk",
              "ours ms", "base ms", "ratio", "ours MiB", "base MiB", "TFLOP/s", "gemm");
  for (const Shape& sh : shapes) {
    at::Tensor hs = at::randn({sh.n, sh.ds}, bf), ht = at::randn({sh.n, sh.dt}, bf);
    at::Tensor ws = at::randn({sh.v, sh.ds}, bf) * (2.0 / std::sqrt(double(sh.ds)));
    at::Tensor wt = at::randn({sh.v, sh.dt}, bf) * (2.5 / std::sqrt(double(sh.dt)));
    at::Tensor w = at::rand({sh.n}, bf.dtype(at::kFloat));
    ws.set_requires_grad(true);
    hs.set_requires_grad(true);

    auto ours = [&] {
      at::Tensor loss = hylo::kernels::kl_from_hidden_weighted_sum(hs, ht, ws, wt, tau, w);
      loss.backward();
    };
    auto baseline = [&] {
      for (int64_t r0 = 0; r0 < sh.n; r0 += sh.chunk) {
        const int64_t rows = std::min(sh.chunk, sh.n - r0);
        at::Tensor ls = at::log_softmax(at::matmul(hs.narrow(0, r0, rows), ws.t()).to(at::kFloat) / tau, -1);
        at::Tensor lt;
        {
          c10::NoGradGuard ng;
          lt = at::log_softmax(at::matmul(ht.narrow(0, r0, rows), wt.t()).to(at::kFloat) / tau, -1);
        }
        at::Tensor kl = (lt.exp() * (lt - ls)).sum(-1);
        (kl * w.narrow(0, r0, rows)).sum().backward();
      }
    };
    auto measure = [&](const std::function<void()>& fn, double& ms, double& mib) {
      hs.mutable_grad() = at::Tensor();
      ws.mutable_grad() = at::Tensor();
      fn();  // warm-up; grads allocated
      at::cuda::device_synchronize();
      const int64_t base = allocated_now();
      c10::cuda::CUDACachingAllocator::resetPeakStats(0);
      ms = time_ms(iters, fn);
      mib = double(peak_since_reset() - base) / (1 << 20);
    };
    double ours_ms = 0, ours_mib = 0, base_ms = -1, base_mib = -1;
    measure(ours, ours_ms, ours_mib);
    try {
      measure(baseline, base_ms, base_mib);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "baseline failed: %.200s\n", e.what());
    }
    // Ceiling: a bf16 GEMM with an fp32 result, [N, Ds] x [Ds, 8192].
    at::Tensor wtile = ws.detach().narrow(0, 0, 8192);
    const double gemm_ms = time_ms(iters, [&] { at::mm(hs.detach(), wtile.t(), at::kFloat); });
    const double gemm_tflops = 2.0 * sh.n * 8192 * sh.ds / (gemm_ms * 1e-3) / 1e12;
    // Ours does 6 GEMMs of N x V x D: student forward, recomputed, d hs, d Ws (4 x Ds); teacher twice (2 x Dt).
    const double flops = 2.0 * double(sh.n) * double(sh.v) * (4.0 * double(sh.ds) + 2.0 * double(sh.dt));
    std::printf("%-6ld %-7ld %-5ld %-5ld %-6ld | %-9.2f %-9.2f %-7.2f | %-9.0f %-9.0f | %-8.0f %-8.0f\n", long(sh.n),
                long(sh.v), long(sh.ds), long(sh.dt), long(sh.chunk), ours_ms, base_ms, base_ms / ours_ms, ours_mib,
                base_mib, flops / (ours_ms * 1e-3) / 1e12, gemm_tflops);
    std::fflush(stdout);
  }
  return 0;
}
