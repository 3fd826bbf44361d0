// GatedDeltaNetMixer (MixerKind::kGdn): FLA's GatedDeltaNet layer (fla/layers/gated_deltanet.py, HYLO.md 2.5) with
// its parameter names under "gdn." (H heads, D hidden, Dk = head_k_dim, Dv = head_v_dim, K = conv_size):
//   q_proj.weight, k_proj.weight  [H*Dk, D]        v_proj.weight, g_proj.weight  [H*Dv, D]
//   a_proj.weight, b_proj.weight  [H, D]           A_log [H], dt_bias [H]
//   q_conv1d.weight, k_conv1d.weight [H*Dk, 1, K]  v_conv1d.weight [H*Dv, 1, K]   (ShortConvolution, no bias)
//   o_norm.weight [Dv]                              o_proj.weight [D, H*Dv]
// Forward: q, k, v = SiLU(shortconv(proj(x))); q, k L2-normalised per head (x / sqrt(sum x^2 + 1e-6), FLA's
// l2norm); g = -exp(A_log) * softplus(a_proj(x) + dt_bias); beta = sigmoid(b_proj(x)); the gated delta rule with
// scale Dk^-1/2 (chunk form for a stateless call or a prefill, recurrent form for a one-token step with a state);
// per-head o_norm(o) * SiLU(g_proj(x)) (FusedRMSNormGated); o_proj. use_short_conv = false replaces the convs
// by a plain SiLU, use_gate = false drops g_proj and keeps the plain RMSNorm, both as FLA does.
// Positions are not used (no RoPE). On CUDA a one-token step with a state (bf16, plan dims) runs everything between
// the projections and o_proj as one fused kernel (decode_fused); the ATen code stays the reference and CPU path.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "hylo/config/model_config.h"
#include "hylo/model/mixer.h"
#include "hylo/ops/packed_linear.h"

namespace hylo {

// Per-sequence state of one GDN layer, constant in context length. Our conv layout keeps the last K-1 inputs
// (FLA's ShortConvolution cache keeps K, the oldest unused); the recurrent state is FLA's state_v_first layout.
class GatedDeltaNetState : public MixerState {
 public:
  at::Tensor conv_q, conv_k;  // [B, H*Dk, K-1] the last K-1 projected inputs of each conv, model dtype
  at::Tensor conv_v;          // [B, H*Dv, K-1]
  at::Tensor recurrent;       // [B, H, Dv, Dk] the delta-rule state S, fp32 (fp64 for an fp64 model)
  int64_t bytes() const override;
};

class GatedDeltaNetMixer : public Mixer {
 public:
  // Throws hylo::Error naming the field when the spec is invalid.
  GatedDeltaNetMixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options);

  MixerKind kind() const override { return MixerKind::kGdn; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) override;
  std::unique_ptr<MixerState> new_state(int64_t batch, int64_t max_tokens,
                                        const at::TensorOptions& options) const override;
  void visit_parameters(const std::string& prefix, const ParamVisitor& visit) override;

  // FLA's random initialisation of a fresh layer: nn.Linear / nn.Conv1d defaults (U(+-1/sqrt(fan_in))),
  // A_log = log U(0, 16) with A floored at 1e-4 (U(0, .) can give log 0), dt_bias = softplus^-1(dt) with
  // dt = exp U(log 1e-3, log 1e-1) floored at 1e-4 (Mamba2), o_norm.weight = 1.
  void init_random(at::Generator& gen);

  // The chunk length of the chunk form (FLA: 64). Tests shorten it to exercise several chunks on tiny inputs.
  void set_chunk_size(int64_t chunk_size);

  const GdnSpec& spec() const { return spec_; }

  // The fused CUDA decode step (kernels/gated_delta/gdn_decode_fused.h): x [B, 1, D] -> [B, 1, D], the same math
  // as forward with a state and T == 1, reading and updating `pools`' rows `slots` ([B] int64 on x's device; or
  // undefined: row b of pools with B rows) in place. Returns an undefined tensor when the kernel does not cover
  // this call (CPU, no CUDA build, fused decode switched off, a gradient needed, dims/dtypes outside
  // gdn_decode_fused_supported, no short conv); the caller then runs forward. forward takes it by itself for a
  // CUDA one-token step with a state; the engine calls it with slot indices (no gather/scatter).
  at::Tensor decode_fused(const at::Tensor& x, GatedDeltaNetState& pools, const at::Tensor& slots);
  // Process-wide switch for decode_fused (on by default): tests and benchmarks compare against the ATen path.
  static void set_fused_decode(bool on);
  static bool fused_decode();

 private:
  // The input projections of x [.., D]: q, k [.., H*Dk], v [.., H*Dv], a, b [.., H], g [.., H*Dv] (undefined without
  // use_gate). One GEMM against the packed [q; k; v; a; b; g] weights when no gradient is needed (the results are
  // column views of one [.., 2*H*Dk + 2*H*Dv + 2*H] buffer); the separate at::linear calls otherwise (the reference,
  // and the training path).
  struct Projections {
    at::Tensor q, k, v, a, b, g;
  };
  Projections project(const at::Tensor& x);

  GdnSpec spec_;
  int64_t hidden_ = 0;
  int64_t chunk_size_ = 64;
  at::Tensor q_w_, k_w_;            // [H*Dk, D]
  at::Tensor v_w_, g_w_;            // [H*Dv, D] (g_w_ only with use_gate)
  at::Tensor a_w_, b_w_;            // [H, D]
  at::Tensor a_log_, dt_bias_;      // [H]
  at::Tensor q_conv_, k_conv_;      // [H*Dk, 1, K] (only with use_short_conv)
  at::Tensor v_conv_;               // [H*Dv, 1, K]
  at::Tensor norm_w_;               // [Dv]
  at::Tensor o_w_;                  // [D, H*Dv]
  ops::PackedLinear in_proj_;       // the packed input projections (inference), rebuilt when a weight changes
};

}  // namespace hylo
