#include "hylo/config/hybrid_config.h"

#include <set>

#include "hylo/config/hf_config.h"
#include "hylo/core/file_util.h"
#include "hylo/io/json_strict.h"

namespace hylo {
using nlohmann::json;

namespace {

json rope_to_json(const RopeConfig& r) {
  json j = {{"theta", r.theta}, {"type", r.type}, {"factor", r.factor}};
  if (r.type == "llama3") {
    j["low_freq_factor"] = r.low_freq_factor;
    j["high_freq_factor"] = r.high_freq_factor;
  }
  if (r.original_max_position_embeddings > 0) j["original_max_position_embeddings"] = r.original_max_position_embeddings;
  if (!r.freq_factors.empty()) j["freq_factors"] = r.freq_factors;  // llama.cpp's, from a GGUF teacher: kept exact
  if (r.type == "yarn") {
    j["beta_fast"] = r.beta_fast;
    j["beta_slow"] = r.beta_slow;
    j["mscale"] = r.mscale;
    j["mscale_all_dim"] = r.mscale_all_dim;
    if (r.attention_factor) j["attention_factor"] = *r.attention_factor;
    j["truncate"] = r.truncate;
  }
  return j;
}

// Field readers that name the file, the layer and the key in their errors.
struct Reader {
  const json& j;
  std::string where;  // "config.json: hybrid.layers[3].mla"

  Result<int64_t> integer(const char* key) const {
    if (!j.contains(key)) return make_error(where + ": missing key '" + key + "'");
    const json& v = j.at(key);
    if (!v.is_number_integer()) return make_error(where + "." + key + ": expected an integer, got " + v.dump());
    return v.get<int64_t>();
  }
  Result<int64_t> integer_or(const char* key, int64_t fallback) const {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    return integer(key);
  }
  Result<double> number_or(const char* key, double fallback) const {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    const json& v = j.at(key);
    if (!v.is_number()) return make_error(where + "." + key + ": expected a number, got " + v.dump());
    return v.get<double>();
  }
  Result<bool> boolean_or(const char* key, bool fallback) const {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    const json& v = j.at(key);
    if (!v.is_boolean()) return make_error(where + "." + key + ": expected true/false, got " + v.dump());
    return v.get<bool>();
  }
};

Result<RopeConfig> rope_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) return make_error(where + ": expected an object");
  Reader r{j, where};
  RopeConfig rope;
  HYLO_TRY(rope.theta, r.number_or("theta", rope.theta));
  if (j.contains("type")) {
    if (!j["type"].is_string()) return make_error(where + ".type: expected a string");
    rope.type = j["type"].get<std::string>();
  }
  static const std::set<std::string> kTypes = {"default", "linear", "llama3", "yarn"};
  if (!kTypes.count(rope.type))
    return make_error(where + ".type: unsupported rope type '" + rope.type + "' (supported: default, linear, llama3, yarn)");
  HYLO_TRY(rope.factor, r.number_or("factor", rope.factor));
  HYLO_TRY(rope.low_freq_factor, r.number_or("low_freq_factor", rope.low_freq_factor));
  HYLO_TRY(rope.high_freq_factor, r.number_or("high_freq_factor", rope.high_freq_factor));
  HYLO_TRY(rope.original_max_position_embeddings,
           r.integer_or("original_max_position_embeddings", rope.original_max_position_embeddings));
  HYLO_TRY(rope.beta_fast, r.number_or("beta_fast", rope.beta_fast));
  HYLO_TRY(rope.beta_slow, r.number_or("beta_slow", rope.beta_slow));
  HYLO_TRY(rope.mscale, r.number_or("mscale", rope.mscale));
  HYLO_TRY(rope.mscale_all_dim, r.number_or("mscale_all_dim", rope.mscale_all_dim));
  if (j.contains("attention_factor") && !j["attention_factor"].is_null()) {
    HYLO_TRY(double af, r.number_or("attention_factor", 1.0));
    rope.attention_factor = af;
  }
  HYLO_TRY(rope.truncate, r.boolean_or("truncate", rope.truncate));
  if (j.contains("freq_factors")) {
    const json& ff = j["freq_factors"];
    if (!ff.is_array()) return make_error(where + ".freq_factors: expected an array of numbers");
    for (const auto& v : ff) {
      if (!v.is_number()) return make_error(where + ".freq_factors: expected an array of numbers");
      rope.freq_factors.push_back(v.get<float>());
    }
  }
  return rope;
}

