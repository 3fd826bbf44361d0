// Logit-free knowledge-distillation loss (HYLO.md 4.3): forward KL(p_teacher || p_student) at temperature tau
// (plus an optional cross-entropy term), computed from the final hidden states of both models and both LM-head
// weights without ever holding the [N, V] logits. Rows are processed in tiles of `seq_tile` and the vocabulary
// in tiles of `vocab_tile`; per row an online softmax carries the running max and sum for student and teacher
// (log-sum-exp) and the running teacher-weighted logit difference, so memory is O(seq_tile x vocab_tile)
// besides the inputs and the [V, D] weight gradient. The backward recomputes each tile's logits from the saved
// per-row log-sum-exps and accumulates dL/dh_s and dL/dW_s tile by tile.
//
// Per row n with student logits s = h_s[n] W_s^T, teacher logits t = h_t[n] W_t^T (fp32), p = softmax(t / tau),
// q = softmax(s / tau):
//   KL_n = sum_v p_v (log p_v - log q_v)                  d KL_n / d s = (q - p) / tau
//   CE_n = logsumexp(s) - s[target_n]                      d CE_n / d s = softmax(s) - onehot(target_n)
//   loss = sum_n weight_n (KL_n + ce_weight CE_n)
// (no tau^2 factor). weight_n carries both the target mask and the normalisation (1 / global target tokens).
// The teacher side gets no gradient. Tiles compute in fp32 whatever the input dtype, with autocast off.
//
// kd_kl_from_hidden is the one entry point: a fused CUDA kernel (kernels issue) plugs in behind it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::train {

struct KlOptions {
  double temperature = 1.0;
  double ce_weight = 0.0;      // > 0 needs targets
  int64_t vocab_tile = 8192;
  int64_t seq_tile = 2048;
};

// h_student [N, Ds], w_student [V, Ds] (either may require grad), h_teacher [N, Dt], w_teacher [V, Dt],
// weights [N] fp32, targets [N] int64 (undefined unless ce_weight > 0). Returns a scalar fp32 loss.
at::Tensor kd_kl_from_hidden(const at::Tensor& h_student, const at::Tensor& w_student, const at::Tensor& h_teacher,
                             const at::Tensor& w_teacher, const at::Tensor& weights, const at::Tensor& targets,
                             const KlOptions& options);

// The same loss from full [N, V] logits and log_softmax, in the dtype of promote(fp32, inputs) (fp64 inputs
// give an fp64 reference). The test oracle, and the memory baseline of bench/train_step.
at::Tensor kd_kl_naive(const at::Tensor& h_student, const at::Tensor& w_student, const at::Tensor& h_teacher,
                       const at::Tensor& w_teacher, const at::Tensor& weights, const at::Tensor& targets,
                       const KlOptions& options);

}  // namespace hylo::train
