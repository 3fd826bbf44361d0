#include "hylo/config/gguf_config.h"

#include <array>
#include <cstring>

#include "hylo/config/rope_freq_factors.h"

namespace hylo {

namespace {

struct ArchEntry {
  const char* gguf_arch;
  const char* hf_architecture;
  const char* model_type;
};
constexpr std::array<ArchEntry, 3> kArchs{{
    {"llama", "LlamaForCausalLM", "llama"},
    {"qwen2", "Qwen2ForCausalLM", "qwen2"},
    {"qwen3", "Qwen3ForCausalLM", "qwen3"},
}};

// A per-layer integer that GGUF stores either as one scalar or as an array with one entry per layer.
Result<std::vector<int64_t>> per_layer_int(const io::GgufFile& f, const std::string& key, int64_t n_layers) {
  const auto& md = f.metadata();
  auto it = md.find(key);
  if (it == md.end()) return make_error(f.path().string() + ": metadata key \"" + key + "\" is missing");
  if (std::holds_alternative<io::GgufArray>(it->second.v)) {
    HYLO_TRY(auto values, f.get_int_array(key));
    if (static_cast<int64_t>(values.size()) != n_layers)
      return make_error(f.path().string() + ": metadata key \"" + key + "\" has " + std::to_string(values.size()) +
                        " entries, expected one per layer (" + std::to_string(n_layers) + ")");
    return values;
  }
  HYLO_TRY(int64_t v, f.get_int(key));
  return std::vector<int64_t>(static_cast<std::size_t>(n_layers), v);
}

Status require_positive(const io::GgufFile& f, const std::string& key, int64_t v) {
  if (v <= 0) return make_error(f.path().string() + ": metadata key \"" + key + "\" = " + std::to_string(v) +
                                " (expected a positive integer)");
  return {};
}

}  // namespace

std::string supported_gguf_architectures() {
  std::string s;
  for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.gguf_arch);
  return s;
}

