// silu_mul_cuda (silu_mul.h): one thread per output element, rows addressed through each input's row stride.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/swiglu/silu_mul.h"

namespace hylo::kernels {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) silu_mul_kernel(const T* __restrict__ gate, const T* __restrict__ up,
                                                            T* __restrict__ out, int64_t R, int64_t F, int64_t ldg,
                                                            int64_t ldu) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= R * F) return;
  const int64_t r = i / F, c = i % F;
  const float g = static_cast<float>(gate[r * ldg + c]);
  const float s = static_cast<float>(T(g / (1.0f + expf(-g))));  // ATen's silu, rounded to T
  out[i] = T(s * static_cast<float>(up[r * ldu + c]));
}

bool rows_ok(const at::Tensor& t) {
  return t.defined() && t.is_cuda() && t.dim() == 2 && t.stride(1) == 1 && (t.size(0) <= 1 || t.stride(0) >= t.size(1));
}

}  // namespace

bool silu_mul_cuda_supported(const at::Tensor& gate, const at::Tensor& up) {
  const at::ScalarType t = gate.defined() ? gate.scalar_type() : at::ScalarType::Undefined;
  return rows_ok(gate) && rows_ok(up) && gate.sizes().equals(up.sizes()) && up.scalar_type() == t &&
         up.device() == gate.device() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf);
}

at::Tensor silu_mul_cuda(const at::Tensor& gate, const at::Tensor& up) {
  if (!silu_mul_cuda_supported(gate, up))
    throw Error("silu_mul_cuda: needs gate and up [R, F] of one fp32/bf16/fp16 dtype on CUDA with unit column stride "
                "and row stride >= F; got gate " + (gate.defined() ? std::string(c10::str(gate.sizes())) : "undefined") +
                ", up " + (up.defined() ? std::string(c10::str(up.sizes())) : "undefined"));
  const c10::cuda::CUDAGuard guard(gate.device());
  const int64_t R = gate.size(0), F = gate.size(1);
  at::Tensor out = empty_output({R, F}, gate.options());  // [R, F]
  if (R * F == 0) return out;
  const int64_t ldg = R <= 1 ? F : gate.stride(0), ldu = R <= 1 ? F : up.stride(0);
  const auto blocks = static_cast<unsigned>((R * F + kThreads - 1) / kThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "silu_mul_cuda", [&] {
    silu_mul_kernel<scalar_t><<<blocks, kThreads, 0, current_stream()>>>(
        gate.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), R, F, ldg, ldu);
  });
  check_launch("silu_mul_cuda");
  return out;
}

}  // namespace hylo::kernels
