// Layer plans: which layers of a Transformer teacher become MLA and which become a linear mixer (GDN or
// Mamba2), with every mixer dimension, read from YAML (recipes/plans/*.yaml). apply_plan() turns a teacher
// ModelConfig plus a plan into the hybrid's ModelConfig, validating everything up front so that a bad plan
// fails with a message naming the plan file and the field before any weight is touched (torch-free).
//
// Plan file (every key optional unless said otherwise; unknown keys are errors, so typos never pass silently):
//   name: llama3.2-1b-4mla12gdn
//   teacher: {num_layers: 16, hidden_size: 2048, num_heads: 32, num_kv_heads: 8, head_dim: 64}  # checked
//   # exactly one of the three selections:
//   mla_layers: [1, 5, 10, 14]                      # explicit, 0-based
//   mla_rule: {every: 4, offset: 1}                  # layers offset, offset+every, ...
//   kv_budget: {context: 65536, bytes: 41943040, bytes_per_elem: 2, num_mla_layers: 4}
//       # the MLA latent cache of `context` tokens must fit in `bytes`. Without num_mla_layers the count
//       # follows from the latent width (r_kv + rope); with it, kv_lora_rank follows (largest multiple of 8).
//   linear: gdn | mamba2                             # required: the mixer of every non-MLA layer
//   mla: {q_lora_rank, kv_lora_rank | kv_energy, qk_nope_head_dim, qk_rope_head_dim, v_head_dim,
//         num_kv_groups, latent_norms, rope: {type: yarn|default, factor, original_max_position_embeddings,
//         beta_fast, beta_slow, mscale, mscale_all_dim}}
//   gdn: {num_heads, head_k_dim, head_v_dim, conv_size}
//   mamba2: {d_state, n_heads, head_dim, conv_size, chunk_size}   # defaults derived from the teacher (Zebra)
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "hylo/config/model_config.h"
#include "hylo/core/result.h"

namespace hylo {

enum class MlaSelection { kExplicit, kEvery, kKvBudget };

struct MlaPlan {
  std::optional<int64_t> q_lora_rank;       // default 0: no query compression (a full q_proj); > 0: low-rank q
  std::optional<int64_t> kv_lora_rank;
  std::optional<double> kv_energy;          // X-EcoMLA dynamic rank: smallest r with energy >= this, up to x8
  std::optional<int64_t> qk_nope_head_dim;  // default: teacher head_dim - rope
  std::optional<int64_t> qk_rope_head_dim;  // default: teacher head_dim / 2
  std::optional<int64_t> v_head_dim;        // default: teacher head_dim
  std::optional<int64_t> num_kv_groups;     // default: teacher num_kv_heads
  bool latent_norms = false;
  RopeConfig rope;                          // theta is always the teacher's; type "default" or "yarn"
};

struct GdnPlan {
  std::optional<int64_t> num_heads, head_k_dim, head_v_dim;
  int64_t conv_size = 4;
};

struct Mamba2Plan {
  std::optional<int64_t> d_state, n_heads, head_dim;
  int64_t conv_size = 4;
  int64_t chunk_size = 256;
};

struct TeacherShape {
  std::optional<int64_t> num_layers, hidden_size, num_heads, num_kv_heads, head_dim;
};

struct LayerPlan {
  std::string source;   // the plan file (or a label), used in every message
  std::string name;
  TeacherShape teacher;

  MlaSelection selection = MlaSelection::kExplicit;
  std::vector<int64_t> mla_layers;           // kExplicit
  int64_t every = 0, offset = 0;             // kEvery
  int64_t budget_context = 0;                // kKvBudget
  double budget_bytes = 0;
  int64_t budget_bytes_per_elem = 2;
  std::optional<int64_t> budget_num_mla;

  std::optional<MixerKind> linear;           // required; gdn or mamba2
  MlaPlan mla;
  GdnPlan gdn;
  Mamba2Plan mamba2;
};

Result<LayerPlan> parse_layer_plan(const std::string& yaml_text, const std::string& source);
Result<LayerPlan> load_layer_plan(const std::filesystem::path& path);

// The plan as YAML that parse_layer_plan reads back to the same plan (fields left to teacher defaults stay
// absent). `comment` lines are written first, each prefixed with "# ".
std::string layer_plan_to_yaml(const LayerPlan& plan, const std::vector<std::string>& comment = {});

// A plan that makes every layer MLA (pure_linear = false) or every layer linear (true), with the same mixer
// dims: the two Stage-I models of HYLO.md 3.4.
LayerPlan stage1_plan(const LayerPlan& plan, bool pure_linear);

// The hybrid config. The teacher must be a Transformer (every layer gqa, identical attention dims). Checks
// every field against the teacher before returning; errors name plan.source and the field. With kv_energy
// the MLA layers get kv_lora_rank 0 ("decided from the spectrum by the upcycler"); see mla_rank_is_dynamic.
Result<ModelConfig> apply_plan(const ModelConfig& teacher, const LayerPlan& plan);
bool mla_rank_is_dynamic(const LayerPlan& plan);

// The MLA layer indices the plan selects for a teacher of `num_layers` layers (validated by apply_plan).
Result<std::vector<int64_t>> plan_mla_layers(const ModelConfig& teacher, const LayerPlan& plan);

// X-EcoMLA dynamic rank: the smallest r whose leading squared singular values hold at least `energy` of the
// total, rounded up to a multiple of 8 and capped at the number of values. sigma: descending singular values.
int64_t energy_rank(const std::vector<double>& sigma, double energy);

// KV-cache bytes per token of a config (all layers), with `bytes_per_elem` per cached element.
int64_t kv_bytes_per_token(const ModelConfig& config, int64_t bytes_per_elem = 2);

}  // namespace hylo
