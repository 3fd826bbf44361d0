// Mamba2's state-space duality (SSD) scan with a scalar decay per head (Dao & Gu 2024, HYLO.md 2.4 / 7.11,
// ENGINE-NOTES.md 6.2), in the three forms every recurrent mixer has (DESIGN.md section 5):
//   ssd_naive     -- the recurrence as written, token by token; fp64-capable; the oracle for the other two
//   ssd_chunk     -- the chunked SSD algorithm (quadratic form inside a chunk, state passing between chunks);
//                    training and prefill
//   ssd_recurrent -- one token; decode
// Per batch b and head h, with state S [P, N]:
//   S_t = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          (x_t [P], B_t [N])
//   y_t = S_t C_t + D_h * x_t                                    (C_t [N])
// Conventions shared by the three forms:
//   * dt is the step size Delta, already positive: the caller applies softplus(dt_raw + dt_bias) (the mixer does,
//     in fp32). A is the (negative) decay rate per head, A = -exp(A_log).
//   * B has G groups and C has Gc groups; each divides H and head h reads group h / (H / G) (mamba_ssm's
//     "(g h)" broadcast, identical to Llama's repeat_kv). Zebra's Mamba2 passes B with H_kv groups and C per head.
//   * Everything is computed in fp32 (fp64 when x is fp64); y comes back in x's dtype, states in the compute
//     dtype. D may be undefined (no skip term); an undefined initial state means zeros.
//   * The ATen forms are differentiable through plain ATen ops (no custom backward): the reference for the kernels.
//   * On CUDA, ssd_chunk and ssd_recurrent run the kernels of kernels/ssd (fp32 arithmetic, same contract) when no
//     input needs a gradient and the shape is supported; ssd_chunk also when one does (its backward kernels,
//     through kernels::ssd_chunk_autograd), except with a 128 x 128 state over more than 40,960 batch x token x head
//     rows, where the ATen form's tensor-core GEMMs are faster. Otherwise these ATen forms run, on the tensors'
//     device. HYLO_SSD_KERNELS=0 turns every kernel off, =1 uses them wherever supported (past the crossover too);
//     HYLO_SSD_KERNEL_BACKWARD=0 turns off only the gradient-needing route.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo {

struct SsdOutput {
  at::Tensor y;            // [B, T, H, P] (ssd_recurrent: [B, H, P]) in x's dtype
  at::Tensor final_state;  // [B, H, P, N] fp32 (fp64 for fp64 inputs)
};

// x [B, T, H, P], dt [B, T, H], A [H], B [B, T, G, N], C [B, T, Gc, N], D [H] or undefined,
// initial_state [B, H, P, N] or undefined. T may be 0.
SsdOutput ssd_naive(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                    const at::Tensor& C, const at::Tensor& D, const at::Tensor& initial_state);

// Same contract as ssd_naive; chunk_size Q >= 1 (mamba_ssm default 256; a shorter sequence is one chunk of its
// own length). Any T: the tail chunk is padded with dt = 0 (decay 1, no input), which leaves the state unchanged.
SsdOutput ssd_chunk(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                    const at::Tensor& C, const at::Tensor& D, const at::Tensor& initial_state,
                    int64_t chunk_size = 256);

// One token: x [B, H, P], dt [B, H], A [H], B [B, G, N], C [B, Gc, N], D [H] or undefined,
// state [B, H, P, N] or undefined (zeros). Returns y [B, H, P] and the new state (the input is not modified).
// With state_out ([B, H, P, N] in the compute dtype on x's device; it may be `state` itself, the decode loop's
// in-place update) the new state is written there and returned as final_state; calls that need a gradient cannot
// use it (an Error).
SsdOutput ssd_recurrent(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const at::Tensor& D, const at::Tensor& state,
                        const at::Tensor& state_out = {});

}  // namespace hylo
