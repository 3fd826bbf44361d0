#include "hylo/config/hf_config.h"

#include <cmath>
#include <optional>

#include "hylo/core/file_util.h"
#include "hylo/io/json_strict.h"

namespace hylo {
namespace {

using nlohmann::json;

struct Family {
  const char* architecture;
  const char* model_type;
  int64_t default_max_position_embeddings;
  std::optional<int64_t> default_head_dim;  // Qwen3's config class defaults head_dim to 128
  bool qwen_sliding;                         // use_sliding_window / max_window_layers / layer_types
  bool mistral_sliding;                      // sliding_window applies to every layer when set
};

// Defaults from the transformers 5.x configuration classes of each family.
const Family kFamilies[] = {
    {"LlamaForCausalLM", "llama", 2048, std::nullopt, false, false},
    {"Qwen2ForCausalLM", "qwen2", 32768, std::nullopt, true, false},
    {"Qwen3ForCausalLM", "qwen3", 32768, 128, true, false},
    {"MistralForCausalLM", "mistral", 4096 * 32, std::nullopt, false, true},
};

// Typed access to optional fields: absent or null -> nullopt; present with the wrong type -> error naming the
// file and the field.
class Reader {
 public:
  Reader(const json& j, std::string source, std::string prefix = "")
      : j_(j), source_(std::move(source)), prefix_(std::move(prefix)) {}

  std::string where(const std::string& key) const { return source_ + ": field '" + prefix_ + key + "'"; }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  Result<std::optional<int64_t>> opt_int(const std::string& key) const {
    if (!has(key)) return std::optional<int64_t>{};
    const json& v = j_.at(key);
    if (v.is_number_integer() || v.is_number_unsigned()) return std::optional<int64_t>{v.get<int64_t>()};
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (d == std::floor(d) && std::abs(d) < 9e15) return std::optional<int64_t>{static_cast<int64_t>(d)};
    }
    return make_error(where(key) + " must be an integer, found " + v.dump());
  }
  Result<int64_t> req_int(const std::string& key, int64_t min_value) const {
    HYLO_TRY(auto v, opt_int(key));
    if (!v) return make_error(where(key) + " is required (an integer >= " + std::to_string(min_value) + ")");
    if (*v < min_value)
      return make_error(where(key) + " must be >= " + std::to_string(min_value) + ", found " + std::to_string(*v));
    return *v;
  }
  Result<std::optional<double>> opt_double(const std::string& key) const {
    if (!has(key)) return std::optional<double>{};
    const json& v = j_.at(key);
    if (!v.is_number()) return make_error(where(key) + " must be a number, found " + v.dump());
    return std::optional<double>{v.get<double>()};
  }
  Result<std::optional<bool>> opt_bool(const std::string& key) const {
    if (!has(key)) return std::optional<bool>{};
    const json& v = j_.at(key);
    if (!v.is_boolean()) return make_error(where(key) + " must be true or false, found " + v.dump());
    return std::optional<bool>{v.get<bool>()};
  }
  Result<std::optional<std::string>> opt_string(const std::string& key) const {
    if (!has(key)) return std::optional<std::string>{};
    const json& v = j_.at(key);
    if (!v.is_string()) return make_error(where(key) + " must be a string, found " + v.dump());
    return std::optional<std::string>{v.get<std::string>()};
  }
  // An int, a list of ints, or null.
  Result<std::vector<int64_t>> int_or_list(const std::string& key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = j_.at(key);
    auto one = [&](const json& e) -> Status {
      if (!(e.is_number_integer() || e.is_number_unsigned()) || e.get<int64_t>() < 0)
        return make_error(where(key) + " must be a token id (int >= 0) or a list of them, found " + v.dump());
      out.push_back(e.get<int64_t>());
      return {};
    };
    if (v.is_array()) {
      for (const auto& e : v) HYLO_CHECK_OK(one(e));
    } else {
      HYLO_CHECK_OK(one(v));
    }
    return out;
  }

