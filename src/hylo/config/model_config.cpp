#include "hylo/config/model_config.h"

namespace hylo {

const char* mixer_kind_name(MixerKind kind) {
  switch (kind) {
    case MixerKind::kGqa: return "gqa";
    case MixerKind::kMla: return "mla";
    case MixerKind::kGdn: return "gdn";
    case MixerKind::kMamba2: return "mamba2";
  }
  return "?";
}

std::optional<MixerKind> parse_mixer_kind(const std::string& name) {
  if (name == "gqa" || name == "attention") return MixerKind::kGqa;
  if (name == "mla") return MixerKind::kMla;
  if (name == "gdn" || name == "gated_deltanet") return MixerKind::kGdn;
  if (name == "mamba2" || name == "m2") return MixerKind::kMamba2;
  return std::nullopt;
}

bool ModelConfig::is_hybrid() const {
  for (const auto& l : layers)
    if (l.mixer != MixerKind::kGqa) return true;
  return false;
}

namespace {

// Channels of the depthwise conv: over [x | B | C] as stored, or over x and B already repeated to every head.
int64_t mamba2_conv_dim(const Mamba2Spec& m) { return m.repeat_kv_before_conv ? 3 * m.d_inner : m.d_inner + 2 * m.d_xb; }

int64_t linear_params(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }

int64_t mixer_params(const ModelConfig& c, const LayerSpec& l) {
  const int64_t d = c.hidden_size;
  switch (l.mixer) {
    case MixerKind::kGqa: {
      const auto& g = l.gqa;
      int64_t q = g.num_heads * g.head_dim, kv = g.num_kv_heads * g.head_dim;
      int64_t p = linear_params(d, q, g.qkv_bias) + 2 * linear_params(d, kv, g.qkv_bias) +
                  linear_params(q, d, g.o_bias);
      if (g.qk_norm) p += 2 * g.head_dim;
      return p;
    }
    case MixerKind::kMla: {
      const auto& m = l.mla;
      int64_t qh = m.q_head_dim();
      int64_t p = 0;
      if (m.q_lora_rank > 0) {
        p += linear_params(d, m.q_lora_rank, m.bias) + linear_params(m.q_lora_rank, m.num_heads * qh, false);
        if (m.latent_norms) p += m.q_lora_rank;
      } else {
        p += linear_params(d, m.num_heads * qh, m.bias);
      }
      p += linear_params(d, m.kv_lora_rank + m.qk_rope_head_dim, m.bias);
      p += linear_params(m.kv_lora_rank, m.num_kv_groups * (m.qk_nope_head_dim + m.v_head_dim), false);
      if (m.latent_norms) p += m.kv_lora_rank;
      p += linear_params(m.num_heads * m.v_head_dim, d, m.bias);
      return p;
    }
    case MixerKind::kGdn: {
      const auto& g = l.gdn;
      int64_t kd = g.key_dim(), vd = g.value_dim();
      int64_t p = 2 * d * kd + d * vd;          // q, k, v projections
      p += 2 * d * g.num_heads;                 // a_proj, b_proj
      p += 2 * g.num_heads;                     // A_log, dt_bias
      if (g.use_short_conv) p += (2 * kd + vd) * g.conv_size;  // depthwise convs, no bias
      if (g.use_gate) p += d * vd;              // g_proj
      p += g.head_v_dim;                        // o_norm weight (shared across heads)
      p += vd * d;                              // o_proj
      return p;
    }
    case MixerKind::kMamba2: {
      const auto& m = l.mamba2;
      int64_t conv_dim = mamba2_conv_dim(m);
      int64_t in_proj = d * (2 * m.d_inner + 2 * m.d_xb + m.n_heads);
      int64_t conv = conv_dim * m.conv_size + (m.conv_bias ? conv_dim : 0);
      return in_proj + conv + 3 * m.n_heads /* A_log, D, dt_bias */ + m.d_inner /* norm */ + m.d_inner * d;
    }
  }
  return 0;
}

}  // namespace

LayerFootprint layer_footprint(const ModelConfig& c, const LayerSpec& l) {
  LayerFootprint f;
  const int64_t d = c.hidden_size;
  f.params = mixer_params(c, l) + 3 * d * l.intermediate_size + (l.mlp_bias ? 2 * l.intermediate_size + d : 0) +
             2 * d /* input and post-attention RMSNorms */;
  switch (l.mixer) {
    case MixerKind::kGqa: f.kv_elems_per_token = 2 * l.gqa.num_kv_heads * l.gqa.head_dim; break;
    case MixerKind::kMla: f.kv_elems_per_token = l.mla.cache_width(); break;
    case MixerKind::kGdn: {
      const auto& g = l.gdn;
      f.state_elems = g.num_heads * g.head_k_dim * g.head_v_dim +
                      (g.use_short_conv ? (2 * g.key_dim() + g.value_dim()) * (g.conv_size - 1) : 0);
      break;
    }
    case MixerKind::kMamba2: {
      const auto& m = l.mamba2;
      f.state_elems = m.n_heads * m.head_dim * m.d_state + mamba2_conv_dim(m) * (m.conv_size - 1);
      break;
    }
  }
  return f;
}

int64_t parameter_count(const ModelConfig& c) {
  int64_t p = c.vocab_size * c.hidden_size + c.hidden_size;  // embeddings + final norm
  if (!c.tie_word_embeddings) p += c.vocab_size * c.hidden_size;
  for (const auto& l : c.layers) p += layer_footprint(c, l).params;
  return p;
}

}  // namespace hylo
