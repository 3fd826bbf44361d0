#include "hylo/model/mixers/gqa.h"

#include <cmath>
#include <string>

#include "hylo/core/result.h"
#include "hylo/ops/attention.h"
#include "hylo/ops/rms_norm.h"
#include "hylo/ops/rope.h"

namespace hylo {

int64_t GqaState::bytes() const {
  int64_t n = 0;
  for (const auto* t : {&k, &v})
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  return n;
}

GqaMixer::GqaMixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options)
    : spec_(layer.gqa), eps_(config.rms_norm_eps) {
  const int64_t d = config.hidden_size, hq = spec_.num_heads, hkv = spec_.num_kv_heads, dh = spec_.head_dim;
  if (hq <= 0 || hkv <= 0 || hq % hkv != 0 || dh <= 0 || dh % 2 != 0)
    throw Error("gqa: invalid dims (heads " + std::to_string(hq) + ", kv heads " + std::to_string(hkv) +
                ", head_dim " + std::to_string(dh) + "): kv heads must divide heads and head_dim must be even");
  q_w_ = at::empty({hq * dh, d}, options);
  k_w_ = at::empty({hkv * dh, d}, options);
  v_w_ = at::empty({hkv * dh, d}, options);
  o_w_ = at::empty({d, hq * dh}, options);
  if (spec_.qkv_bias) {
    q_b_ = at::empty({hq * dh}, options);
    k_b_ = at::empty({hkv * dh}, options);
    v_b_ = at::empty({hkv * dh}, options);
  }
  if (spec_.o_bias) o_b_ = at::empty({d}, options);
  if (spec_.qk_norm) {
    q_norm_ = at::empty({dh}, options);
    k_norm_ = at::empty({dh}, options);
  }
  inv_freq_ = ops::rope_inv_freq(config.rope, dh).to(options.device());
  attention_scaling_ = ops::rope_attention_scaling(config.rope);
}

void GqaMixer::visit_parameters(const std::string& prefix, const ParamVisitor& visit) {
  const std::string p = prefix + "self_attn.";
  visit(p + "q_proj.weight", q_w_);
  if (q_b_.defined()) visit(p + "q_proj.bias", q_b_);
  visit(p + "k_proj.weight", k_w_);
  if (k_b_.defined()) visit(p + "k_proj.bias", k_b_);
  visit(p + "v_proj.weight", v_w_);
  if (v_b_.defined()) visit(p + "v_proj.bias", v_b_);
  visit(p + "o_proj.weight", o_w_);
  if (o_b_.defined()) visit(p + "o_proj.bias", o_b_);
  if (q_norm_.defined()) visit(p + "q_norm.weight", q_norm_);
  if (k_norm_.defined()) visit(p + "k_norm.weight", k_norm_);
}

std::unique_ptr<MixerState> GqaMixer::new_state(int64_t batch, int64_t max_tokens,
                                                const at::TensorOptions& options) const {
  auto state = std::make_unique<GqaState>();
  state->k = at::zeros({batch, spec_.num_kv_heads, max_tokens, spec_.head_dim}, options);
  state->v = at::zeros({batch, spec_.num_kv_heads, max_tokens, spec_.head_dim}, options);
  return state;
}

GqaProjection GqaMixer::project(const at::Tensor& x, const at::Tensor& positions) const {
  if (x.dim() != 3 || x.size(2) != hidden_size())
    throw Error("gqa: x must be [B, T, " + std::to_string(hidden_size()) + "], got " + c10::str(x.sizes()));
  const int64_t b = x.size(0), t = x.size(1);
  if (positions.dim() != 1 || positions.size(0) != t)
    throw Error("gqa: positions must be [T] = [" + std::to_string(t) + "], got " + c10::str(positions.sizes()));
  const int64_t hq = spec_.num_heads, hkv = spec_.num_kv_heads, dh = spec_.head_dim;
  at::Tensor q = at::linear(x, q_w_, q_b_).view({b, t, hq, dh});   // [B, T, Hq, Dh]
  at::Tensor k = at::linear(x, k_w_, k_b_).view({b, t, hkv, dh});  // [B, T, Hkv, Dh]
  at::Tensor v = at::linear(x, v_w_, v_b_).view({b, t, hkv, dh});  // [B, T, Hkv, Dh]
  if (spec_.qk_norm) {  // Qwen3: per-head RMSNorm before RoPE
    q = ops::rms_norm(q, q_norm_, eps_);
    k = ops::rms_norm(k, k_norm_, eps_);
  }
  // apply_rope takes [B, H, T, Dh]; the transposes are views.
  auto [cos, sin] = ops::rope_cos_sin(inv_freq_, positions, attention_scaling_, q.scalar_type());  // [T, Dh]
  q = ops::apply_rope(q.transpose(1, 2), cos, sin).transpose(1, 2);  // [B, T, Hq, Dh]
  k = ops::apply_rope(k.transpose(1, 2), cos, sin).transpose(1, 2);  // [B, T, Hkv, Dh]
  return {q, k, v};
}

at::Tensor GqaMixer::project_out(const at::Tensor& o) const {
  const int64_t hq = spec_.num_heads, dh = spec_.head_dim;
  if (o.dim() != 4 || o.size(2) != hq || o.size(3) != dh)
    throw Error("gqa: attention output must be [B, T, " + std::to_string(hq) + ", " + std::to_string(dh) +
                "], got " + c10::str(o.sizes()));
  return at::linear(o.reshape({o.size(0), o.size(1), hq * dh}), o_w_, o_b_);  // [B, T, D]
}

double GqaMixer::softmax_scale() const { return std::pow(static_cast<double>(spec_.head_dim), -0.5); }

at::Tensor GqaMixer::forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) {
  GqaProjection pr = project(x, positions);
  const int64_t b = x.size(0), t = x.size(1);
  at::Tensor q = pr.q.transpose(1, 2);  // [B, Hq, T, Dh]
  at::Tensor k = pr.k.transpose(1, 2);  // [B, Hkv, T, Dh]
  at::Tensor v = pr.v.transpose(1, 2);  // [B, Hkv, T, Dh]

  int64_t q_offset = 0;
  if (state != nullptr) {
    auto* kv = dynamic_cast<GqaState*>(state);
    if (kv == nullptr) throw Error("gqa: forward got a state that is not a GqaState");
    const int64_t capacity = kv->k.size(2);
    if (kv->length + t > capacity)
      throw Error("gqa: KV cache holds " + std::to_string(capacity) + " tokens; " + std::to_string(kv->length) +
                  " used, " + std::to_string(t) + " more requested");
    if (kv->k.size(0) != b) throw Error("gqa: state batch " + std::to_string(kv->k.size(0)) + " != input batch " +
                                        std::to_string(b));
    kv->k.narrow(2, kv->length, t).copy_(k);
    kv->v.narrow(2, kv->length, t).copy_(v);
    q_offset = kv->length;
    kv->length += t;
    k = kv->k.narrow(2, 0, kv->length);  // [B, Hkv, S, Dh]
    v = kv->v.narrow(2, 0, kv->length);
  }
  at::Tensor out = ops::causal_attention(q, k, v, softmax_scale(), q_offset, spec_.sliding_window);  // [B, Hq, T, Dh]
  return project_out(out.transpose(1, 2));                                                          // [B, T, D]
}

namespace {
const bool kRegistered = [] {
  register_mixer(MixerKind::kGqa, [](const ModelConfig& c, const LayerSpec& l, const at::TensorOptions& o) {
    return std::unique_ptr<Mixer>(new GqaMixer(c, l, o));
  });
  return true;
}();
}  // namespace

}  // namespace hylo