json layer_to_json(const LayerSpec& l) {
  json j = {{"mixer", mixer_kind_name(l.mixer)}, {"intermediate_size", l.intermediate_size}, {"mlp_bias", l.mlp_bias}};
  switch (l.mixer) {
    case MixerKind::kGqa: {
      const auto& g = l.gqa;
      j["gqa"] = {{"num_heads", g.num_heads}, {"num_kv_heads", g.num_kv_heads}, {"head_dim", g.head_dim},
                  {"qkv_bias", g.qkv_bias}, {"o_bias", g.o_bias}, {"qk_norm", g.qk_norm}};
      if (g.sliding_window) j["gqa"]["sliding_window"] = *g.sliding_window;
      break;
    }
    case MixerKind::kMla: {
      const auto& m = l.mla;
      j["mla"] = {{"num_heads", m.num_heads}, {"q_lora_rank", m.q_lora_rank}, {"kv_lora_rank", m.kv_lora_rank},
                  {"qk_nope_head_dim", m.qk_nope_head_dim}, {"qk_rope_head_dim", m.qk_rope_head_dim},
                  {"v_head_dim", m.v_head_dim}, {"num_kv_groups", m.num_kv_groups}, {"latent_norms", m.latent_norms},
                  {"bias", m.bias}, {"rope", rope_to_json(m.rope)}};
      break;
    }
    case MixerKind::kGdn: {
      const auto& g = l.gdn;
      j["gdn"] = {{"num_heads", g.num_heads}, {"head_k_dim", g.head_k_dim}, {"head_v_dim", g.head_v_dim},
                  {"conv_size", g.conv_size}, {"use_gate", g.use_gate}, {"use_short_conv", g.use_short_conv},
                  {"norm_eps", g.norm_eps}};
      break;
    }
    case MixerKind::kMamba2: {
      const auto& m = l.mamba2;
      j["mamba2"] = {{"d_inner", m.d_inner}, {"d_xb", m.d_xb}, {"d_state", m.d_state}, {"n_heads", m.n_heads},
                     {"head_dim", m.head_dim}, {"conv_size", m.conv_size}, {"chunk_size", m.chunk_size},
                     {"norm_group_size", m.norm_group_size}, {"conv_bias", m.conv_bias},
                     {"repeat_kv_before_conv", m.repeat_kv_before_conv}, {"norm_eps", m.norm_eps}};
      break;
    }
  }
  return j;
}

// The dims every mixer needs to be well formed, checked wherever a layer spec comes from a file (a hylo
// `hybrid` block or an AMD hybrid_config.json). `where` names the file and layer.
Status validate_layer(const LayerSpec& l, const std::string& where) {
  switch (l.mixer) {
    case MixerKind::kGqa: {
      const auto& g = l.gqa;
      if (g.num_heads <= 0 || g.num_kv_heads <= 0 || g.head_dim <= 0 || g.num_heads % g.num_kv_heads != 0)
        return make_error(where + ": num_heads, num_kv_heads and head_dim must be positive and num_kv_heads must divide num_heads");
      break;
    }
    case MixerKind::kMla: {
      const auto& m = l.mla;
      if (m.num_heads <= 0 || m.kv_lora_rank <= 0 || m.num_kv_groups <= 0 || m.num_heads % m.num_kv_groups != 0)
        return make_error(where + ": num_heads, kv_lora_rank, num_kv_groups must be positive and num_kv_groups must divide num_heads");
      if (m.q_lora_rank < 0 || m.qk_nope_head_dim < 0 || m.v_head_dim <= 0 || m.qk_rope_head_dim < 0 ||
          m.qk_rope_head_dim % 2 != 0)
        return make_error(where + ": q_lora_rank, qk_nope_head_dim >= 0, v_head_dim > 0 and an even qk_rope_head_dim >= 0 expected");
      break;
    }
    case MixerKind::kGdn: {
      const auto& g = l.gdn;
      if (g.num_heads <= 0 || g.head_k_dim <= 0 || g.head_v_dim <= 0 || g.conv_size <= 0)
        return make_error(where + ": num_heads, head_k_dim, head_v_dim and conv_size must be positive");
      break;
    }
    case MixerKind::kMamba2: {
      const auto& m = l.mamba2;
      if (m.n_heads <= 0 || m.head_dim <= 0 || m.d_state <= 0 || m.d_inner != m.n_heads * m.head_dim)
        return make_error(where + ": d_inner must equal n_heads * head_dim (all positive)");
      if (m.d_xb <= 0 || m.d_xb % m.head_dim != 0 || (m.n_heads % (m.d_xb / m.head_dim)) != 0)
        return make_error(where + ": d_xb must be a multiple of head_dim whose group count divides n_heads");
      if (m.norm_group_size <= 0 || m.d_inner % m.norm_group_size != 0)
        return make_error(where + ".norm_group_size: must divide d_inner");
      if (m.conv_size <= 0 || m.chunk_size <= 0) return make_error(where + ": conv_size and chunk_size must be positive");
      break;
    }
  }
  return {};
}

