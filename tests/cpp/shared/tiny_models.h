// Tiny models shared by several test folders (header-only; tests/cpp/shared has no tests of its own).
#pragma once

#include <nlohmann/json.hpp>

#include "hylo/config/hf_config.h"
#include "hylo/config/model_config.h"

namespace hylo {

// The small MLA of these tests: 4 heads in 2 KV groups, nope 8 + rope 4, v 8, YaRN x4 over 32 positions.
inline MlaSpec tiny_mla(int64_t q_rank, int64_t kv_rank) {
  MlaSpec m;
  m.num_heads = 4;
  m.q_lora_rank = q_rank;
  m.kv_lora_rank = kv_rank;
  m.qk_nope_head_dim = 8;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 8;
  m.num_kv_groups = 2;
  m.rope.theta = 10000.0;
  m.rope.type = "yarn";
  m.rope.factor = 4.0;
  m.rope.original_max_position_embeddings = 32;
  return m;
}

// A 4-layer model with one layer of each mixer kind: 0 gqa, 1 mla, 2 gdn, 3 mamba2 (vocab 101, hidden 48).
inline ModelConfig mixed_config() {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 101}, {"hidden_size", 48},
                      {"intermediate_size", 64}, {"num_hidden_layers", 4}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"head_dim", 12}, {"rms_norm_eps", 1e-5},
                      {"max_position_embeddings", 512}, {"tie_word_embeddings", true},
                      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  ModelConfig c = model_config_from_hf_json(j, "mixed").value_or_throw();
  // Layer 0 stays gqa; 1 becomes MLA (YaRN on its rope slice), 2 GDN, 3 Mamba2.
  c.layers[1].mixer = MixerKind::kMla;
  c.layers[1].mla = tiny_mla(/*q_rank=*/16, /*kv_rank=*/12);
  LayerSpec& gdn = c.layers[2];
  gdn.mixer = MixerKind::kGdn;
  gdn.gdn.num_heads = 2;
  gdn.gdn.head_k_dim = 8;
  gdn.gdn.head_v_dim = 16;
  LayerSpec& m2 = c.layers[3];
  m2.mixer = MixerKind::kMamba2;
  m2.mamba2.n_heads = 4;
  m2.mamba2.head_dim = 8;
  m2.mamba2.d_state = 8;
  m2.mamba2.d_inner = 32;
  m2.mamba2.d_xb = 16;
  m2.mamba2.norm_group_size = 8;
  m2.mamba2.chunk_size = 16;
  c.tie_word_embeddings = false;  // hybrids store their head untied, as AMD's checkpoints do
  return c;
}

}  // namespace hylo
