// SwiGLU's elementwise middle, SiLU(gate) * up, as one CUDA kernel reading gate and up straight out of the packed
// [gate ; up] projection output (ops::swiglu_mlp with ops::PackedLinear): 1 kernel instead of ATen's 2 (silu, mul)
// per MLP in the decode step. Rounds where ATen rounds: SiLU's result to the storage dtype, then the product.
// No host sync: safe in a CUDA graph.
#pragma once

#include <ATen/ATen.h>

namespace hylo::kernels {

// gate, up: [R, F] (any leading shape flattened by the caller) with unit column stride and a row stride each
// (views of one [R, 2F] buffer are the intended input), fp32 / bf16 / fp16, one dtype, on CUDA.
bool silu_mul_cuda_supported(const at::Tensor& gate, const at::Tensor& up);

// Returns SiLU(gate) * up, [R, F] contiguous in their dtype. Throws hylo::Error when not supported.
at::Tensor silu_mul_cuda(const at::Tensor& gate, const at::Tensor& up);

}  // namespace hylo::kernels
