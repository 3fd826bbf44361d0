// One fused CUDA kernel for a Gated DeltaNet layer's decode step (one token per sequence), everything between
// the input projections and o_proj of GatedDeltaNetMixer::forward (model/mixers/gated_deltanet.cpp), which stays
// the reference and the CPU path:
//   q, k, v = SiLU(causal_conv1d update with their conv states)   (each rounded to the activation dtype, as ATen)
//   q, k    = FLA l2norm per head (eps 1e-6), q *= Dk^-1/2
//   g = -exp(A_log) * softplus(a + dt_bias),  beta = sigmoid(b)
//   S = exp(g) S;  S += beta (v - S k) k^T;  o = S q              (fp32 state, o rounded to bf16 as the step kernel)
//   out = rmsnorm(o) * norm_w * SiLU(gate)                         (norm before gate; no gate: plain rmsnorm * w)
// The conv states and the recurrent state are read and updated in place in pools addressed by a slot index per
// row ([B] int64, or row b itself when undefined), so the engine needs no gather/scatter. No host sync, no host
// tensors, shapes independent of data: safe to capture in a CUDA graph. A slot outside [0, pool rows) writes NaN
// to that row's output and touches no state.
#pragma once

#include <ATen/ATen.h>

namespace hylo::kernels {

struct GdnDecodeParams {
  at::Tensor q_conv, k_conv, v_conv;  // [H*Dk, K], [H*Dk, K], [H*Dv, K]
  at::Tensor a_log, dt_bias;          // [H]
  at::Tensor norm_w;                  // [Dv]
  double norm_eps = 1e-5;
  double scale = 0.0;                 // Dk^-1/2
};

struct GdnDecodePools {
  at::Tensor conv_q, conv_k;  // [S, H*Dk, K-1] activation dtype
  at::Tensor conv_v;          // [S, H*Dv, K-1]
  at::Tensor recurrent;       // [S, H, Dv, Dk] fp32
};

// H >= 1, Dk in {128, 256}, Dv in {128, 256, 512}, K = 4; bf16 activations and conv states, fp32 recurrent state,
// contiguous pools, on a CUDA device.
bool gdn_decode_fused_supported(const at::Tensor& x, int64_t H, int64_t Dk, int64_t Dv, int64_t K,
                                const GdnDecodePools& pools);

// q, k: [B, H*Dk], v: [B, H*Dv], a, b: [B, H], gate: [B, H*Dv] or undefined (no gate); all bf16 with unit column
// stride; rows may be strided (column views of one packed projection output [B, 2*H*Dk + 2*H*Dv + 2*H]).
// slots: [B] int64 on the device, or undefined (row b uses pool row b). Returns [B, H*Dv] bf16 (the o_proj input).
// Throws hylo::Error naming the argument when a shape or dtype is off.
at::Tensor gdn_decode_fused_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
                                 const at::Tensor& b, const at::Tensor& gate, const GdnDecodeParams& params,
                                 const GdnDecodePools& pools, const at::Tensor& slots);

}  // namespace hylo::kernels