Result<ModelConfig> model_config_from_gguf(const io::GgufFile& f) {
  const std::string where = f.path().string();
  HYLO_TRY(std::string arch, f.get_string("general.architecture"));
  const ArchEntry* entry = nullptr;
  for (const auto& a : kArchs)
    if (arch == a.gguf_arch) entry = &a;
  if (entry == nullptr)
    return make_error(where + ": general.architecture \"" + arch + "\" is not supported (supported: " +
                      supported_gguf_architectures() + ")");
  const std::string p = arch + ".";

  ModelConfig c;
  c.architecture = entry->hf_architecture;
  c.model_type = entry->model_type;
  c.torch_dtype = "float32";  // weights are dequantized to f32

  HYLO_TRY(int64_t n_layers, f.get_int(p + "block_count"));
  HYLO_CHECK_OK(require_positive(f, p + "block_count", n_layers));
  // Sanity bound before anything is sized by it (the largest released models have a few hundred layers).
  if (n_layers > kMaxLayers)
    return make_error(where + ": metadata key \"" + p + "block_count\" = " + std::to_string(n_layers) +
                      " is not a plausible layer count");
  HYLO_TRY(c.hidden_size, f.get_int(p + "embedding_length"));
  HYLO_CHECK_OK(require_positive(f, p + "embedding_length", c.hidden_size));
  HYLO_TRY(auto ffn, per_layer_int(f, p + "feed_forward_length", n_layers));
  HYLO_TRY(auto heads, per_layer_int(f, p + "attention.head_count", n_layers));
  std::vector<int64_t> kv_heads = heads;
  if (f.has(p + "attention.head_count_kv")) {
    HYLO_TRY(kv_heads, per_layer_int(f, p + "attention.head_count_kv", n_layers));
  }
  HYLO_TRY(c.rms_norm_eps, f.get_float(p + "attention.layer_norm_rms_epsilon"));
  if (!(c.rms_norm_eps > 0))
    return make_error(where + ": metadata key \"" + p + "attention.layer_norm_rms_epsilon\" must be positive");
  if (f.has(p + "context_length")) {
    HYLO_TRY(c.max_position_embeddings, f.get_int(p + "context_length"));
  }

  // head_dim: attention.key_length when given, else hidden / heads (transformers' default).
  int64_t head_dim = 0;
  if (f.has(p + "attention.key_length")) {
    HYLO_TRY(head_dim, f.get_int(p + "attention.key_length"));
    HYLO_CHECK_OK(require_positive(f, p + "attention.key_length", head_dim));
    if (f.has(p + "attention.value_length")) {
      HYLO_TRY(int64_t vl, f.get_int(p + "attention.value_length"));
      if (vl != head_dim)
        return make_error(where + ": attention.value_length " + std::to_string(vl) + " differs from key_length " +
                          std::to_string(head_dim) + " (only equal q/k and v head dims are supported)");
    }
  } else {
    if (heads[0] <= 0 || c.hidden_size % heads[0] != 0)
      return make_error(where + ": embedding_length " + std::to_string(c.hidden_size) +
                        " is not divisible by attention.head_count " + std::to_string(heads[0]) +
                        " and attention.key_length is absent");
    head_dim = c.hidden_size / heads[0];
  }
  if (f.has(p + "rope.dimension_count")) {
    HYLO_TRY(int64_t rd, f.get_int(p + "rope.dimension_count"));
    if (rd != head_dim)
      return make_error(where + ": rope.dimension_count " + std::to_string(rd) + " differs from the head dim " +
                        std::to_string(head_dim) + " (partial rotary embeddings are not supported)");
  }

  // RoPE.
  if (f.has(p + "rope.freq_base")) {
    HYLO_TRY(c.rope.theta, f.get_float(p + "rope.freq_base"));
  }
  std::string scaling = "none";
  if (f.has(p + "rope.scaling.type")) {
    HYLO_TRY(scaling, f.get_string(p + "rope.scaling.type"));
  } else if (f.has(p + "rope.scale_linear")) {
    scaling = "linear";  // the pre-2024 key: a bare linear factor
  }
  if (scaling == "linear") {
    c.rope.type = "linear";
    if (f.has(p + "rope.scaling.factor")) {
      HYLO_TRY(c.rope.factor, f.get_float(p + "rope.scaling.factor"));
    } else {
      HYLO_TRY(c.rope.factor, f.get_float(p + "rope.scale_linear"));
    }
  } else if (scaling == "yarn") {
    c.rope.type = "yarn";
    HYLO_TRY(c.rope.factor, f.get_float(p + "rope.scaling.factor"));
    if (f.has(p + "rope.scaling.original_context_length")) {
      HYLO_TRY(c.rope.original_max_position_embeddings, f.get_int(p + "rope.scaling.original_context_length"));
    }
    if (f.has(p + "rope.scaling.yarn_beta_fast")) {
      HYLO_TRY(c.rope.beta_fast, f.get_float(p + "rope.scaling.yarn_beta_fast"));
    }
    if (f.has(p + "rope.scaling.yarn_beta_slow")) {
      HYLO_TRY(c.rope.beta_slow, f.get_float(p + "rope.scaling.yarn_beta_slow"));
    }
    if (f.has(p + "rope.scaling.yarn_attn_factor")) {
      HYLO_TRY(double af, f.get_float(p + "rope.scaling.yarn_attn_factor"));
      c.rope.attention_factor = af;
    }
  } else if (scaling != "none") {
    return make_error(where + ": rope.scaling.type \"" + scaling + "\" is not supported (none, linear, yarn)");
  }
  if (c.rope.type != "default" && !(c.rope.factor > 0))
    return make_error(where + ": rope.scaling.factor must be positive");
  if (const auto* rf = f.find("rope_freqs.weight"); rf != nullptr) {
    // llama3 RoPE scaling as llama.cpp's converter stores it: per-frequency factors that divide the frequencies.
    if (c.rope.type != "default")
      return make_error(where + ": tensor \"rope_freqs.weight\" together with rope.scaling.type \"" + scaling +
                        "\" (llama.cpp applies both; hylo supports the factors alone, as Llama-3.x GGUFs have them)");
    HYLO_TRY(std::vector<float> factors, f.dequantize("rope_freqs.weight"));
    HYLO_TRY(c.rope, rope_from_freq_factors(factors, c.rope.theta, head_dim, where + ": tensor \"rope_freqs.weight\""));
  }

  // Vocabulary: the embedding matrix is the truth; else <arch>.vocab_size; else the tokenizer's token list.
  if (const auto* emb = f.find("token_embd.weight"); emb != nullptr && emb->dims.size() == 2) {
    c.vocab_size = emb->shape()[0];
  } else if (f.has(p + "vocab_size")) {
    HYLO_TRY(c.vocab_size, f.get_int(p + "vocab_size"));
  } else if (f.has("tokenizer.ggml.tokens")) {
    const auto* arr = std::get_if<io::GgufArray>(&f.metadata().at("tokenizer.ggml.tokens").v);
    if (arr == nullptr) return make_error(where + ": metadata key \"tokenizer.ggml.tokens\" is not an array");
    c.vocab_size = static_cast<int64_t>(arr->size());
  } else {
    return make_error(where + ": cannot determine the vocabulary size (no token_embd.weight, " + p +
                      "vocab_size or tokenizer.ggml.tokens)");
  }
  HYLO_CHECK_OK(require_positive(f, "vocabulary size", c.vocab_size));
  c.tie_word_embeddings = f.find("output.weight") == nullptr;

  // Special tokens.
  if (f.has("tokenizer.ggml.bos_token_id")) {
    HYLO_TRY(int64_t bos, f.get_int("tokenizer.ggml.bos_token_id"));
    c.bos_token_id = bos;
  }
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!f.has(key)) continue;
    HYLO_TRY(int64_t id, f.get_int(key));
    bool seen = false;
    for (int64_t e : c.eos_token_ids) seen = seen || e == id;
    if (!seen) c.eos_token_ids.push_back(id);
  }
  if (f.has("tokenizer.ggml.padding_token_id")) {
    HYLO_TRY(int64_t pad, f.get_int("tokenizer.ggml.padding_token_id"));
    c.pad_token_id = pad;
  }

  // Layers.
  for (int64_t l = 0; l < n_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    const std::size_t i = static_cast<std::size_t>(l);
    HYLO_CHECK_OK(require_positive(f, p + "attention.head_count[" + std::to_string(l) + "]", heads[i]));
    HYLO_CHECK_OK(require_positive(f, p + "attention.head_count_kv[" + std::to_string(l) + "]", kv_heads[i]));
    HYLO_CHECK_OK(require_positive(f, p + "feed_forward_length[" + std::to_string(l) + "]", ffn[i]));
    if (heads[i] % kv_heads[i] != 0)
      return make_error(where + ": layer " + std::to_string(l) + ": attention.head_count " + std::to_string(heads[i]) +
                        " is not a multiple of attention.head_count_kv " + std::to_string(kv_heads[i]));
    LayerSpec spec;
    spec.mixer = MixerKind::kGqa;
    spec.gqa.num_heads = heads[i];
    spec.gqa.num_kv_heads = kv_heads[i];
    spec.gqa.head_dim = head_dim;
    spec.gqa.qkv_bias = f.find(blk + "attn_q.bias") != nullptr;
    spec.gqa.o_bias = f.find(blk + "attn_output.bias") != nullptr;
    spec.gqa.qk_norm = f.find(blk + "attn_q_norm.weight") != nullptr;
    spec.intermediate_size = ffn[i];
    spec.mlp_bias = f.find(blk + "ffn_gate.bias") != nullptr;
    c.layers.push_back(spec);
  }
  return c;
}

}  // namespace hylo
