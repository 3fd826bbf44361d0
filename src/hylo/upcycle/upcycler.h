// `hylo upcycle`: a Transformer teacher plus a layer plan -> the hybrid CausalLM, initialised as HYLO.md 3
// prescribes (SVD for MLA layers, attention copies for GDN / Mamba2 layers; embeddings, norms and MLPs copied
// verbatim; an untied lm_head that is a copy of the embedding when the teacher ties), together with a report:
// per layer the mixer, ranks, relative reconstruction errors, parameters and KV bytes per token before and
// after, and the teacher -> student logit KL on calibration text right after init. Also the Stage-I models
// (pure MLA / pure linear, via stage1_plan) and the assembly of a hybrid from two Stage-I models (HYLO.md 3.4).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/config/layer_plan.h"
#include "hylo/core/result.h"
#include "hylo/model/causal_lm.h"

namespace hylo {

struct UpcycleOptions {
  std::filesystem::path calibration_text;  // empty: no KL (the report says it was skipped and how to get it)
  int64_t calibration_tokens = 256;        // 0: skip the KL
  std::filesystem::path tokenizer;         // empty: the teacher's source (directory or GGUF)
  at::ScalarType dtype = at::kFloat;       // the student's parameters
  uint64_t seed = 0;                       // draws of the parameters without a teacher counterpart
  bool progress = true;
};

struct LayerReport {
  int64_t index = 0;
  MixerKind mixer = MixerKind::kGqa;
  std::string init;                  // how it was initialised, in words
  int64_t q_rank = 0, kv_rank = 0;   // MLA only (q_rank 0: uncompressed q_proj)
  std::optional<double> q_error, kv_error, k_pe_error, q_tail, kv_tail;  // MLA only (see init_mla.h)
  int64_t params_teacher = 0, params_student = 0;
  int64_t kv_bytes_teacher = 0, kv_bytes_student = 0;  // per token, bf16 cache
  int64_t state_bytes_student = 0;                     // per sequence, fp32 state
};

struct UpcycleReport {
  std::string teacher, plan_source, plan_name;
  std::vector<LayerReport> layers;
  int64_t params_teacher = 0, params_student = 0;
  int64_t kv_bytes_teacher = 0, kv_bytes_student = 0;  // per token, all layers
  std::optional<double> kl;                            // mean over tokens of KL(p_teacher || p_student), nats
  int64_t kl_tokens = 0;
  std::string calibration_source;
  std::string kl_skipped;                              // why there is no KL, and how to get it (empty: measured)
  double init_seconds = 0, kl_seconds = 0;
  std::vector<std::string> notes;                      // decisions that affect fidelity (qk-norm folding, ...)

  nlohmann::json to_json() const;
  std::string table() const;  // the terminal table, with the KV-memory comparison at a few context lengths
};

struct UpcycleResult {
  std::unique_ptr<CausalLM> model;
  UpcycleReport report;
};

// Validates the plan against the teacher (apply_plan) before any work; plan errors come back as errors.
Result<UpcycleResult> upcycle(CausalLM& teacher, const LayerPlan& plan, const UpcycleOptions& options = {});

// Hybrid from two Stage-I models of the same teacher: layer i (the whole decoder layer, norms and MLP included)
// from `mla_model` when i is an MLA layer of `plan`, else from `linear_model`; embeddings, final norm and head
// from the linear model. Checks that the two models fit together and provide the mixers the plan asks for.
// share_tensors: the hybrid's parameters alias the two models' tensors instead of copies (for scoring only).
Result<std::unique_ptr<CausalLM>> assemble_hybrid(CausalLM& mla_model, CausalLM& linear_model, const LayerPlan& plan,
                                                  bool share_tensors = false);

// Mean over tokens of KL(p_teacher || p_student) for ids [1, T] (fp32 logits).
double logit_kl(CausalLM& teacher, CausalLM& student, const at::Tensor& ids);
// The same in two steps, for scoring many students against one teacher (SMART) with one teacher forward:
// teacher_log_probs gives the teacher's fp32 log-probabilities [1, T, V] on ids [1, T].
at::Tensor teacher_log_probs(CausalLM& teacher, const at::Tensor& ids);
double logit_kl(const at::Tensor& teacher_logp, CausalLM& student, const at::Tensor& ids);

// Token ids [1, T] of the first `tokens` tokens of a text file, with the tokenizer at `tokenizer_path`.
Result<at::Tensor> calibration_ids(const std::filesystem::path& text, const std::filesystem::path& tokenizer_path,
                                   int64_t tokens);

}  // namespace hylo
