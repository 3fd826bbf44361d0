// Depthwise causal conv1d + SiLU with a carried state, one kernel for prefill (any T) and the one-token update.
//
// Work split: one thread per (batch, channel, run of kTimeRun consecutive tokens). A warp covers 32 consecutive
// channels, so each load of x[b, t, c0..c0+31] is one coalesced row segment. The thread keeps the last K inputs
// in registers (a compile-time-sized window, so nothing spills to local memory) and slides it along its run;
// the K-1 inputs before its first token come from x itself or, before t = 0, from the carried conv_state.
// The threads of the last run also write the new state: the last K-1 inputs of [conv_state ; x].
// Accumulation is in fp32 (fp64 for fp64 inputs), as in the ATen form.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include "hylo/kernels/causal_conv1d/causal_conv1d_cuda.h"
#include "hylo/kernels/common/cuda_check.h"

namespace hylo::kernels {

namespace {

constexpr int kThreads = 128;  // channels per block
constexpr int kTimeRun = 32;   // tokens per thread (one window slide each)

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

template <typename acc_t> __device__ __forceinline__ acc_t silu(acc_t y) { return y / (acc_t(1) + exp(-y)); }
template <> __device__ __forceinline__ float silu<float>(float y) { return y / (1.0f + __expf(-y)); }

// xs[s] for s in [0, K-1+T) is [conv_state ; x] along time; `s` indexes that concatenation.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t input_at(const scalar_t* __restrict__ x, const scalar_t* __restrict__ state,
                                          int64_t b, int64_t s, int64_t c, int64_t T, int64_t C, int K) {
  const int64_t t = s - (K - 1);
  if (t >= 0) return static_cast<acc_t>(x[(b * T + t) * C + c]);
  if (state == nullptr) return acc_t(0);
  return static_cast<acc_t>(state[(b * C + c) * (K - 1) + s]);
}

template <typename scalar_t, int K>
__global__ void __launch_bounds__(kThreads) causal_conv1d_kernel(
    const scalar_t* __restrict__ x,        // [B, T, C]
    const typename AccType<scalar_t>::type* __restrict__ w,     // [C, K]
    const typename AccType<scalar_t>::type* __restrict__ bias,  // [C] or null
    const scalar_t* __restrict__ state,    // [B, C, K-1] or null
    scalar_t* __restrict__ y,              // [B, T, C]
    scalar_t* __restrict__ new_state,      // [B, C, K-1]
    int64_t T, int64_t C, bool apply_silu) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t b = blockIdx.z;
  const int64_t t0 = int64_t(blockIdx.y) * kTimeRun;
  if (c >= C) return;

  acc_t wk[K];
#pragma unroll
  for (int k = 0; k < K; ++k) wk[k] = w[c * K + k];
  const acc_t bc = bias ? bias[c] : acc_t(0);

  // window[k] holds xs[t + k] for the token t being produced; xs[t + K - 1] is x[t] itself.
  acc_t window[K];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) window[k + 1] = input_at<scalar_t, acc_t>(x, state, b, t0 + k, c, T, C, K);

  const int64_t t_end = t0 + kTimeRun < T ? t0 + kTimeRun : T;
  for (int64_t t = t0; t < t_end; ++t) {
#pragma unroll
    for (int k = 0; k < K - 1; ++k) window[k] = window[k + 1];
    window[K - 1] = static_cast<acc_t>(x[(b * T + t) * C + c]);
    acc_t acc = bc;
#pragma unroll
    for (int k = 0; k < K; ++k) acc += wk[k] * window[k];
    if (apply_silu) acc = silu(acc);
    y[(b * T + t) * C + c] = static_cast<scalar_t>(acc);
  }

  // The last run writes the new state: xs[T + j] for j < K-1 (part of the old state when T < K-1).
  if (K > 1 && blockIdx.y == gridDim.y - 1) {
#pragma unroll
    for (int j = 0; j < K - 1; ++j)
      new_state[(b * C + c) * (K - 1) + j] =
          static_cast<scalar_t>(input_at<scalar_t, acc_t>(x, state, b, T + j, c, T, C, K));
  }
}

template <typename scalar_t, int K>
void launch(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& state,
            at::Tensor& y, at::Tensor& new_state, bool silu) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  const dim3 grid(unsigned((C + kThreads - 1) / kThreads), unsigned((T + kTimeRun - 1) / kTimeRun), unsigned(B));
  causal_conv1d_kernel<scalar_t, K><<<grid, kThreads, 0, current_stream()>>>(
      x.data_ptr<scalar_t>(), w.data_ptr<acc_t>(), bias.defined() ? bias.data_ptr<acc_t>() : nullptr,
      state.defined() ? state.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
      K > 1 ? new_state.data_ptr<scalar_t>() : nullptr, T, C, silu);
  check_launch("causal_conv1d_cuda");
}

}  // namespace

bool causal_conv1d_cuda_supports(const at::Tensor& x, const at::Tensor& weight) {
  const auto t = x.scalar_type();
  return x.is_cuda() && weight.dim() == 2 && weight.size(1) >= 1 && weight.size(1) <= 8 &&
         (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || t == at::kDouble);
}

std::pair<at::Tensor, at::Tensor> causal_conv1d_cuda(const at::Tensor& x_in, const at::Tensor& weight,
                                                     const at::Tensor& bias, const at::Tensor& conv_state,
                                                     bool silu) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();  // [B, T, C]
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = weight.size(1);
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor w = weight.to(x.device(), acc).contiguous();                                    // [C, K]
  const at::Tensor bb = bias.defined() ? bias.to(x.device(), acc).contiguous() : at::Tensor();     // [C]
  const at::Tensor st = conv_state.defined() && K > 1 ? conv_state.to(x.device(), x.scalar_type()).contiguous()
                                                      : at::Tensor();                              // [B, C, K-1]
  at::Tensor y = empty_output({B, T, C}, x.options());                                             // [B, T, C]
  at::Tensor new_state = empty_output({B, C, K - 1}, x.options());                                 // [B, C, K-1]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "causal_conv1d_cuda", [&] {
    switch (K) {
      case 1: launch<scalar_t, 1>(x, w, bb, st, y, new_state, silu); break;
      case 2: launch<scalar_t, 2>(x, w, bb, st, y, new_state, silu); break;
      case 3: launch<scalar_t, 3>(x, w, bb, st, y, new_state, silu); break;
      case 4: launch<scalar_t, 4>(x, w, bb, st, y, new_state, silu); break;
      case 5: launch<scalar_t, 5>(x, w, bb, st, y, new_state, silu); break;
      case 6: launch<scalar_t, 6>(x, w, bb, st, y, new_state, silu); break;
      case 7: launch<scalar_t, 7>(x, w, bb, st, y, new_state, silu); break;
      case 8: launch<scalar_t, 8>(x, w, bb, st, y, new_state, silu); break;
      default: throw Error("causal_conv1d_cuda: kernel width " + std::to_string(K) + " is not supported (1..8)");
    }
  });
  return {y, new_state};
}

}  // namespace hylo::kernels