Result<LayerSpec> layer_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) return make_error(where + ": expected an object");
  if (!j.contains("mixer") || !j["mixer"].is_string())
    return make_error(where + ".mixer: missing or not a string (expected one of gqa, mla, gdn, mamba2)");
  auto kind = parse_mixer_kind(j["mixer"].get<std::string>());
  if (!kind)
    return make_error(where + ".mixer: unknown mixer '" + j["mixer"].get<std::string>() +
                      "' (expected one of gqa, mla, gdn, mamba2)");
  LayerSpec l;
  l.mixer = *kind;
  Reader top{j, where};
  HYLO_TRY(l.intermediate_size, top.integer("intermediate_size"));
  HYLO_TRY(l.mlp_bias, top.boolean_or("mlp_bias", false));
  const char* key = mixer_kind_name(*kind);
  if (!j.contains(key) || !j[key].is_object()) return make_error(where + ": missing the '" + key + "' object");
  Reader r{j[key], where + "." + key};
  switch (*kind) {
    case MixerKind::kGqa: {
      auto& g = l.gqa;
      HYLO_TRY(g.num_heads, r.integer("num_heads"));
      HYLO_TRY(g.num_kv_heads, r.integer("num_kv_heads"));
      HYLO_TRY(g.head_dim, r.integer("head_dim"));
      HYLO_TRY(g.qkv_bias, r.boolean_or("qkv_bias", false));
      HYLO_TRY(g.o_bias, r.boolean_or("o_bias", false));
      HYLO_TRY(g.qk_norm, r.boolean_or("qk_norm", false));
      if (j[key].contains("sliding_window") && !j[key]["sliding_window"].is_null()) {
        HYLO_TRY(int64_t w, r.integer("sliding_window"));
        g.sliding_window = w;
      }
      break;
    }
    case MixerKind::kMla: {
      auto& m = l.mla;
      HYLO_TRY(m.num_heads, r.integer("num_heads"));
      HYLO_TRY(m.q_lora_rank, r.integer_or("q_lora_rank", 0));
      HYLO_TRY(m.kv_lora_rank, r.integer("kv_lora_rank"));
      HYLO_TRY(m.qk_nope_head_dim, r.integer("qk_nope_head_dim"));
      HYLO_TRY(m.qk_rope_head_dim, r.integer("qk_rope_head_dim"));
      HYLO_TRY(m.v_head_dim, r.integer("v_head_dim"));
      HYLO_TRY(m.num_kv_groups, r.integer("num_kv_groups"));
      HYLO_TRY(m.latent_norms, r.boolean_or("latent_norms", false));
      HYLO_TRY(m.bias, r.boolean_or("bias", false));
      if (j[key].contains("rope")) {
        HYLO_TRY(m.rope, rope_from_json(j[key]["rope"], r.where + ".rope"));
      }
      break;
    }
    case MixerKind::kGdn: {
      auto& g = l.gdn;
      HYLO_TRY(g.num_heads, r.integer("num_heads"));
      HYLO_TRY(g.head_k_dim, r.integer("head_k_dim"));
      HYLO_TRY(g.head_v_dim, r.integer("head_v_dim"));
      HYLO_TRY(g.conv_size, r.integer_or("conv_size", 4));
      HYLO_TRY(g.use_gate, r.boolean_or("use_gate", true));
      HYLO_TRY(g.use_short_conv, r.boolean_or("use_short_conv", true));
      HYLO_TRY(g.norm_eps, r.number_or("norm_eps", 1e-5));
      break;
    }
    case MixerKind::kMamba2: {
      auto& m = l.mamba2;
      HYLO_TRY(m.d_inner, r.integer("d_inner"));
      HYLO_TRY(m.d_xb, r.integer("d_xb"));
      HYLO_TRY(m.d_state, r.integer("d_state"));
      HYLO_TRY(m.n_heads, r.integer("n_heads"));
      HYLO_TRY(m.head_dim, r.integer("head_dim"));
      HYLO_TRY(m.conv_size, r.integer_or("conv_size", 4));
      HYLO_TRY(m.chunk_size, r.integer_or("chunk_size", 256));
      HYLO_TRY(m.norm_group_size, r.integer_or("norm_group_size", m.n_heads > 0 ? m.d_inner / m.n_heads : 0));
      HYLO_TRY(m.conv_bias, r.boolean_or("conv_bias", true));
      HYLO_TRY(m.repeat_kv_before_conv, r.boolean_or("repeat_kv_before_conv", false));
      HYLO_TRY(m.norm_eps, r.number_or("norm_eps", 1e-5));
      break;
    }
  }
  HYLO_CHECK_OK(validate_layer(l, where + "." + key));
  return l;
}

}  // namespace

