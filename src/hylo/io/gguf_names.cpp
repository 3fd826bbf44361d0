#include "hylo/io/gguf_names.h"

#include <array>
#include <cstring>
#include <string_view>

namespace hylo::io {

namespace {

struct NamePair {
  const char* gguf;  // after "blk.N." for per-layer entries
  const char* hf;    // after "model.layers.N." for per-layer entries
};

// Whole-model tensors.
constexpr std::array<NamePair, 3> kGlobal{{
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
}};

// Per-layer tensors (llama.cpp gguf-py tensor_mapping.py MODEL_TENSOR.* for these architectures).
constexpr std::array<NamePair, 11> kPerLayer{{
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"attn_q_norm", "self_attn.q_norm"},
    {"attn_k_norm", "self_attn.k_norm"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
}};

// Splits "stem.weight" / "stem.bias" into stem and suffix.
bool split_suffix(std::string_view name, std::string_view* stem, std::string_view* suffix) {
  for (std::string_view s : {std::string_view(".weight"), std::string_view(".bias")}) {
    if (name.size() > s.size() && name.ends_with(s)) {
      *stem = name.substr(0, name.size() - s.size());
      *suffix = s;
      return true;
    }
  }
  return false;
}

// Parses "<prefix><digits>.<rest>" into the layer number and rest.
bool split_layer(std::string_view stem, std::string_view prefix, int64_t* layer, std::string_view* rest) {
  if (!stem.starts_with(prefix)) return false;
  stem.remove_prefix(prefix.size());
  std::size_t i = 0;
  int64_t n = 0;
  while (i < stem.size() && stem[i] >= '0' && stem[i] <= '9' && i < 9) n = n * 10 + (stem[i++] - '0');
  if (i == 0 || i >= stem.size() || stem[i] != '.') return false;
  if (i > 1 && stem[0] == '0') return false;  // "blk.01" is not a canonical name
  *layer = n;
  *rest = stem.substr(i + 1);
  return true;
}

}  // namespace

std::optional<std::string> gguf_to_hf_name(const std::string& gguf_name) {
  std::string_view stem, suffix;
  if (!split_suffix(gguf_name, &stem, &suffix)) return std::nullopt;
  for (const auto& p : kGlobal)
    if (stem == p.gguf) return std::string(p.hf) + std::string(suffix);
  int64_t layer = 0;
  std::string_view rest;
  if (!split_layer(stem, "blk.", &layer, &rest)) return std::nullopt;
  for (const auto& p : kPerLayer)
    if (rest == p.gguf) return "model.layers." + std::to_string(layer) + "." + p.hf + std::string(suffix);
  return std::nullopt;
}

std::optional<std::string> hf_to_gguf_name(const std::string& hf_name) {
  std::string_view stem, suffix;
  if (!split_suffix(hf_name, &stem, &suffix)) return std::nullopt;
  for (const auto& p : kGlobal)
    if (stem == p.hf) return std::string(p.gguf) + std::string(suffix);
  int64_t layer = 0;
  std::string_view rest;
  if (!split_layer(stem, "model.layers.", &layer, &rest)) return std::nullopt;
  for (const auto& p : kPerLayer)
    if (rest == p.hf) return "blk." + std::to_string(layer) + "." + p.gguf + std::string(suffix);
  return std::nullopt;
}

Result<std::vector<float>> load_gguf_tensor_hf_layout(const GgufFile& f, const std::string& gguf_name,
                                                      const ModelConfig& cfg, std::vector<int64_t>* shape_out) {
  const GgufTensorInfo* info = f.find(gguf_name);
  if (info == nullptr) return make_error(f.path().string() + ": no tensor named \"" + gguf_name + "\"");
  HYLO_TRY(std::vector<float> data, f.dequantize(gguf_name));  // row-major [rows, ...]
  std::vector<int64_t> shape = info->shape();
  if (shape_out != nullptr) *shape_out = shape;

  // llama.cpp permutes q/k rows of arch "llama" only; the un-permutation needs the head count of the layer.
  std::string arch;
  if (auto a = f.get_string("general.architecture"); a.ok()) arch = a.value();
  if (arch != "llama") return data;
  std::string_view stem, suffix;
  int64_t layer = 0;
  std::string_view rest;
  if (!split_suffix(gguf_name, &stem, &suffix) || !split_layer(stem, "blk.", &layer, &rest)) return data;
  if (rest != "attn_q" && rest != "attn_k") return data;
  const std::string where = f.path().string() + ": tensor \"" + gguf_name + "\"";
  if (layer >= cfg.num_layers())
    return make_error(where + ": layer " + std::to_string(layer) + " is outside the model's " +
                      std::to_string(cfg.num_layers()) + " layers");
  const GqaSpec& g = cfg.layers[static_cast<std::size_t>(layer)].gqa;
  const int64_t n_head = rest == "attn_q" ? g.num_heads : g.num_kv_heads;
  const int64_t rows = shape[0];
  if (n_head <= 0 || rows % (2 * n_head) != 0)
    return make_error(where + ": " + std::to_string(rows) + " rows cannot be split into " + std::to_string(n_head) +
                      " heads of rotary pairs");
  const int64_t half = rows / n_head / 2;  // rotary pairs per head
  int64_t cols = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  // GGUF row h*2*half + 2*d + t holds HF row h*2*half + t*half + d (interleaved pairs -> two halves).
  std::vector<float> out(data.size());  // [rows, cols]
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t d = 0; d < half; ++d)
      for (int64_t t = 0; t < 2; ++t) {
        const int64_t src = h * 2 * half + 2 * d + t;
        const int64_t dst = h * 2 * half + t * half + d;
        std::memcpy(out.data() + dst * cols, data.data() + src * cols, static_cast<std::size_t>(cols) * sizeof(float));
      }
  return out;
}

}  // namespace hylo::io
