#include "hylo/config/amd_export.h"

#include "hylo/config/hf_config.h"

namespace hylo {
namespace {
using nlohmann::json;

// Zebra's rope_scaling for the MLA rope: {rope_type, factor, original_max_position_embeddings} as released, plus
// any YaRN setting that differs from the defaults the importer assumes (so nothing is lost silently).
json mla_rope_scaling(const RopeConfig& r) {
  json j = {{"rope_type", r.type}, {"factor", r.factor}};
  if (r.original_max_position_embeddings > 0) j["original_max_position_embeddings"] = r.original_max_position_embeddings;
  const RopeConfig d;
  if (r.type == "llama3") j["low_freq_factor"] = r.low_freq_factor, j["high_freq_factor"] = r.high_freq_factor;
  if (r.beta_fast != d.beta_fast) j["beta_fast"] = r.beta_fast;
  if (r.beta_slow != d.beta_slow) j["beta_slow"] = r.beta_slow;
  if (r.mscale != d.mscale) j["mscale"] = r.mscale;
  if (r.mscale_all_dim != d.mscale_all_dim) j["mscale_all_dim"] = r.mscale_all_dim;
  if (r.attention_factor) j["attention_factor"] = *r.attention_factor;
  if (r.truncate != d.truncate) j["truncate"] = r.truncate;
  return j;
}

}  // namespace

Result<AmdConfigFiles> amd_config_files(const ModelConfig& config, const TensorShapeLookup& shape_of,
                                        const std::string& what) {
  const std::string where = what + ": AMD layout";
  const MlaSpec* mla = nullptr;
  const Mamba2Spec* m2 = nullptr;
  json mla_layers = json::array();
  for (int64_t i = 0; i < config.num_layers(); ++i) {
    const LayerSpec& l = config.layers[static_cast<size_t>(i)];
    if (l.mixer == MixerKind::kGqa)
      return make_error(where + ": layer " + std::to_string(i) +
                        " is attention (gqa); AMD's hybrids have MLA and linear (GDN / Mamba2) layers only");
    if (l.mixer == MixerKind::kMla) {
      mla_layers.push_back(i);
      if (!mla) mla = &l.mla;
    }
    if (l.mixer == MixerKind::kMamba2 && !m2) m2 = &l.mamba2;
  }
  if (!mla) return make_error(where + ": no MLA layer (hybrid_config.json needs mla_layers and the MLA dims)");

  ModelConfig backbone_only = config;
  json backbone = checkpoint_config_to_json(backbone_only);
  backbone.erase("hybrid");
  // As AMD ships it: the backbone ties its embeddings; the checkpoint's own lm_head.weight unties them on import.
  json h;
  h["hidden_size"] = config.hidden_size;
  h["intermediate_size"] = backbone.value("intermediate_size", int64_t{0});
  h["hidden_act"] = "silu";
  h["n_layer"] = config.num_layers();
  h["mla_layers"] = mla_layers;
  h["rms_norm_eps"] = config.rms_norm_eps;
  h["num_attention_heads"] = mla->num_heads;
  h["num_key_value_heads"] = mla->num_kv_groups;
  h["kv_lora_rank"] = mla->kv_lora_rank;
  h["q_lora_rank"] = mla->q_lora_rank;
  h["use_lora_layer_norm"] = mla->latent_norms;
  h["use_full_kv_head"] = false;
  json ranks = json::object();
  for (int64_t i = 0; i < config.num_layers(); ++i) {
    const LayerSpec& l = config.layers[static_cast<size_t>(i)];
    if (l.mixer == MixerKind::kMla && (l.mla.q_lora_rank != mla->q_lora_rank || l.mla.kv_lora_rank != mla->kv_lora_rank))
      ranks[std::to_string(i)] = {{"q_rank", l.mla.q_lora_rank}, {"kv_rank", l.mla.kv_lora_rank}};
  }
  if (!ranks.empty()) h["layer_rank_list"] = ranks;
  h["qk_rope_head_dim"] = mla->qk_rope_head_dim;
  h["v_head_dim"] = mla->v_head_dim;
  h["qk_nope_head_dim"] = mla->qk_nope_head_dim;
  h["max_position_embeddings"] = config.max_position_embeddings;
  h["rope_theta"] = mla->rope.theta;
  if (mla->rope.type != "default") h["rope_scaling"] = mla_rope_scaling(mla->rope);
  h["attention_bias"] = mla->bias;
  h["d_model"] = config.hidden_size;
  if (m2) {
    h["ssm_cfg"] = {{"expand", 1}, {"ngroups", m2->n_heads}, {"d_state", m2->d_state},
                    {"repeat_kv_before_conv", m2->repeat_kv_before_conv}, {"d_conv", m2->conv_size}};
    h["d_inner"] = m2->d_inner;
    h["d_xb"] = m2->d_xb;
  }

  // The files must describe this very model: read them back as any AMD checkpoint is read.
  HYLO_TRY(ModelConfig back, import_amd_hybrid_config(backbone, h, shape_of, what));
  const json want = hybrid_block_to_json(config), got = hybrid_block_to_json(back);
  for (size_t i = 0; i < want["layers"].size(); ++i)
    if (want["layers"][i] != got["layers"][i])
      return make_error(where + ": layer " + std::to_string(i) + " cannot be expressed in hybrid_config.json (" +
                        want["layers"][i].dump() + " would be read back as " + got["layers"][i].dump() + ")");
  if (back.tie_word_embeddings != config.tie_word_embeddings || back.vocab_size != config.vocab_size ||
      back.hidden_size != config.hidden_size || back.rms_norm_eps != config.rms_norm_eps)
    return make_error(where + ": the backbone config.json would not read back to this model's embeddings / norms");
  return AmdConfigFiles{std::move(backbone), std::move(h)};
}

}  // namespace hylo
