// add_rms_norm_cuda (add_rms_norm.h): one block per row of D elements. Pass 1 forms r = h + m (written out, rounded
// to the dtype as ATen's add rounds) and the fp32 sum of r^2; a warp-shuffle + shared-memory block reduction gives
// rstd = rsqrt(sum / D + eps); pass 2 re-reads r (this thread's own writes) and writes
// y = dtype(w * dtype(r * rstd)), the rounding points of ops::rms_norm.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/warp.cuh"
#include "hylo/kernels/rms_norm/add_rms_norm.h"

namespace hylo::kernels {

namespace {

constexpr int kThreads = 256;

// The round trip through the storage dtype that ATen applies between ops (identity for fp32).
template <typename T> __device__ __forceinline__ float rounded(float v) { return static_cast<float>(T(v)); }

template <typename T>
__global__ void __launch_bounds__(kThreads) add_rms_norm_kernel(const T* __restrict__ h, const T* __restrict__ m,
                                                                const T* __restrict__ w, T* __restrict__ r,
                                                                T* __restrict__ y, int64_t D, float eps) {
  const int64_t row = blockIdx.x;
  const T* hr = h + row * D;
  const T* mr = m ? m + row * D : nullptr;
  T* rr = r ? r + row * D : nullptr;
  T* yr = y + row * D;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    float v = static_cast<float>(hr[i]);
    if (mr) {
      v = rounded<T>(v + static_cast<float>(mr[i]));
      rr[i] = T(v);
    }
    ss += v * v;
  }
  __shared__ float part[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  ss = warp_sum(ss);
  if (lane == 0) part[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    float s = lane < kThreads / 32 ? part[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0) part[0] = s;
  }
  __syncthreads();
  const float rstd = rsqrtf(part[0] / static_cast<float>(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    const float v = mr ? static_cast<float>(rr[i]) : static_cast<float>(hr[i]);
    yr[i] = T(static_cast<float>(w[i]) * rounded<T>(v * rstd));
  }
}

}  // namespace

bool add_rms_norm_cuda_supported(const at::Tensor& h, const at::Tensor& m, const at::Tensor& weight) {
  const at::ScalarType t = h.scalar_type();
  if (!h.defined() || !h.is_cuda() || h.dim() < 1 || h.size(-1) < 1 || !h.is_contiguous() ||
      (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf))
    return false;
  if (!weight.defined() || weight.dim() != 1 || weight.size(0) != h.size(-1) || weight.scalar_type() != t ||
      !weight.is_contiguous() || weight.device() != h.device())
    return false;
  if (m.defined() && (!m.sizes().equals(h.sizes()) || m.scalar_type() != t || !m.is_contiguous() ||
                      m.device() != h.device()))
    return false;
  return true;
}

std::pair<at::Tensor, at::Tensor> add_rms_norm_cuda(const at::Tensor& h, const at::Tensor& m,
                                                    const at::Tensor& weight, double eps) {
  if (!add_rms_norm_cuda_supported(h, m, weight))
    throw Error("add_rms_norm_cuda: needs contiguous fp32/bf16/fp16 h [.., D] on CUDA, m undefined or like h, and "
                "weight [D] of h's dtype; got h " + std::string(c10::str(h.sizes())) + " " +
                c10::toString(h.scalar_type()) + ", weight " +
                (weight.defined() ? std::string(c10::str(weight.sizes())) + " " + c10::toString(weight.scalar_type())
                                  : std::string("undefined")));
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t D = h.size(-1), rows = h.numel() / D;
  at::Tensor r = m.defined() ? empty_output(h.sizes(), h.options()) : at::Tensor();  // [.., D]
  at::Tensor y = empty_output(h.sizes(), h.options());                                  // [.., D]
  if (rows == 0) return {r, y};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "add_rms_norm_cuda", [&] {
    add_rms_norm_kernel<scalar_t><<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(
        h.data_ptr<scalar_t>(), m.defined() ? m.data_ptr<scalar_t>() : nullptr, weight.data_ptr<scalar_t>(),
        m.defined() ? r.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(), D, static_cast<float>(eps));
  });
  check_launch("add_rms_norm_cuda");
  return {r, y};
}

}  // namespace hylo::kernels