 private:
  const json& j_;
  std::string source_, prefix_;
};

std::string join_supported() {
  std::string s;
  for (const auto& f : kFamilies) s += (s.empty() ? "" : ", ") + std::string(f.architecture);
  return s;
}

// RoPE from `rope_parameters` (5.x) or `rope_theta` + `rope_scaling` (4.x).
Result<RopeConfig> parse_rope(const json& j, const std::string& source, int64_t max_position_embeddings) {
  Reader top(j, source);
  RopeConfig rope;
  HYLO_TRY(auto theta_top, top.opt_double("rope_theta"));
  const json* params = nullptr;
  std::string params_key;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (top.has(key)) {
      params = &j.at(key);
      params_key = key;
      break;
    }
  }
  if (params == nullptr) {
    if (theta_top) rope.theta = *theta_top;
    if (!(rope.theta > 0)) return make_error(top.where("rope_theta") + " must be > 0");
    return rope;
  }
  if (!params->is_object())
    return make_error(top.where(params_key) + " must be an object, found " + params->dump());
  Reader r(*params, source, params_key + ".");
  HYLO_TRY(auto theta, r.opt_double("rope_theta"));
  rope.theta = theta ? *theta : (theta_top ? *theta_top : 10000.0);
  if (!(rope.theta > 0)) return make_error(r.where("rope_theta") + " must be > 0");
  HYLO_TRY(auto type, r.opt_string("rope_type"));
  std::string type_key = "rope_type";
  if (!type) {
    HYLO_TRY(auto legacy, r.opt_string("type"));
    type = legacy;
    type_key = "type";
  }
  rope.type = type ? *type : "default";
  HYLO_TRY(auto partial, r.opt_double("partial_rotary_factor"));
  HYLO_TRY(auto partial_top, top.opt_double("partial_rotary_factor"));
  for (auto p : {partial, partial_top})
    if (p && *p != 1.0)
      return make_error(source + ": partial_rotary_factor " + std::to_string(*p) +
                        " is not supported for these architectures (only 1.0)");

  HYLO_TRY(auto factor, r.opt_double("factor"));
  HYLO_TRY(auto orig, r.opt_int("original_max_position_embeddings"));
  HYLO_TRY(auto orig_top, top.opt_int("original_max_position_embeddings"));
  const int64_t original = orig ? *orig : (orig_top ? *orig_top : max_position_embeddings);

  if (rope.type == "default") {
    return rope;
  } else if (rope.type == "linear") {
    if (!factor) return make_error(r.where("factor") + " is required for rope type 'linear'");
    rope.factor = *factor;
  } else if (rope.type == "llama3") {
    if (!factor) return make_error(r.where("factor") + " is required for rope type 'llama3'");
    rope.factor = *factor;
    HYLO_TRY(auto lo, r.opt_double("low_freq_factor"));
    HYLO_TRY(auto hi, r.opt_double("high_freq_factor"));
    if (!lo || !hi)
      return make_error(r.where(lo ? "high_freq_factor" : "low_freq_factor") + " is required for rope type 'llama3'");
    if (*hi == *lo)
      return make_error(r.where("high_freq_factor") + " must differ from low_freq_factor for rope type 'llama3'");
    rope.low_freq_factor = *lo;
    rope.high_freq_factor = *hi;
    rope.original_max_position_embeddings = original;
    if (params->contains("freq_factors")) {
      const json& ff = params->at("freq_factors");
      if (!ff.is_array() || static_cast<int64_t>(ff.size()) < 1)
        return make_error(r.where("freq_factors") + ": expected an array of numbers (hylo: llama.cpp's RoPE factors)");
      for (const auto& v : ff) {
        if (!v.is_number()) return make_error(r.where("freq_factors") + ": expected an array of numbers");
        rope.freq_factors.push_back(v.get<float>());
      }
    }
  } else if (rope.type == "yarn") {
    rope.original_max_position_embeddings = original;
    // HF: a missing factor is max_position_embeddings / original_max_position_embeddings.
    rope.factor = factor ? *factor
                         : static_cast<double>(max_position_embeddings) / static_cast<double>(original);
    HYLO_TRY(auto af, r.opt_double("attention_factor"));
    rope.attention_factor = af;
    HYLO_TRY(auto bf, r.opt_double("beta_fast"));
    HYLO_TRY(auto bs, r.opt_double("beta_slow"));
    // HF uses `value or default`, so 0 means the default too.
    rope.beta_fast = (bf && *bf != 0.0) ? *bf : 32.0;
    rope.beta_slow = (bs && *bs != 0.0) ? *bs : 1.0;
    HYLO_TRY(auto ms, r.opt_double("mscale"));
    HYLO_TRY(auto msa, r.opt_double("mscale_all_dim"));
    rope.mscale = ms ? *ms : 1.0;
    rope.mscale_all_dim = msa ? *msa : 0.0;
    HYLO_TRY(auto trunc, r.opt_bool("truncate"));
    rope.truncate = trunc ? *trunc : true;
  } else {
    return make_error(r.where(type_key) + " '" + rope.type +
                      "' is not supported (supported: default, linear, llama3, yarn)");
  }
  if (original <= 0 && rope.type != "linear")
    return make_error(r.where("original_max_position_embeddings") + " must be > 0 for rope type '" + rope.type + "'");
  if (!(rope.factor > 0)) return make_error(r.where("factor") + " must be > 0");
  return rope;
}

}  // namespace

