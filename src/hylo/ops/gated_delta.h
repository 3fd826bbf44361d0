// The gated delta rule of Gated DeltaNet (Yang, Kautz, Hatamizadeh, arXiv 2412.06464; FLA gated_delta_rule) in
// the three forms every recurrent mixer has (DESIGN.md section 5):
//   gated_delta_naive     : the recurrence token by token; fp64-capable; the oracle.
//   gated_delta_chunk     : chunkwise-parallel WY/UT form (training and prefill), carries initial -> final state.
//   gated_delta_recurrent : the decode step (read the prediction, write the error), meant for T = 1 or a few tokens.
// naive and recurrent run the same per-token step (decay, read, write the error), so they are equal by
// construction; tests/cpp/gdn pins that step to the recurrence below written with explicit matrices.
// All three are plain ATen ops, so autograd differentiates every input including the initial state.
//
// Per head, with S the [Dv x Dk] state, alpha_t = exp(g_t) and L2-normalised keys (the caller normalises):
//   S_t = alpha_t * S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,        o_t = S_t (scale * q_t).
//
// Shapes (glossary: B batch, T tokens, H heads, Dk key/query head dim, Dv value head dim):
//   q, k:           [B, T, H, Dk]
//   v:              [B, T, H, Dv]
//   g:              [B, T, H]   log of the decay alpha (<= 0 in GDN)
//   beta:           [B, T, H]   write strength (in (0, 1) in GDN)
//   initial_state:  [B, H, Dv, Dk] or undefined (= zeros). This is S itself, the "V-first" layout that FLA's
//                   GatedDeltaNet layer uses (state_v_first=True); FLA's op-level default [B, H, Dk, Dv] is S^T.
// Returns o [B, T, H, Dv] in v's dtype and final_state [B, H, Dv, Dk] in fp32 (fp64 when v is fp64): the state and
// every intermediate are kept in fp32 whatever the input dtype, because the state accumulates over the whole
// sequence and bf16 would lose it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo {

struct GatedDeltaOutput {
  at::Tensor o;            // [B, T, H, Dv] in v's dtype
  at::Tensor final_state;  // [B, H, Dv, Dk] fp32 (fp64 for fp64 inputs)
};

GatedDeltaOutput gated_delta_naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& g, const at::Tensor& beta, double scale,
                                   const at::Tensor& initial_state);

// chunk_size >= 1 (FLA uses 64); T need not be a multiple of it.
GatedDeltaOutput gated_delta_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& g, const at::Tensor& beta, double scale,
                                   const at::Tensor& initial_state, int64_t chunk_size = 64);

// Any T >= 1, one step per token (cost linear in T with no parallelism over time: use the chunk form for prefill).
GatedDeltaOutput gated_delta_recurrent(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& g, const at::Tensor& beta, double scale,
                                       const at::Tensor& initial_state);

}  // namespace hylo