json hybrid_block_to_json(const ModelConfig& config) {
  json layers = json::array();
  for (const auto& l : config.layers) layers.push_back(layer_to_json(l));
  return {{"format", "hylo-hybrid"}, {"version", kHybridFormatVersion}, {"layers", layers}};
}

Status apply_hybrid_block(const json& block, ModelConfig& config, const std::string& source) {
  const std::string where = source + ": hybrid";
  if (!block.is_object()) return make_error(where + ": expected an object");
  if (!block.contains("version") || !block["version"].is_number_integer() ||
      block["version"].get<int>() != kHybridFormatVersion)
    return make_error(where + ".version: expected " + std::to_string(kHybridFormatVersion));
  if (!block.contains("layers") || !block["layers"].is_array() || block["layers"].empty())
    return make_error(where + ".layers: expected a non-empty array of layer specs");
  std::vector<LayerSpec> layers;
  for (size_t i = 0; i < block["layers"].size(); ++i) {
    HYLO_TRY(LayerSpec l, layer_from_json(block["layers"][i], where + ".layers[" + std::to_string(i) + "]"));
    layers.push_back(std::move(l));
  }
  config.layers = std::move(layers);
  return {};
}

json checkpoint_config_to_json(const ModelConfig& config) {
  // The HF part describes the backbone Transformer (every layer gqa with the backbone's dims), so that the
  // file stays a config transformers and our importers read; the hybrid block carries the real layers.
  ModelConfig backbone = config;
  for (auto& l : backbone.layers) {
    if (l.mixer == MixerKind::kGqa) continue;
    l.mixer = MixerKind::kGqa;
    l.gqa = config.backbone_attention;
    if (config.backbone_intermediate_size > 0) l.intermediate_size = config.backbone_intermediate_size;
  }
  json j = hf_config_to_json(backbone);
  j["num_hidden_layers"] = config.num_layers();
  j["hybrid"] = hybrid_block_to_json(config);
  return j;
}

