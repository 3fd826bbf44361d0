// Training recipes: a YAML list of stages that `hylo train` runs in order (HYLO.md 4). Parsing is strict: an
// unknown key, a wrong type or an impossible setting is an error naming the recipe file and the field
// (stages[2].adamw.beta2) before any model or data is touched; check_recipe_paths then checks every input path.
//
//   name: smollm2-135m-6mla24gdn
//   defaults: {...}            # optional: any stage key, applied to every ild/kd stage unless it sets its own
//   stages:
//     - {name: ild-mla, kind: ild, student: STAGE1_MLA_DIR, teacher: T, data: DATASET_DIR, ...}
//     - {name: assemble, kind: assemble, from_mla: {stage: ild-mla}, from_linear: {stage: ild-linear}, plan: P}
//     - {name: kd, kind: kd, student: {stage: assemble}, teacher: T8B, data: D, ...}
// Paths: ${VAR} / $VAR expand from the environment (an unset variable is an error), then relative paths resolve
// against the recipe file's directory. A model is a path or {stage: NAME}: the final checkpoint of an earlier
// stage. docs/training.md lists every key with its default.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/train/adamw.h"
#include "hylo/train/kl_from_hidden.h"
#include "hylo/train/losses.h"

namespace hylo::train {

enum class StageKind { kIld, kAssemble, kKd };
const char* stage_kind_name(StageKind kind);

struct ModelRef {
  std::string stage;            // non-empty: the final checkpoint of that earlier stage
  std::filesystem::path path;   // otherwise: a model directory or GGUF file
  std::string field;            // "stages[0].student", for errors
};

struct Stage {
  std::string name;
  StageKind kind = StageKind::kKd;
  // ild / kd
  ModelRef student, teacher;
  bool train_mixers_only = false;       // train: mixers | all
  std::filesystem::path data;           // a `hylo data` dataset directory
  int64_t seq_len = 2048;
  int64_t tokens = 0;                   // token budget: steps = tokens / (batch * seq_len)
  int64_t batch = 0;                    // global sequences per optimizer step (all ranks, all micro-batches)
  int64_t micro_batch = 0;              // sequences per forward per rank; accumulation = batch / (micro_batch * world)
  double lr = 0;                        // peak learning rate
  double min_lr = 0;                    // the cosine ends here
  double warmup_ratio = 0.01;           // of the stage's steps, linear from lr/warmup_steps
  AdamWOptions adamw;
  double grad_clip = 1.0;               // global L2 norm; 0 = off
  IldWeights ild;
  KlOptions kd;
  std::optional<double> mla_yarn_factor;                 // sets the MLA layers' YaRN (HYLO.md 2.3) for this stage
  std::optional<int64_t> mla_original_max_position_embeddings;
  bool activation_checkpointing = true;
  bool reset_state_at_doc_start = false;                 // only false is supported (see docs/training.md)
  at::ScalarType precision = at::kBFloat16;              // autocast dtype (fp32: no autocast)
  at::ScalarType teacher_dtype = at::kBFloat16;          // on CPU the trainer uses fp32 for both
  int64_t checkpoint_every = 200;                        // steps
  int64_t eval_every = 100;                              // steps; 0 = only at the end
  int64_t eval_batches = 4;                              // held-out batches of `batch` sequences per eval
  int64_t log_every = 10;
  uint64_t seed = 0;                                     // data order
  // assemble
  ModelRef from_mla, from_linear;
  std::filesystem::path plan;
};

struct Recipe {
  std::string name;
  std::filesystem::path source;  // the recipe file
  std::vector<Stage> stages;
  const Stage* find(const std::string& name) const;
};

// `source` names the file in errors; relative paths resolve against `base_dir`.
Result<Recipe> parse_recipe(const std::string& yaml_text, const std::string& source,
                            const std::filesystem::path& base_dir);
Result<Recipe> load_recipe(const std::filesystem::path& path);

// Every input path exists and has the right form (a dataset has index.json, a model is a directory with
// config.json or a .gguf file, a plan is a file). {stage: X} references are satisfied by the run itself.
Status check_recipe_paths(const Recipe& recipe);

// Optimizer steps of a stage at the given token budget (>= 1).
int64_t stage_steps(const Stage& stage);

}  // namespace hylo::train
