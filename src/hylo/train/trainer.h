// `hylo train`: runs a recipe's stages in order (HYLO.md 4): Enhanced ILD with per-layer teacher forcing,
// assembly of the hybrid from two Stage-I models, and KD with the logit-free KL. Each training stage writes
// into OUT/<stage>/: train_state/ (resumable, every checkpoint_every steps), metrics.jsonl (train loss, lr,
// grad norm, tokens/s; held-out loss every eval_every steps), loss.svg (the curves), and at its end final/, a
// normal hylo checkpoint every other command loads. A stage with final/ is done; --resume continues the first
// stage without one from its train_state (bit for bit: parameters, AdamW state, schedule step, data position).
//
// The step functions below are public so tests can drive them on tensors.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <optional>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/model/causal_lm.h"
#include "hylo/train/data.h"
#include "hylo/train/recipe.h"
#include "hylo/train/sync_hooks.h"

namespace hylo::train {

struct TrainOptions {
  std::filesystem::path out;
  bool resume = false;
  at::Device device = at::Device(at::kCPU);
  std::optional<int64_t> max_steps;   // smoke runs: each training stage runs (and schedules) at most this many steps
  std::optional<int64_t> stop_after;  // stop the run after this many steps of the current stage, checkpointed (a
                                      // planned kill, for resume tests); the stage stays unfinished
  bool progress = true;
  SyncHooks* hooks = nullptr;         // nullptr: one process
  // Set (by a SIGINT/SIGTERM handler) to stop at the end of the current optimizer step with a checkpoint, as
  // stop_after does; any rank's flag stops every rank at the same step.
  const std::atomic<bool>* stop_requested = nullptr;
  // Non-empty: run only these stages (by name), e.g. the two independent Stage-I stages as two processes side by
  // side. Stages they take models from must be done already or be named too; the others are left alone.
  std::vector<std::string> only_stages;
};

struct RunSummary {
  bool stopped = false;                     // stop_after or stop_requested hit; the stage can be resumed
  std::vector<std::string> finished_stages; // stages that ran to their end in this call
};

Status run_recipe(const Recipe& recipe, const TrainOptions& options, RunSummary* summary = nullptr);

// The parameters a stage trains, in visit order: KD all model parameters (train: all) or the mixers'; ILD the
// blocks' parameters (embeddings, final norm and head take no part in the ILD loss) or the mixers'.
std::vector<NamedParam> trainable_parameters(CausalLM& student, const Stage& stage);

// Tokens a micro-batch contributes to the loss's normaliser: KD the target tokens (loss_mask[:, 1:]),
// ILD every token.
double counted_tokens(const Stage& stage, const PackedBatch& batch);

// Forward (and, with backward, backward) of one micro-batch; `norm` is the global count of counted tokens of the
// whole optimizer step. Returns the loss value (a sum of per-token terms / norm). Autocast per stage.precision
// on CUDA (CPU computes in fp32). ILD runs the backward layer by layer (the layers are independent).
double kd_forward_backward(CausalLM& student, CausalLM& teacher, const PackedBatch& batch, double norm,
                           const Stage& stage, bool backward);
double ild_forward_backward(CausalLM& student, CausalLM& teacher, const PackedBatch& batch, double norm,
                            const Stage& stage, bool backward);

// Linear warmup over ceil(warmup_ratio * total) steps, then cosine from lr to min_lr; step = 0..total-1.
double learning_rate(const Stage& stage, int64_t step, int64_t total);

// Scales gradients so their global L2 norm is at most max_norm (0: no clipping); returns the norm before.
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);

// A model with the MLA layers' RoPE set to YaRN(factor, original_max_position_embeddings) and the same
// parameters (copied); returns the model unchanged when it has no MLA layer.
std::unique_ptr<CausalLM> with_mla_yarn(std::unique_ptr<CausalLM> model, double factor,
                                        std::optional<int64_t> original_max_position_embeddings);

}  // namespace hylo::train
