// Loads and stores that take the element type at run time (fp32, bf16 or fp16), for kernels whose inputs come
// in mixed dtypes (GDN feeds fp32 q/k and bf16 v). The branch is uniform across a launch, so it costs little
// next to the memory access; bulk tiles that feed the tensor cores use bf16 and cp.async instead.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <ATen/ATen.h>

#include "hylo/core/result.h"

namespace hylo::kernels {

enum class ElemType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

inline ElemType elem_type(const at::Tensor& t, const char* who) {
  switch (t.scalar_type()) {
    case at::kFloat: return ElemType::kF32;
    case at::kBFloat16: return ElemType::kBF16;
    case at::kHalf: return ElemType::kF16;
    default: throw Error(std::string(who) + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                         " is not handled by the CUDA kernel (fp32, bf16, fp16)");
  }
}

__device__ __forceinline__ float load_as_float(const void* p, int64_t i, ElemType t) {
  switch (t) {
    case ElemType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_from_float(void* p, int64_t i, ElemType t, float v) {
  switch (t) {
    case ElemType::kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    case ElemType::kF16: static_cast<__half*>(p)[i] = __float2half(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

}  // namespace hylo::kernels
