// Times hylo's CUDA gated delta and causal conv1d kernels at the HyLo shapes and measures the card's ceilings in
// the same process (a cuBLAS bf16 GEMM through at::matmul, a device-to-device copy). A program, not a test: it
// prints one line per figure, `key value...`, which bench/gdn_kernels_bench.py reads next to fla's times.
//   ceiling gemm_tflops X | ceiling copy_tbps X
//   chunk H Dk Dv T ms X err_vs_aten X        (batch 1, bf16 q/k/v, fp32 g/beta, initial and final state)
//   fwdbwd B H Dk Dv T ms X                    (chunk forward + backward, every input's gradient, from d o and
//                                               d final_state; the training step's share of the rule)
//   step B H Dk Dv us X                        (one decode token, fp32 state; CUDA-graph replay of 100 steps)
//   conv B T C K us X                          (causal conv1d + SiLU, bf16)
// Inputs are random (never zeros), the L2 norm of q/k is 1 as the layer feeds them, timings are medians of CUDA
// event pairs after warm-up.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "cuda_event_timing.h"
#include "hylo/kernels/causal_conv1d/causal_conv1d_cuda.h"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"
#include "hylo/ops/gated_delta.h"

namespace {

using hylo::bench::median_cuda_ms;

struct Inputs {
  at::Tensor q, k, v, g, beta, state;
};
Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv) {
  const auto f = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  Inputs in;
  in.q = at::randn({B, T, H, Dk}, f);
  in.q = (in.q / in.q.norm(2, -1, true)).to(at::kBFloat16);
  in.k = at::randn({B, T, H, Dk}, f);
  in.k = (in.k / in.k.norm(2, -1, true)).to(at::kBFloat16);
  in.v = at::randn({B, T, H, Dv}, f).to(at::kBFloat16);
  at::Tensor A = 0.05 + 15.95 * at::rand({H}, f);
  in.g = -A * at::softplus(at::randn({B, T, H}, f) - 4.0);
  in.beta = at::sigmoid(at::randn({B, T, H}, f));
  in.state = 0.5 * at::randn({B, H, Dv, Dk}, f);
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  if (!at::cuda::is_available()) {
    std::fprintf(stderr, "gdn_kernels_bench: no CUDA device\n");
    return 1;
  }
  c10::InferenceMode inference;  // as generate/perplexity run: no autograd, so the ops may pick the kernels
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int64_t T = quick ? 8192 : 65536;
  if (argc > 1 && std::string(argv[1]) == "--stages") {
    // One warm call and one call per shape and segment count; with HYLO_GDN_STAGE_TIMES=1 set by the caller the
    // launcher prints each stage's time (stderr).
    for (auto [H, Dk, Dv] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{3, 128, 256}, {6, 256, 512}}) {
      Inputs in = make_inputs(1, T, H, Dk, Dv);
      for (int P : {0, 1, 8}) {
        for (int i = 0; i < 2; ++i)
          (void)hylo::kernels::gated_delta_chunk_cuda(in.q, in.k, in.v, in.g, in.beta, 0.1, in.state, P);
      }
      const at::Tensor d_o = at::randn(in.v.sizes(), in.v.options());
      for (int P : {0, 1}) {
        for (int i = 0; i < 2; ++i)
          (void)hylo::kernels::gated_delta_chunk_backward_cuda(in.q, in.k, in.v, in.g, in.beta, 0.1, in.state, d_o,
                                                               in.state, P);
      }
    }
    return 0;
  }
  {
    const auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    at::Tensor a = at::randn({8192, 8192}, o), b = at::randn({8192, 8192}, o);
    const double ms = median_cuda_ms([&] { (void)at::matmul(a, b); }, 3, 10);
    std::printf("ceiling gemm_tflops %.1f\n", 2.0 * 8192.0 * 8192.0 * 8192.0 / (ms * 1e-3) / 1e12);
    at::Tensor src = at::randn({int64_t(1) << 30}, at::TensorOptions().device(at::kCUDA).dtype(at::kFloat));
    at::Tensor dst = at::empty_like(src);
    const double cms = median_cuda_ms([&] { dst.copy_(src); }, 3, 10);
    std::printf("ceiling copy_tbps %.2f\n", 2.0 * src.nbytes() / (cms * 1e-3) / 1e12);
  }
  std::fflush(stdout);

  for (auto [H, Dk, Dv] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{3, 128, 256}, {6, 256, 512}}) {
    Inputs in = make_inputs(1, T, H, Dk, Dv);
    const double scale = 1.0 / std::sqrt(double(Dk));
    hylo::GatedDeltaOutput out;
    const double ms = median_cuda_ms([&] {
      out = hylo::kernels::gated_delta_chunk_cuda(in.q, in.k, in.v, in.g, in.beta, scale, in.state);
    }, 3, 15);
    // The same call against the ATen chunk form in fp32 on the GPU (its 1024-chunk loop is slow but exact enough).
    hylo::GatedDeltaOutput ref = hylo::gated_delta_chunk(in.q.to(at::kFloat), in.k.to(at::kFloat),
                                                         in.v.to(at::kFloat), in.g, in.beta, scale, in.state, 32);
    const double err = (out.o.to(at::kFloat) - ref.o).norm().item<double>() / ref.o.norm().item<double>();
    const double serr = (out.final_state - ref.final_state).norm().item<double>() / ref.final_state.norm().item<double>();
    std::printf("chunk %ld %ld %ld %ld ms %.4f err_vs_aten %.2e state_err %.2e\n", long(H), long(Dk), long(Dv),
                long(T), ms, err, serr);
    for (int P : {1, 4, 8, 16, 32, 64}) {
      const double pms = median_cuda_ms([&] {
        (void)hylo::kernels::gated_delta_chunk_cuda(in.q, in.k, in.v, in.g, in.beta, scale, in.state, P);
      }, 2, 7);
      std::printf("chunk_segments %ld %ld %ld %ld P %d ms %.4f\n", long(H), long(Dk), long(Dv), long(T), P, pms);
    }
    std::fflush(stdout);
  }

  // Forward + backward at the training shapes: 8 sequences of 2K tokens and one of 64K.
  for (auto [B, Tt] : std::vector<std::pair<int64_t, int64_t>>{{8, 2048}, {1, quick ? 8192 : 65536}}) {
    for (auto [H, Dk, Dv] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{3, 128, 256}, {6, 256, 512}}) {
      Inputs in = make_inputs(B, Tt, H, Dk, Dv);
      const double scale = 1.0 / std::sqrt(double(Dk));
      const at::Tensor d_o = at::randn(in.v.sizes(), in.v.options());
      const at::Tensor d_final = at::randn(in.state.sizes(), in.state.options());
      const double ms = median_cuda_ms([&] {
        const hylo::GatedDeltaOutput o = hylo::kernels::gated_delta_chunk_cuda(in.q, in.k, in.v, in.g, in.beta,
                                                                               scale, in.state);
        (void)hylo::kernels::gated_delta_chunk_backward_cuda(in.q, in.k, in.v, in.g, in.beta, scale, in.state,
                                                             d_o, d_final);
      }, 2, 7);
      std::printf("fwdbwd %ld %ld %ld %ld %ld ms %.4f\n", long(B), long(H), long(Dk), long(Dv), long(Tt), ms);
      std::fflush(stdout);
    }
  }

  for (int64_t B : {1, 64}) {
    for (auto [H, Dk, Dv] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{3, 128, 256}, {6, 256, 512}}) {
      Inputs in = make_inputs(B, 1, H, Dk, Dv);
      at::Tensor state = in.state.clone();
      const double scale = 1.0 / std::sqrt(double(Dk));
      constexpr int kSteps = 100;
      auto step = [&] { (void)hylo::kernels::gated_delta_step_cuda(in.q, in.k, in.v, in.g, in.beta, scale, state, state); };
      at::cuda::CUDAStream s = at::cuda::getStreamFromPool();
      at::cuda::CUDAGraph graph;
      {
        at::cuda::CUDAStreamGuard guard(s);
        step();  // warm (allocator, module load) outside the capture
        s.synchronize();
        graph.capture_begin();
        for (int i = 0; i < kSteps; ++i) step();
        graph.capture_end();
      }
      const double ms = median_cuda_ms([&] { graph.replay(); }, 3, 20);
      std::printf("step %ld %ld %ld %ld us %.3f\n", long(B), long(H), long(Dk), long(Dv), ms * 1e3 / kSteps);
    }
  }
  {
    const int64_t C = 3 * 128 * 2 + 3 * 256;  // SmolLM2 GDN q, k, v channels side by side
    for (int64_t Tc : {int64_t(1), T}) {
      at::Tensor x = at::randn({1, Tc, C}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
      at::Tensor w = at::randn({C, 4}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
      at::Tensor st = at::randn({1, C, 3}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
      const double ms = median_cuda_ms([&] { (void)hylo::kernels::causal_conv1d_cuda(x, w, at::Tensor(), st, true); }, 5, 50);
      std::printf("conv 1 %ld %ld 4 us %.3f\n", long(Tc), long(C), ms * 1e3);
    }
  }
  return 0;
}
