// Mamba2Mixer (MixerKind::kMamba2): Mamba2 in the MambaInLlama / Zebra-Llama form (HYLO.md 2.4), with
// mamba_ssm's parameter names under "mamba." as AMD's released checkpoints use them:
//   in_proj.weight  [2*d_inner + 2*d_xb + H, D]  rows [z (d_inner) | x (d_xb) | B (d_xb) | C (d_inner) | dt (H)]
//   conv1d.weight   [conv_dim, 1, K], conv1d.bias [conv_dim]   depthwise causal conv + SiLU over xBC
//   dt_bias [H], A_log [H], D [H]
//   norm.weight     [d_inner]   gated RMSNorm: rmsnorm(y * silu(z)) per group of norm_group_size
//   out_proj.weight [D, d_inner]
// x and B come in H_kv = d_xb / d_state groups of width d_state (= head_dim) and are repeated to the H heads
// like Llama's repeat_kv (head h reads group h / (H / H_kv)); C is per head. By default the conv runs over
// xBC before the repeat (conv_dim = d_inner + 2*d_xb); with repeat_kv_before_conv it runs over the repeated
// [x | B | C] (conv_dim = 3*d_inner), as Zebra's switch of that name does.
//
// Forms: a stateless forward (training) and a prefill (T > 1 with a state) use ssd_chunk from the state (zeros
// for a stateless call); a decode step (T == 1 with a state) uses ssd_recurrent. Positions are not used (no RoPE).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "hylo/config/model_config.h"
#include "hylo/model/mixer.h"

namespace hylo {

// Per-sequence state of one Mamba2 layer; constant in context length.
class Mamba2State : public MixerState {
 public:
  at::Tensor conv;  // [B, conv_dim, K-1] the last K-1 conv inputs (xBC before the conv), model dtype
  at::Tensor ssm;   // [B, H, P, N] the SSD state, fp32 (fp64 for an fp64 model)
  int64_t bytes() const override;
};

class Mamba2Mixer : public Mixer {
 public:
  // Throws hylo::Error naming the field when the spec is not a valid Zebra layout.
  Mamba2Mixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options);

  MixerKind kind() const override { return MixerKind::kMamba2; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) override;
  std::unique_ptr<MixerState> new_state(int64_t batch, int64_t max_tokens,
                                        const at::TensorOptions& options) const override;
  void visit_parameters(const std::string& prefix, const ParamVisitor& visit) override;

  const Mamba2Spec& spec() const { return spec_; }
  int64_t conv_dim() const { return conv_dim_; }

 private:
  Mamba2Spec spec_;
  int64_t hidden_ = 0;
  int64_t kv_groups_ = 0;   // H_kv = d_xb / d_state
  int64_t conv_dim_ = 0;
  int64_t norm_group_ = 0;
  at::Tensor in_w_;         // [2*d_inner + 2*d_xb + H, D]
  at::Tensor conv_w_;       // [conv_dim, 1, K]
  at::Tensor conv_b_;       // [conv_dim] or undefined
  at::Tensor dt_bias_;      // [H]
  at::Tensor a_log_;        // [H]
  at::Tensor d_;            // [H]
  at::Tensor norm_w_;       // [d_inner]
  at::Tensor out_w_;        // [D, d_inner]
};

}  // namespace hylo
