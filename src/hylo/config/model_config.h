// ModelConfig: the one in-memory description of every model hylo runs -- Transformer teachers and hybrids
// alike. A model is a list of layers; each LayerSpec names its token mixer and carries that mixer's dims
// (DESIGN.md section 5: no layer-index special cases anywhere). Importers (HF config.json, GGUF metadata,
// hylo/AMD hybrid configs) produce this; models, upcycling and the engine consume it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hylo {

enum class MixerKind { kGqa, kMla, kGdn, kMamba2 };

// Plausibility bound for layer counts read from files, checked before anything is sized by them.
inline constexpr int64_t kMaxLayers = 100000;

// "gqa", "mla", "gdn", "mamba2"
const char* mixer_kind_name(MixerKind kind);
std::optional<MixerKind> parse_mixer_kind(const std::string& name);

// Rotary position embedding. `type` follows HF's rope_scaling.rope_type: "default" (no scaling), "linear",
// "llama3", "yarn". Fields not used by a type keep their defaults.
struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
  // yarn (HF / DeepSeek-V3 conventions)
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  std::optional<double> attention_factor;  // HF yarn: overrides the 0.1*ln(factor)+1 cos/sin scale
  bool truncate = true;                    // HF yarn: round the correction range to integers
  // llama.cpp's per-frequency factors (GGUF rope_freqs.weight, config/rope_freq_factors.h): when present, frequency
  // i is base^(-2i/d) / freq_factors[i] (as llama.cpp applies them) instead of the formula of `type`. [d/2]
  std::vector<float> freq_factors;
};

// Grouped-query softmax attention (the Transformer teacher's mixer). MHA: kv == heads; MQA: kv == 1.
struct GqaSpec {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  bool qkv_bias = false;   // Qwen2: bias on q/k/v; Llama attention_bias: on q/k/v/o
  bool o_bias = false;
  bool qk_norm = false;    // Qwen3: per-head RMSNorm on q and k before RoPE
  std::optional<int64_t> sliding_window;  // Mistral; absent = full causal attention
};

// Multi-head latent attention as in HyLo / Zebra-Llama (HYLO.md 2.2-2.3).
struct MlaSpec {
  int64_t num_heads = 0;
  int64_t q_lora_rank = 0;          // 0: full-rank q_proj instead of q_a_proj/q_b_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t num_kv_groups = 0;        // groups in kv_b_proj, repeated to num_heads (HyLo: 8; DeepSeek: num_heads)
  bool latent_norms = false;        // DeepSeek: RMSNorm on c_q and c_kv; HyLo/Zebra: identity
  bool bias = false;
  RopeConfig rope;                  // YaRN lives here: applied to the MLA rope slice only
  int64_t cache_width() const { return kv_lora_rank + qk_rope_head_dim; }
  int64_t q_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// Gated DeltaNet as in FLA (HYLO.md 2.5).
struct GdnSpec {
  int64_t num_heads = 0;
  int64_t head_k_dim = 0;           // 256 in HyLo
  int64_t head_v_dim = 0;           // 512 in HyLo (expand_v = 2)
  int64_t conv_size = 4;
  bool use_gate = true;
  bool use_short_conv = true;
  double norm_eps = 1e-5;
  int64_t key_dim() const { return num_heads * head_k_dim; }
  int64_t value_dim() const { return num_heads * head_v_dim; }
};

// Mamba2 in the MambaInLlama / Zebra form (HYLO.md 2.4): x and B are d_xb wide and repeated to n_heads.
struct Mamba2Spec {
  int64_t d_inner = 0;              // n_heads * head_dim
  int64_t d_xb = 0;                 // n_kv_groups * head_dim (x and B before the GQA-style repeat)
  int64_t d_state = 0;
  int64_t n_heads = 0;              // = ngroups in Zebra
  int64_t head_dim = 0;
  int64_t conv_size = 4;
  int64_t chunk_size = 256;
  int64_t norm_group_size = 0;      // gated RMSNorm group width; Zebra: d_inner / ngroups
  bool conv_bias = true;
  bool repeat_kv_before_conv = false;  // Zebra ssm_cfg option: conv over the repeated x/B instead (default off)
  double norm_eps = 1e-5;
};

struct LayerSpec {
  MixerKind mixer = MixerKind::kGqa;
  GqaSpec gqa;
  MlaSpec mla;
  GdnSpec gdn;
  Mamba2Spec mamba2;
  int64_t intermediate_size = 0;    // SwiGLU MLP width
  bool mlp_bias = false;
};

struct ModelConfig {
  std::string architecture;         // e.g. "LlamaForCausalLM"; hybrids keep the backbone's
  std::string model_type;           // e.g. "llama", "qwen2", "qwen3", "mistral"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 0;
  RopeConfig rope;                  // the GQA layers' RoPE
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype = "float32";
  // The backbone Transformer's attention and MLP dims. Kept for hybrids too: a hylo checkpoint's config.json
  // stays a valid backbone config (upcycling and HF tooling read it), with the per-layer truth in `layers`.
  GqaSpec backbone_attention;
  int64_t backbone_intermediate_size = 0;
  std::vector<LayerSpec> layers;

  int64_t num_layers() const { return static_cast<int64_t>(layers.size()); }
  bool is_hybrid() const;           // any layer other than gqa
};

// Parameter count and cache/state sizes, computed from the config alone (inspect, upcycle reports, memory
// planning). Bytes assume `bytes_per_elem` for caches (2 for bf16) and `state_bytes_per_elem` for states.
struct LayerFootprint {
  int64_t params = 0;
  int64_t kv_elems_per_token = 0;   // gqa: 2*kv*head_dim; mla: r_kv + rope; linear: 0
  int64_t state_elems = 0;          // per sequence, constant in context length (conv + recurrent)
};
LayerFootprint layer_footprint(const ModelConfig& config, const LayerSpec& layer);
int64_t parameter_count(const ModelConfig& config);  // embeddings + layers + final norm + head (if untied)

}  // namespace hylo