std::string supported_hf_architectures() { return join_supported(); }

Result<ModelConfig> model_config_from_hf_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return make_error(source + ": expected a JSON object at the top level");
  Reader r(j, source);
  ModelConfig c;

  // Architecture: `architectures[0]`, else inferred from model_type.
  const Family* family = nullptr;
  HYLO_TRY(auto model_type, r.opt_string("model_type"));
  if (r.has("architectures")) {
    const json& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string())
      return make_error(r.where("architectures") + " must be a non-empty list of strings, found " + a.dump());
    std::string arch = a[0].get<std::string>();
    for (const auto& f : kFamilies)
      if (arch == f.architecture) family = &f;
    if (family == nullptr)
      return make_error(r.where("architectures") + ": architecture '" + arch + "' is not supported (supported: " +
                        join_supported() + ")");
  } else if (model_type) {
    for (const auto& f : kFamilies)
      if (*model_type == f.model_type) family = &f;
    if (family == nullptr)
      return make_error(r.where("model_type") + ": model type '" + *model_type +
                        "' is not supported (supported: llama, qwen2, qwen3, mistral)");
  } else {
    return make_error(source + ": neither 'architectures' nor 'model_type' is present (supported: " +
                      join_supported() + ")");
  }
  if (model_type && *model_type != family->model_type)
    return make_error(r.where("model_type") + " is '" + *model_type + "' but architectures names " +
                      family->architecture + " (model_type '" + family->model_type + "')");
  c.architecture = family->architecture;
  c.model_type = family->model_type;

  HYLO_TRY(auto act, r.opt_string("hidden_act"));
  if (act && *act != "silu" && *act != "swish")
    return make_error(r.where("hidden_act") + " '" + *act + "' is not supported (supported: silu)");
  HYLO_TRY(auto mlp_act, r.opt_string("mlp_hidden_act"));
  if (mlp_act && *mlp_act != "silu")
    return make_error(r.where("mlp_hidden_act") + " '" + *mlp_act + "' is not supported (supported: silu)");
  HYLO_TRY(auto tp, r.opt_int("pretraining_tp"));
  if (tp && *tp != 1) return make_error(r.where("pretraining_tp") + " must be 1 (found " + std::to_string(*tp) + ")");

  HYLO_TRY(c.vocab_size, r.req_int("vocab_size", 1));
  HYLO_TRY(c.hidden_size, r.req_int("hidden_size", 1));
  HYLO_TRY(int64_t intermediate, r.req_int("intermediate_size", 1));
  HYLO_TRY(int64_t layers, r.req_int("num_hidden_layers", 1));
  if (layers > kMaxLayers)
    return make_error(r.where("num_hidden_layers") + " is " + std::to_string(layers) + " (at most " +
                      std::to_string(kMaxLayers) + " supported)");
  HYLO_TRY(int64_t heads, r.req_int("num_attention_heads", 1));
  HYLO_TRY(auto kv_heads_opt, r.opt_int("num_key_value_heads"));
  const int64_t kv_heads = kv_heads_opt ? *kv_heads_opt : heads;
  if (kv_heads < 1 || heads % kv_heads != 0)
    return make_error(r.where("num_key_value_heads") + " must be >= 1 and divide num_attention_heads (" +
                      std::to_string(heads) + "), found " + std::to_string(kv_heads));
  HYLO_TRY(auto head_dim_opt, r.opt_int("head_dim"));
  int64_t head_dim = 0;
  if (head_dim_opt) {
    head_dim = *head_dim_opt;
  } else if (family->default_head_dim) {
    head_dim = *family->default_head_dim;
  } else {
    if (c.hidden_size % heads != 0)
      return make_error(r.where("hidden_size") + " (" + std::to_string(c.hidden_size) +
                        ") must be divisible by num_attention_heads when head_dim is not given");
    head_dim = c.hidden_size / heads;
  }
  if (head_dim < 2 || head_dim % 2 != 0)
    return make_error(r.where("head_dim") + " must be even and >= 2 for RoPE, found " + std::to_string(head_dim));

  HYLO_TRY(auto eps, r.opt_double("rms_norm_eps"));
  c.rms_norm_eps = eps ? *eps : 1e-6;
  if (!(c.rms_norm_eps > 0)) return make_error(r.where("rms_norm_eps") + " must be > 0");
  HYLO_TRY(auto tie, r.opt_bool("tie_word_embeddings"));
  c.tie_word_embeddings = tie ? *tie : false;
  HYLO_TRY(auto maxpos, r.opt_int("max_position_embeddings"));
  c.max_position_embeddings = maxpos ? *maxpos : family->default_max_position_embeddings;
  HYLO_TRY(c.rope, parse_rope(j, source, c.max_position_embeddings));

  HYLO_TRY(auto bos, r.int_or_list("bos_token_id"));
  if (bos.size() > 1) return make_error(r.where("bos_token_id") + " must be a single token id");
  if (!bos.empty()) c.bos_token_id = bos[0];
  HYLO_TRY(c.eos_token_ids, r.int_or_list("eos_token_id"));
  HYLO_TRY(auto pad, r.int_or_list("pad_token_id"));
  if (!pad.empty()) c.pad_token_id = pad[0];
  HYLO_TRY(auto dtype, r.opt_string("dtype"));
  HYLO_TRY(auto torch_dtype, r.opt_string("torch_dtype"));
  c.torch_dtype = dtype ? *dtype : (torch_dtype ? *torch_dtype : "float32");

  // Biases: Qwen2 has q/k/v bias and none on o; Llama and Qwen3 put attention_bias on q/k/v/o; Mistral none.
  HYLO_TRY(auto attn_bias, r.opt_bool("attention_bias"));
  HYLO_TRY(auto mlp_bias, r.opt_bool("mlp_bias"));
  GqaSpec gqa;
  gqa.num_heads = heads;
  gqa.num_kv_heads = kv_heads;
  gqa.head_dim = head_dim;
  if (c.model_type == "qwen2") {
    gqa.qkv_bias = true;
  } else if (c.model_type == "llama" || c.model_type == "qwen3") {
    gqa.qkv_bias = gqa.o_bias = attn_bias.value_or(false);
  }
  gqa.qk_norm = c.model_type == "qwen3";
  const bool has_mlp_bias = c.model_type == "llama" && mlp_bias.value_or(false);

  // Sliding windows, per layer.
  std::vector<std::optional<int64_t>> window(layers);
  HYLO_TRY(auto sliding, r.opt_int("sliding_window"));
  if (sliding && *sliding < 1) return make_error(r.where("sliding_window") + " must be >= 1");
  if (family->mistral_sliding && sliding) {
    for (auto& w : window) w = sliding;
  } else if (family->qwen_sliding) {
    HYLO_TRY(auto use, r.opt_bool("use_sliding_window"));
    if (use.value_or(false) && sliding) {
      if (r.has("layer_types")) {
        const json& lt = j.at("layer_types");
        if (!lt.is_array() || static_cast<int64_t>(lt.size()) != layers)
          return make_error(r.where("layer_types") + " must be a list of num_hidden_layers (" +
                            std::to_string(layers) + ") strings");
        for (int64_t i = 0; i < layers; ++i) {
          const json& t = lt[i];
          if (t == "sliding_attention") {
            window[i] = sliding;
          } else if (t != "full_attention") {
            return make_error(r.where("layer_types") + "[" + std::to_string(i) + "] is " + t.dump() +
                              " (supported: full_attention, sliding_attention)");
          }
        }
      } else {
        HYLO_TRY(auto mwl, r.opt_int("max_window_layers"));
        const int64_t first = mwl.value_or(28);
        for (int64_t i = first < 0 ? 0 : first; i < layers; ++i) window[i] = sliding;
      }
    }
  }

  c.layers.resize(layers);
  for (int64_t i = 0; i < layers; ++i) {
    LayerSpec& l = c.layers[i];
    l.mixer = MixerKind::kGqa;
    l.gqa = gqa;
    l.gqa.sliding_window = window[i];
    l.intermediate_size = intermediate;
    l.mlp_bias = has_mlp_bias;
  }
  // Kept when the layers are later replaced by a hybrid block (hybrid_config.h), so the backbone stays known.
  c.backbone_attention = gqa;
  c.backbone_intermediate_size = intermediate;
  return c;
}

