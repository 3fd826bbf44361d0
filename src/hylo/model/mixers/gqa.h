// GqaMixer: the Transformer teacher's grouped-query softmax attention as a Mixer, with HF parameter names
// (self_attn.{q,k,v,o}_proj, Qwen3's self_attn.{q,k}_norm) and a KV cache as its MixerState.
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "hylo/config/model_config.h"
#include "hylo/model/mixer.h"

namespace hylo {

// The KV cache of one layer: keys and values after RoPE for every position consumed so far.
class GqaState : public MixerState {
 public:
  at::Tensor k, v;     // [B, Hkv, Smax, Dh] each, in the model dtype
  int64_t length = 0;  // positions filled
  int64_t bytes() const override;
};

class GqaMixer : public Mixer {
 public:
  GqaMixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options);

  MixerKind kind() const override { return MixerKind::kGqa; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) override;
  std::unique_ptr<MixerState> new_state(int64_t batch, int64_t max_tokens,
                                        const at::TensorOptions& options) const override;
  void visit_parameters(const std::string& prefix, const ParamVisitor& visit) override;

 private:
  GqaSpec spec_;
  double eps_;
  double attention_scaling_;
  at::Tensor inv_freq_;                          // [Dh/2] fp32 on the model's device
  at::Tensor q_w_, k_w_, v_w_, o_w_;             // [Hq*Dh, D], [Hkv*Dh, D], [Hkv*Dh, D], [D, Hq*Dh]
  at::Tensor q_b_, k_b_, v_b_, o_b_;             // [Hq*Dh], [Hkv*Dh], [Hkv*Dh], [D] or undefined
  at::Tensor q_norm_, k_norm_;                   // [Dh] (Qwen3) or undefined
};

}  // namespace hylo
