// The two distillation losses of HYLO.md 4, as sums of per-token terms already divided by the GLOBAL number of
// counted tokens (`norm`, summed over micro-batches and ranks by the trainer), so that gradients summed over
// micro-batches and ranks are those of the mean over the global batch.
//
// Enhanced ILD (4.1), for one layer l with teacher forcing (student block l ran on the teacher's input to l):
//   sum_tokens w_tok [ hidden ||h_s - h_t||_2 + mixer ||a_s - a_t||_2 ]   (IldWeights; HyLo: 1 and 1)
//   with the un-squared L2 over the hidden dim (as Zebra-Llama's code), h = block output, a = mixer output.
// KD (4.2): forward KL(p_teacher || p_student) at temperature tau per target token, plus ce_weight * CE, from
// final hidden states through kd_kl_from_hidden (no [T, V] logits).
#pragma once

#include <ATen/ATen.h>

#include "hylo/train/kl_from_hidden.h"

namespace hylo::train {

struct IldWeights {
  double hidden = 1.0;
  double mixer = 1.0;
};

// h_s, h_t, a_s, a_t: [B, T, D]; token_weight: [B, T] fp32 (1 / norm per counted token, 0 elsewhere).
// Returns a scalar fp32.
at::Tensor ild_layer_loss(const at::Tensor& h_s, const at::Tensor& h_t, const at::Tensor& a_s, const at::Tensor& a_t,
                          const at::Tensor& token_weight, const IldWeights& weights);

// h_student [B, T, Ds], h_teacher [B, T, Dt] (final hidden states after the final norm), heads [V, D*],
// ids [B, T] int64, loss_mask [B, T] (1 where ids[b, t] is a target). Position t-1 predicts ids[t]; each target
// token counts 1 / norm. Returns a scalar fp32.
at::Tensor kd_loss(const at::Tensor& h_student, const at::Tensor& w_student, const at::Tensor& h_teacher,
                   const at::Tensor& w_teacher, const at::Tensor& ids, const at::Tensor& loss_mask, double norm,
                   const KlOptions& options);

// Number of target tokens kd_loss counts in a batch: loss_mask[:, 1:].sum().
double kd_target_count(const at::Tensor& loss_mask);

}  // namespace hylo::train
