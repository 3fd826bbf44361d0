// CUDA form of hylo::causal_conv1d (ops/causal_conv1d.h): depthwise causal conv over time with the conv state
// carried in and out, SiLU fused. Same contract and shapes as the ATen op, which stays the CPU form and the
// test oracle; ops/causal_conv1d.cpp routes CUDA tensors here when causal_conv1d_cuda_supports() says yes.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace hylo::kernels {

// Kernel widths 1..8, x in fp32/bf16/fp16/fp64 on a CUDA device, any B, T >= 1, C. The other tensors may have any
// floating dtype (they are converted); they must be on x's device.
bool causal_conv1d_cuda_supports(const at::Tensor& x, const at::Tensor& weight);

// x [B, T, C], weight [C, K], bias [C] or undefined, conv_state [B, C, K-1] or undefined (zeros).
// Returns {y [B, T, C] in x's dtype, new_state [B, C, K-1] in x's dtype}. Shapes are checked by the caller (the op).
std::pair<at::Tensor, at::Tensor> causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                     const at::Tensor& bias, const at::Tensor& conv_state, bool silu);

}  // namespace hylo::kernels
