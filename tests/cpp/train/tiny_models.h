// Tiny teacher / student configurations for the trainer tests: a 3-layer GQA "Transformer" and a hybrid of
// the same depth and width (MLA, GDN, GDN), vocabulary 101 (odd on purpose), hidden 32.
#pragma once

#include <nlohmann/json.hpp>

#include "hylo/config/hf_config.h"
#include "hylo/config/model_config.h"

namespace hylo::train::testing {

inline ModelConfig tiny_teacher_config() {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 101}, {"hidden_size", 32},
                      {"intermediate_size", 48}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5},
                      {"max_position_embeddings", 512}, {"tie_word_embeddings", false},
                      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  return model_config_from_hf_json(j, "tiny-teacher").value_or_throw();
}

inline ModelConfig tiny_student_config() {
  ModelConfig c = tiny_teacher_config();
  MlaSpec m;
  m.num_heads = 4;
  m.q_lora_rank = 16;
  m.kv_lora_rank = 12;
  m.qk_nope_head_dim = 4;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 8;
  m.num_kv_groups = 2;
  m.rope.theta = 10000.0;
  c.layers[0].mixer = MixerKind::kMla;
  c.layers[0].mla = m;
  for (int i : {1, 2}) {
    c.layers[i].mixer = MixerKind::kGdn;
    c.layers[i].gdn = GdnSpec{};
    c.layers[i].gdn.num_heads = 2;
    c.layers[i].gdn.head_k_dim = 8;
    c.layers[i].gdn.head_v_dim = 16;
    c.layers[i].gdn.norm_eps = 1e-5;
  }
  return c;
}

}  // namespace hylo::train::testing
