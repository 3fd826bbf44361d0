// CUDA forms of the gated delta rule (ops/gated_delta.h), same contract and shapes as the ATen forms, which
// stay the CPU path and the test oracle. ops/gated_delta.cpp routes CUDA tensors here when the shape is
// supported: the step and the chunk forward when no gradient is needed, and the chunk form with its backward
// (gated_delta_chunk_autograd) when one is.
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

// Gradients of gated_delta_chunk_cuda's outputs, each in its input's dtype (d_initial_state fp32, undefined when
// there is no initial state).
struct GatedDeltaGrads {
  at::Tensor dq, dk, dv, dg, dbeta, d_initial_state;
};
// The chunked backward: given the forward's inputs and the upstream gradients d_o [B, T, H, Dv] (any float dtype)
// and d_final_state [B, H, Dv, Dk] (or undefined = 0), recomputes the forward's per-chunk intermediates and returns
// every input's gradient. Same supported set as gated_delta_chunk_cuda; segments as its (the recompute and the
// reverse state walk are both split along the sequence).
GatedDeltaGrads gated_delta_chunk_backward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& g, const at::Tensor& beta, double scale,
                                                const at::Tensor& initial_state, const at::Tensor& d_o,
                                                const at::Tensor& d_final_state, int segments = 0);

// gated_delta_chunk_cuda as a differentiable op (torch::autograd::Function: forward the chunk kernel, backward
// gated_delta_chunk_backward_cuda). Inputs as gated_delta_chunk_cuda's; gradients flow to q, k, v, g, beta and
// initial_state (where they require them) from both o and final_state.
GatedDeltaOutput gated_delta_chunk_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& g, const at::Tensor& beta, double scale,
                                            const at::Tensor& initial_state);

}  // namespace hylo::kernels