Result<ModelConfig> import_amd_hybrid_config(const json& backbone, const json& hybrid, const TensorShapeLookup& shape_of,
                                             const std::string& source) {
  HYLO_TRY(ModelConfig config, model_config_from_hf_json(backbone, source + "/config.json"));
  const std::string where = source + "/hybrid_config.json";
  if (!hybrid.is_object()) return make_error(where + ": expected a JSON object");
  Reader r{hybrid, where};
  if (!hybrid.contains("mla_layers") || !hybrid["mla_layers"].is_array())
    return make_error(where + ": missing 'mla_layers' (a list of layer indices)");
  std::set<int64_t> mla_layers;
  for (const auto& v : hybrid["mla_layers"]) {
    if (!v.is_number_integer()) return make_error(where + ".mla_layers: expected integers, got " + v.dump());
    int64_t i = v.get<int64_t>();
    if (i < 0 || i >= config.num_layers())
      return make_error(where + ".mla_layers: index " + std::to_string(i) + " outside 0.." +
                        std::to_string(config.num_layers() - 1));
    mla_layers.insert(i);
  }
  // MLA dims shared by every MLA layer; layer_rank_list (X-EcoMLA dynamic ranks) may override per layer.
  MlaSpec mla;
  HYLO_TRY(mla.num_heads, r.integer("num_attention_heads"));
  HYLO_TRY(int64_t kv_heads, r.integer("num_key_value_heads"));
  HYLO_TRY(bool full_kv, r.boolean_or("use_full_kv_head", false));
  mla.num_kv_groups = full_kv ? mla.num_heads : kv_heads;
  HYLO_TRY(mla.q_lora_rank, r.integer_or("q_lora_rank", 0));
  HYLO_TRY(mla.kv_lora_rank, r.integer("kv_lora_rank"));
  HYLO_TRY(mla.qk_nope_head_dim, r.integer("qk_nope_head_dim"));
  HYLO_TRY(mla.qk_rope_head_dim, r.integer("qk_rope_head_dim"));
  HYLO_TRY(mla.v_head_dim, r.integer("v_head_dim"));
  HYLO_TRY(mla.latent_norms, r.boolean_or("use_lora_layer_norm", false));
  HYLO_TRY(mla.bias, r.boolean_or("attention_bias", false));
  mla.rope.theta = config.rope.theta;
  HYLO_TRY(mla.rope.theta, r.number_or("rope_theta", mla.rope.theta));
  if (hybrid.contains("rope_scaling") && hybrid["rope_scaling"].is_object()) {
    const json& rs = hybrid["rope_scaling"];
    json rj = rs;
    rj["theta"] = mla.rope.theta;
    std::string type = "yarn";
    for (const char* key : {"type", "rope_type"}) {  // rope_type wins when both are given, as in HF
      if (!rs.contains(key)) continue;
      if (!rs[key].is_string()) return make_error(where + ".rope_scaling." + key + ": expected a string");
      type = rs[key].get<std::string>();
    }
    rj["type"] = type;
    HYLO_TRY(mla.rope, rope_from_json(rj, where + ".rope_scaling"));
  }
  const json* rank_list = hybrid.contains("layer_rank_list") && hybrid["layer_rank_list"].is_object()
                              ? &hybrid["layer_rank_list"] : nullptr;

  // Mamba2 dims (MambaInLlama / Zebra): ssm_cfg {expand, ngroups, d_state, repeat_kv_before_conv}.
  Mamba2Spec m2;
  bool have_m2 = hybrid.contains("d_xb");
  if (have_m2) {
    HYLO_TRY(m2.d_xb, r.integer("d_xb"));
    HYLO_TRY(m2.d_inner, r.integer_or("d_inner", config.hidden_size));
    const json ssm = hybrid.value("ssm_cfg", json::object());
    Reader s{ssm, where + ".ssm_cfg"};
    HYLO_TRY(m2.n_heads, s.integer_or("ngroups", mla.num_heads));
    HYLO_TRY(m2.d_state, s.integer_or("d_state", m2.n_heads > 0 ? m2.d_inner / m2.n_heads : 0));
    HYLO_TRY(m2.repeat_kv_before_conv, s.boolean_or("repeat_kv_before_conv", false));
    HYLO_TRY(m2.conv_size, s.integer_or("d_conv", 4));
    m2.head_dim = m2.d_state;  // Zebra: headdim = d_state
    m2.norm_group_size = m2.n_heads > 0 ? m2.d_inner / m2.n_heads : 0;
    m2.norm_eps = config.rms_norm_eps;
  }

  for (int64_t i = 0; i < config.num_layers(); ++i) {
    LayerSpec& l = config.layers[static_cast<size_t>(i)];
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    if (mla_layers.count(i)) {
      l.mixer = MixerKind::kMla;
      l.mla = mla;
      if (rank_list && rank_list->contains(std::to_string(i))) {
        const json& rk = (*rank_list)[std::to_string(i)];
        Reader rr{rk, where + ".layer_rank_list." + std::to_string(i)};
        HYLO_TRY(l.mla.q_lora_rank, rr.integer_or("q_rank", l.mla.q_lora_rank));
        HYLO_TRY(l.mla.kv_lora_rank, rr.integer_or("kv_rank", l.mla.kv_lora_rank));
      }
      continue;
    }
    if (auto a = shape_of(prefix + "gdn.a_proj.weight")) {
      // FLA GatedDeltaNet: sizes are not config keys; read them off the tensors.
      auto q = shape_of(prefix + "gdn.q_proj.weight");
      auto v = shape_of(prefix + "gdn.v_proj.weight");
      if (!q || !v || a->size() != 2 || q->size() != 2 || v->size() != 2 || (*a)[0] <= 0)
        return make_error(source + ": layer " + std::to_string(i) + " has gdn.a_proj but no usable gdn.q_proj/v_proj weights");
      l.mixer = MixerKind::kGdn;
      l.gdn.num_heads = (*a)[0];
      if ((*q)[0] % l.gdn.num_heads != 0 || (*v)[0] % l.gdn.num_heads != 0)
        return make_error(source + ": layer " + std::to_string(i) + " gdn projection widths do not divide into " +
                          std::to_string(l.gdn.num_heads) + " heads");
      l.gdn.head_k_dim = (*q)[0] / l.gdn.num_heads;
      l.gdn.head_v_dim = (*v)[0] / l.gdn.num_heads;
      auto conv = shape_of(prefix + "gdn.q_conv1d.weight");
      l.gdn.use_short_conv = conv.has_value();
      if (conv) {
        if (conv->empty())
          return make_error(source + ": layer " + std::to_string(i) + " gdn.q_conv1d.weight has no dimensions");
        l.gdn.conv_size = conv->back();
      }
      l.gdn.use_gate = shape_of(prefix + "gdn.g_proj.weight").has_value();
      l.gdn.norm_eps = config.rms_norm_eps;
      continue;
    }
    if (shape_of(prefix + "mamba.in_proj.weight")) {
      if (!have_m2) return make_error(where + ": layer " + std::to_string(i) + " is Mamba2 but 'd_xb' is missing");
      l.mixer = MixerKind::kMamba2;
      l.mamba2 = m2;
      continue;
    }
    return make_error(source + ": layer " + std::to_string(i) +
                      " is not in mla_layers and has neither gdn.* nor mamba.* tensors");
  }
  for (int64_t i = 0; i < config.num_layers(); ++i)
    HYLO_CHECK_OK(validate_layer(config.layers[static_cast<size_t>(i)], where + " (layer " + std::to_string(i) + ")"));
  // AMD checkpoints store lm_head separately even where the backbone config ties embeddings.
  if (shape_of("lm_head.weight")) config.tie_word_embeddings = false;
  return config;
}

Result<ModelConfig> load_model_dir_config(const std::filesystem::path& dir, const TensorShapeLookup& shape_of) {
  const auto config_path = dir / "config.json";
  HYLO_TRY(std::string text, read_text_file(config_path));
  HYLO_TRY(json cfg, io::parse_json_strict(text, config_path.string()));
  if (cfg.contains("hybrid")) {
    HYLO_TRY(ModelConfig config, model_config_from_hf_json(cfg, config_path.string()));
    HYLO_CHECK_OK(apply_hybrid_block(cfg["hybrid"], config, config_path.string()));
    return config;
  }
  const auto hybrid_path = dir / "hybrid_config.json";
  std::error_code ec;
  if (std::filesystem::exists(hybrid_path, ec)) {
    HYLO_TRY(std::string htext, read_text_file(hybrid_path));
    HYLO_TRY(json hyb, io::parse_json_strict(htext, hybrid_path.string()));
    return import_amd_hybrid_config(cfg, hyb, shape_of, dir.string());
  }
  return model_config_from_hf_json(cfg, config_path.string());
}

}  // namespace hylo
