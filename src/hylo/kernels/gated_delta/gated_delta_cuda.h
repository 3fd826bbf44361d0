// CUDA forms of the gated delta rule (ops/gated_delta.h), same contract and shapes as the ATen forms, which
// stay the CPU path and the test oracle. ops/gated_delta.cpp routes CUDA tensors here when the shape is
// supported and no gradient is needed (these kernels have no backward yet; training keeps the ATen chunk form).
//
//   gated_delta_step_cuda   token-by-token (decode): one pass over the fp32 state per token, the state held in
//                           registers across the tokens of one call. Any T (meant for T = 1 or a few).
//   gated_delta_chunk_cuda  chunked WY/UT form (prefill), chunk 64, tensor cores (bf16 operands, fp32
//                           accumulation); batch-1 long prompts are split along the sequence (context parallel).
#pragma once

#include <ATen/ATen.h>

#include "hylo/ops/gated_delta.h"

namespace hylo::kernels {

// Dk a multiple of 32 in [32, 256], any Dv >= 1; q/k/v/g/beta fp32, bf16 or fp16; state fp32; on a CUDA device.
bool gated_delta_step_cuda_supports(const at::Tensor& q, const at::Tensor& v, const at::Tensor& initial_state);
// When `state_out` is defined ([B, H, Dv, Dk] fp32, may be initial_state itself: in place), the final state is
// written there and returned; otherwise a new tensor is allocated.
GatedDeltaOutput gated_delta_step_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& g, const at::Tensor& beta, double scale,
                                       const at::Tensor& initial_state, at::Tensor state_out = {});

// Dk in {64, 128, 256}, Dv a multiple of 64 up to 512 (any T >= 1); dtypes as above.
bool gated_delta_chunk_cuda_supports(const at::Tensor& q, const at::Tensor& v, const at::Tensor& initial_state);
// segments: how many sequence segments to run in parallel (context parallel); 0 = choose from the GPU size.
GatedDeltaOutput gated_delta_chunk_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& g, const at::Tensor& beta, double scale,
                                        const at::Tensor& initial_state, int segments = 0);

}  // namespace hylo::kernels