Result<ModelConfig> load_hf_config(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "config.json";
  HYLO_TRY(std::string text, read_text_file(path));
  HYLO_TRY(json j, io::parse_json_strict(text, path.string()));
  return model_config_from_hf_json(j, path.string());
}

nlohmann::json hf_config_to_json(const ModelConfig& c) {
  if (c.layers.empty()) throw Error("hf_config_to_json: the config has no layers");
  const LayerSpec& l0 = c.layers.front();
  for (const auto& l : c.layers) {
    if (l.mixer != MixerKind::kGqa)
      throw Error("hf_config_to_json: only Transformer configs (all layers gqa) can be written as HF config.json");
    if (l.gqa.num_heads != l0.gqa.num_heads || l.gqa.num_kv_heads != l0.gqa.num_kv_heads ||
        l.gqa.head_dim != l0.gqa.head_dim || l.intermediate_size != l0.intermediate_size)
      throw Error("hf_config_to_json: HF configs need identical dims in every layer");
  }
  json j;
  j["architectures"] = json::array({c.architecture});
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = l0.intermediate_size;
  j["num_hidden_layers"] = c.num_layers();
  j["num_attention_heads"] = l0.gqa.num_heads;
  j["num_key_value_heads"] = l0.gqa.num_kv_heads;
  j["head_dim"] = l0.gqa.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["dtype"] = c.torch_dtype;
  j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["pad_token_id"] = c.pad_token_id ? json(*c.pad_token_id) : json(nullptr);
  if (c.model_type == "llama" || c.model_type == "qwen3") {
    j["attention_bias"] = l0.gqa.qkv_bias;
  }
  if (c.model_type == "llama") j["mlp_bias"] = l0.mlp_bias;

  json rope;
  rope["rope_type"] = c.rope.type;
  rope["rope_theta"] = c.rope.theta;
  if (c.rope.type == "linear") {
    rope["factor"] = c.rope.factor;
  } else if (c.rope.type == "llama3") {
    rope["factor"] = c.rope.factor;
    rope["low_freq_factor"] = c.rope.low_freq_factor;
    rope["high_freq_factor"] = c.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
    // From a llama.cpp GGUF teacher: its exact per-frequency factors (transformers ignores the extra key and
    // derives equal factors, up to fp32 rounding, from the four above).
    if (!c.rope.freq_factors.empty()) rope["freq_factors"] = c.rope.freq_factors;
  } else if (c.rope.type == "yarn") {
    rope["factor"] = c.rope.factor;
    rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
    rope["beta_fast"] = c.rope.beta_fast;
    rope["beta_slow"] = c.rope.beta_slow;
    if (c.rope.attention_factor) rope["attention_factor"] = *c.rope.attention_factor;
    if (c.rope.mscale_all_dim != 0.0) {
      rope["mscale"] = c.rope.mscale;
      rope["mscale_all_dim"] = c.rope.mscale_all_dim;
    }
    rope["truncate"] = c.rope.truncate;
  }
  j["rope_parameters"] = rope;
  j["rope_theta"] = c.rope.theta;
  if (c.rope.type != "default") {
    json legacy = rope;
    legacy.erase("rope_theta");
    j["rope_scaling"] = legacy;
  }

  // Sliding windows: Mistral applies one window to all layers; Qwen marks sliding layers by layer_types.
  std::optional<int64_t> window;
  bool any_full = false;
  for (const auto& l : c.layers) {
    if (l.gqa.sliding_window) {
      if (window && *window != *l.gqa.sliding_window)
        throw Error("hf_config_to_json: HF configs need one sliding_window value for all sliding layers");
      window = l.gqa.sliding_window;
    } else {
      any_full = true;
    }
  }
  if (c.model_type == "mistral") {
    if (window && any_full) throw Error("hf_config_to_json: Mistral applies sliding_window to every layer");
    j["sliding_window"] = window ? json(*window) : json(nullptr);
  } else if (c.model_type == "qwen2" || c.model_type == "qwen3") {
    j["use_sliding_window"] = window.has_value();
    j["sliding_window"] = window ? json(*window) : json(nullptr);
    json types = json::array();
    for (const auto& l : c.layers) types.push_back(l.gqa.sliding_window ? "sliding_attention" : "full_attention");
    j["layer_types"] = types;
    j["max_window_layers"] = c.num_layers();
  } else if (window) {
    throw Error("hf_config_to_json: model type '" + c.model_type + "' has no sliding window in HF configs");
  }
  return j;
}

}  // namespace hylo
