// CUDA kernels of kl_softmax_stats.h: one CTA per row of the tile, 256 threads striding over its columns.
#include "hylo/kernels/kl_from_hidden/kl_softmax_stats.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <limits>

namespace hylo::kernels::detail {
namespace {

constexpr int kThreads = 256;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Online softmax statistics of one stream of values u_t (teacher) and u_s (student):
// (m_s, l_s) for the student's log-sum-exp, (m_t, l_t, a) for the teacher's and sum exp(u_t - m_t)(u_t - u_s).
struct Stats {
  float ms, ls, mt, lt, a;
};

__device__ __forceinline__ float rescale(float m_old, float m_new) {
  return m_old == kNegInf ? 0.f : __expf(m_old - m_new);
}

__device__ __forceinline__ void push(Stats& s, float us, float ut) {
  if (us > s.ms) {
    s.ls = s.ls * rescale(s.ms, us) + 1.f;
    s.ms = us;
  } else {
    s.ls += __expf(us - s.ms);
  }
  if (ut > s.mt) {
    const float r = rescale(s.mt, ut);
    s.lt = s.lt * r + 1.f;
    s.a = s.a * r + (ut - us);
    s.mt = ut;
  } else {
    const float e = __expf(ut - s.mt);
    s.lt += e;
    s.a += e * (ut - us);
  }
}

__device__ __forceinline__ Stats merge(const Stats& x, const Stats& y) {
  Stats r;
  r.ms = fmaxf(x.ms, y.ms);
  r.ls = x.ls * rescale(x.ms, r.ms) + y.ls * rescale(y.ms, r.ms);
  r.mt = fmaxf(x.mt, y.mt);
  const float fx = rescale(x.mt, r.mt), fy = rescale(y.mt, r.mt);
  r.lt = x.lt * fx + y.lt * fy;
  r.a = x.a * fx + y.a * fy;
  return r;
}

__device__ __forceinline__ Stats shfl_xor(const Stats& s, int lane_mask) {
  return {__shfl_xor_sync(0xffffffffu, s.ms, lane_mask), __shfl_xor_sync(0xffffffffu, s.ls, lane_mask),
          __shfl_xor_sync(0xffffffffu, s.mt, lane_mask), __shfl_xor_sync(0xffffffffu, s.lt, lane_mask),
          __shfl_xor_sync(0xffffffffu, s.a, lane_mask)};
}

__global__ void __launch_bounds__(kThreads) kl_stats_kernel(const float* __restrict__ zs, const float* __restrict__ zt,
                                                            int64_t ld, int cols, float inv_tau,
                                                            float* __restrict__ state, int64_t n_total, int64_t row0,
                                                            bool vec4) {
  const int64_t row = blockIdx.x;
  const float* ps = zs + row * ld;
  const float* pt = zt + row * ld;
  Stats s{kNegInf, 0.f, kNegInf, 0.f, 0.f};
  if (vec4) {
    for (int c = threadIdx.x * 4; c < cols; c += kThreads * 4) {
      const float4 a = *reinterpret_cast<const float4*>(ps + c);
      const float4 b = *reinterpret_cast<const float4*>(pt + c);
      push(s, a.x * inv_tau, b.x * inv_tau);
      push(s, a.y * inv_tau, b.y * inv_tau);
      push(s, a.z * inv_tau, b.z * inv_tau);
      push(s, a.w * inv_tau, b.w * inv_tau);
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kThreads) push(s, ps[c] * inv_tau, pt[c] * inv_tau);
  }
  for (int m = 16; m > 0; m >>= 1) s = merge(s, shfl_xor(s, m));
  __shared__ Stats warp_stats[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_stats[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    Stats t = warp_stats[0];
    for (int w = 1; w < kThreads / 32; ++w) t = merge(t, warp_stats[w]);
    const int64_t n = row0 + row;
    Stats old{state[n], state[n_total + n], state[2 * n_total + n], state[3 * n_total + n], state[4 * n_total + n]};
    t = merge(old, t);
    state[n] = t.ms, state[n_total + n] = t.ls, state[2 * n_total + n] = t.mt, state[3 * n_total + n] = t.lt;
    state[4 * n_total + n] = t.a;
  }
}

__global__ void kl_finish_kernel(const float* __restrict__ state, int64_t n_total, float* __restrict__ kl,
                                 float* __restrict__ lse_s, float* __restrict__ lse_t) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= n_total) return;
  const float ls = state[n] + logf(state[n_total + n]);
  const float lt = state[2 * n_total + n] + logf(state[3 * n_total + n]);
  lse_s[n] = ls;
  lse_t[n] = lt;
  kl[n] = state[4 * n_total + n] / state[3 * n_total + n] - lt + ls;
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

template <class T>
__global__ void __launch_bounds__(kThreads) kl_grad_kernel(const float* __restrict__ zs, const float* __restrict__ zt,
                                                           int64_t ld, int cols, float inv_tau,
                                                           const float* __restrict__ lse_s,
                                                           const float* __restrict__ lse_t,
                                                           const float* __restrict__ coef, T* __restrict__ g,
                                                           int64_t ldg) {
  const int64_t row = blockIdx.x;
  const float ls = lse_s[row], lt = lse_t[row], k = coef[row];
  const float* ps = zs + row * ld;
  const float* pt = zt + row * ld;
  T* out = g + row * ldg;
  for (int c = threadIdx.x; c < cols; c += kThreads)
    out[c] = from_float<T>(k * (__expf(ps[c] * inv_tau - ls) - __expf(pt[c] * inv_tau - lt)));
}

void check_tile(const at::Tensor& z, const char* name) {
  TORCH_CHECK(z.is_cuda() && z.scalar_type() == at::kFloat && z.dim() == 2 && z.stride(1) == 1,
              "kl kernels: ", name, " must be a [rows, cols] fp32 CUDA tile with contiguous rows, got ", z.sizes());
}

}  // namespace

void kl_stats_update(const at::Tensor& zs, const at::Tensor& zt, at::Tensor& state, int64_t row0, double tau) {
  check_tile(zs, "zs");
  check_tile(zt, "zt");
  TORCH_CHECK(zs.sizes() == zt.sizes() && zs.stride(0) == zt.stride(0), "kl_stats_update: zs and zt differ");
  TORCH_CHECK(state.is_contiguous() && state.dim() == 2 && state.size(0) == 5 && row0 + zs.size(0) <= state.size(1),
              "kl_stats_update: state must be [5, N] covering the rows");
  if (zs.size(0) == 0 || zs.size(1) == 0) return;
  c10::cuda::CUDAGuard guard(zs.device());
  const bool vec4 = zs.size(1) % 4 == 0 && zs.stride(0) % 4 == 0 &&
                    reinterpret_cast<uintptr_t>(zs.data_ptr()) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(zt.data_ptr()) % 16 == 0;
  kl_stats_kernel<<<unsigned(zs.size(0)), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      zs.data_ptr<float>(), zt.data_ptr<float>(), zs.stride(0), int(zs.size(1)), float(1.0 / tau),
      state.data_ptr<float>(), state.size(1), row0, vec4);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void kl_stats_finish(const at::Tensor& state, at::Tensor& kl, at::Tensor& lse_s, at::Tensor& lse_t) {
  const int64_t n = state.size(1);
  if (n == 0) return;
  c10::cuda::CUDAGuard guard(state.device());
  kl_finish_kernel<<<unsigned((n + 255) / 256), 256, 0, at::cuda::getCurrentCUDAStream()>>>(
      state.data_ptr<float>(), n, kl.data_ptr<float>(), lse_s.data_ptr<float>(), lse_t.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void kl_grad_tile(const at::Tensor& zs, const at::Tensor& zt, const at::Tensor& lse_s, const at::Tensor& lse_t,
                  const at::Tensor& coef, double tau, at::Tensor& g) {
  check_tile(zs, "zs");
  check_tile(zt, "zt");
  TORCH_CHECK(g.dim() == 2 && g.stride(1) == 1 && g.sizes() == zs.sizes(), "kl_grad_tile: g must match the tile");
  if (zs.size(0) == 0 || zs.size(1) == 0) return;
  c10::cuda::CUDAGuard guard(zs.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned rows = unsigned(zs.size(0));
  const int cols = int(zs.size(1));
  const float inv_tau = float(1.0 / tau);
  switch (g.scalar_type()) {
    case at::kFloat:
      kl_grad_kernel<float><<<rows, kThreads, 0, stream>>>(zs.data_ptr<float>(), zt.data_ptr<float>(), zs.stride(0),
                                                           cols, inv_tau, lse_s.data_ptr<float>(),
                                                           lse_t.data_ptr<float>(), coef.data_ptr<float>(),
                                                           g.data_ptr<float>(), g.stride(0));
      break;
    case at::kBFloat16:
      kl_grad_kernel<__nv_bfloat16><<<rows, kThreads, 0, stream>>>(
          zs.data_ptr<float>(), zt.data_ptr<float>(), zs.stride(0), cols, inv_tau, lse_s.data_ptr<float>(),
          lse_t.data_ptr<float>(), coef.data_ptr<float>(), reinterpret_cast<__nv_bfloat16*>(g.data_ptr()),
          g.stride(0));
      break;
    case at::kHalf:
      kl_grad_kernel<__half><<<rows, kThreads, 0, stream>>>(
          zs.data_ptr<float>(), zt.data_ptr<float>(), zs.stride(0), cols, inv_tau, lse_s.data_ptr<float>(),
          lse_t.data_ptr<float>(), coef.data_ptr<float>(), reinterpret_cast<__half*>(g.data_ptr()), g.stride(0));
      break;
    default: TORCH_CHECK(false, "kl_grad_tile: unsupported gradient dtype ", g.scalar_type());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace hylo::kernels::detail
