// GqaMixer: the Transformer teacher's grouped-query softmax attention as a Mixer, with HF parameter names
// (self_attn.{q,k,v,o}_proj, Qwen3's self_attn.{q,k}_norm) and a KV cache as its MixerState.
//
// forward() is project() -> causal attention over the cache -> project_out(); the engine (infer/engine/
// engine_layer_gqa.cpp) calls the same project() / project_out() around its paged KV cache.
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

// The new tokens' queries, keys and values (GqaMixer::project), token-major as the engine's pages store them.
struct GqaProjection {
  at::Tensor q;  // [B, T, Hq, Dh] after q_norm (Qwen3) and RoPE
  at::Tensor k;  // [B, T, Hkv, Dh] after k_norm (Qwen3) and RoPE: what a KV cache stores
  at::Tensor v;  // [B, T, Hkv, Dh]
};

class GqaMixer : public Mixer {
 public:
  GqaMixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options);

  MixerKind kind() const override { return MixerKind::kGqa; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) override;
  std::unique_ptr<MixerState> new_state(int64_t batch, int64_t max_tokens,
                                        const at::TensorOptions& options) const override;
  void visit_parameters(const std::string& prefix, const ParamVisitor& visit) override;

  // x: [B, T, D]; positions: [T] int64 absolute positions (RoPE). Results in x's dtype.
  GqaProjection project(const at::Tensor& x, const at::Tensor& positions) const;
  // o: [B, T, Hq, Dh] attention output -> [B, T, D] (o_proj).
  at::Tensor project_out(const at::Tensor& o) const;
  double softmax_scale() const;  // head_dim^-0.5, as HF
  const GqaSpec& spec() const { return spec_; }
  int64_t hidden_size() const { return q_w_.size(1); }

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
