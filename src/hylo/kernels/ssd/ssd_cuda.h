// CUDA forms of Mamba2's SSD scan (ops/ssd.h), same contract and shapes as the ATen forms, which stay the CPU
// path and the test oracle. ops/ssd.cpp routes CUDA tensors here when the shape is supported: the step and the
// chunk forward when no input needs a gradient, and the chunk form with its backward (ssd_chunk_autograd) when
// one does.
//
//   ssd_step_cuda   token by token (decode): the fp32 state [P, N] of a head held in registers across the tokens
//                   of one call, read once and written once (in place when asked). Any T (meant for T = 1).
//   ssd_chunk_cuda  the chunked SSD form (prefill): chunk 64, the masked quadratic form inside a chunk, the
//                   chunk states passed serially, fp32 arithmetic throughout (SIMT, no tensor cores yet).
//
// Inputs as ssd_naive's: x [B, T, H, P], dt [B, T, H] (already softplus'ed), A [H], B [B, T, G, N],
// C [B, T, Gc, N], D [H] or undefined, state [B, H, P, N] fp32 or undefined (zeros). x, dt, A, B, C and D may
// each be fp32, bf16 or fp16 (the mixer passes fp32 dt and A, x/B/C in the model dtype); y comes back in x's
// dtype, the state in fp32.
#pragma once

#include <ATen/ATen.h>

#include "hylo/ops/ssd.h"

namespace hylo::kernels {

// N (d_state) a multiple of 32 in [32, 256], any P >= 1; dtypes as above; every tensor on a CUDA device.
bool ssd_step_cuda_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const at::Tensor& D, const at::Tensor& state);
// x [B, T, H, P] etc. (with the T axis; the op's one-token form unsqueezes). When `state_out` is defined
// ([B, H, P, N] fp32 contiguous; it may be `state` itself: in place) the final state is written there and
// returned; otherwise a new tensor is allocated.
SsdOutput ssd_step_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const at::Tensor& D, const at::Tensor& state,
                        at::Tensor state_out = {});

// P and N in [1, 128] (shared memory holds a chunk's x, B, C and the entering state), T >= 1; dtypes as above.
bool ssd_chunk_cuda_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const at::Tensor& D, const at::Tensor& state);
// The chunk size is the kernel's own (64); the ATen form's chunk_size changes only its rounding, not the function.
SsdOutput ssd_chunk_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                         const at::Tensor& C, const at::Tensor& D, const at::Tensor& state);

// Gradients of ssd_chunk_cuda's inputs, each in its input's dtype (d_initial_state fp32; dD and d_initial_state
// undefined when D or the initial state is).
struct SsdGrads {
  at::Tensor dx, ddt, dA, dB, dC, dD, d_initial_state;
};
// The chunked backward (ssd_chunk_bwd.cu): given the forward's inputs and the upstream gradients dy [B, T, H, P]
// (fp32, bf16 or fp16) and d_final_state [B, H, P, N] (any float dtype, or undefined = 0), recomputes the states
// entering each chunk and returns every input's gradient. fp32 arithmetic throughout. Same supported set as
// ssd_chunk_cuda (ssd_chunk_cuda_supports).
SsdGrads ssd_chunk_backward_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                 const at::Tensor& C, const at::Tensor& D, const at::Tensor& state,
                                 const at::Tensor& dy, const at::Tensor& d_final_state);

// ssd_chunk_cuda as a differentiable op (torch::autograd::Function: forward the chunk kernels, backward
// ssd_chunk_backward_cuda). Keeps only the inputs between forward and backward. Gradients flow to every input that
// requires one, from y, from the final state, or both.
SsdOutput ssd_chunk_autograd(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const at::Tensor& D, const at::Tensor& state);

}  // namespace hylo::kernels
