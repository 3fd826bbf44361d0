#include "hylo/train/losses.h"

#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::train {

at::Tensor ild_layer_loss(const at::Tensor& h_s, const at::Tensor& h_t, const at::Tensor& a_s, const at::Tensor& a_t,
                          const at::Tensor& token_weight, const IldWeights& weights) {
  if (h_s.sizes() != h_t.sizes() || a_s.sizes() != a_t.sizes() || h_s.dim() != 3)
    throw Error("ild_layer_loss: student and teacher shapes differ: " + shape_str(h_s) + " vs " + shape_str(h_t));
  const at::ScalarType ct = compute_type(h_s.scalar_type());
  at::Tensor w = token_weight.to(ct);                                                 // [B, T]
  at::Tensor dh = at::linalg_vector_norm(h_s.to(ct) - h_t.to(ct), 2, at::IntArrayRef{-1}, false);   // [B, T]
  at::Tensor da = at::linalg_vector_norm(a_s.to(ct) - a_t.to(ct), 2, at::IntArrayRef{-1}, false);   // [B, T]
  return (w * (weights.hidden * dh + weights.mixer * da)).sum();
}

double kd_target_count(const at::Tensor& loss_mask) {
  return loss_mask.narrow(1, 1, loss_mask.size(1) - 1).to(at::kDouble).sum().item<double>();
}

at::Tensor kd_loss(const at::Tensor& h_student, const at::Tensor& w_student, const at::Tensor& h_teacher,
                   const at::Tensor& w_teacher, const at::Tensor& ids, const at::Tensor& loss_mask, double norm,
                   const KlOptions& options) {
  const int64_t b = h_student.size(0), t = h_student.size(1);
  if (t < 2) throw Error("kd_loss: sequences need at least 2 tokens");
  if (!(norm > 0)) throw Error("kd_loss: the token count to normalise by must be > 0");
  // Rows: positions 0..T-2 of every sequence, predicting ids[:, 1:].
  at::Tensor hs = h_student.narrow(1, 0, t - 1).reshape({b * (t - 1), h_student.size(2)});  // [N, Ds]
  at::Tensor ht = h_teacher.narrow(1, 0, t - 1).reshape({b * (t - 1), h_teacher.size(2)});  // [N, Dt]
  at::Tensor w = loss_mask.narrow(1, 1, t - 1).reshape({b * (t - 1)}).to(hs.device(), at::kFloat) / norm;  // [N]
  at::Tensor tg = ids.narrow(1, 1, t - 1).reshape({b * (t - 1)}).to(hs.device(), at::kLong);             // [N]
  return kd_kl_from_hidden(hs, w_student, ht, w_teacher, w, tg, options);
}

}  // namespace hylo::train
