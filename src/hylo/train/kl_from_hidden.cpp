#include "hylo/train/kl_from_hidden.h"

#include <c10/core/GradMode.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>

#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"
#if HYLO_HAVE_CUDA
#include "hylo/kernels/kl_from_hidden/kl_from_hidden.h"
#endif

namespace hylo::train {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The tiles are explicit fp32 math; autocast would silently turn their matmuls into bf16.
class AutocastOff {
 public:
  explicit AutocastOff(at::DeviceType device) : device_(device), was_(at::autocast::is_autocast_enabled(device)) {
    at::autocast::set_autocast_enabled(device_, false);
  }
  ~AutocastOff() { at::autocast::set_autocast_enabled(device_, was_); }

 private:
  at::DeviceType device_;
  bool was_;
};

void check_inputs(const at::Tensor& hs, const at::Tensor& ws, const at::Tensor& ht, const at::Tensor& wt,
                  const at::Tensor& weights, const at::Tensor& targets, const KlOptions& o) {
  auto fail = [&](const std::string& what) {
    throw Error("kd_kl_from_hidden: " + what + " (h_student " + shape_str(hs) + ", w_student " + shape_str(ws) +
                ", h_teacher " + shape_str(ht) + ", w_teacher " + shape_str(wt) + ")");
  };
  if (hs.dim() != 2 || ws.dim() != 2 || ht.dim() != 2 || wt.dim() != 2) fail("hidden states and weights must be 2-D");
  if (hs.size(1) != ws.size(1)) fail("student hidden width differs from its head's");
  if (ht.size(1) != wt.size(1)) fail("teacher hidden width differs from its head's");
  if (ws.size(0) != wt.size(0)) fail("student and teacher vocabularies differ");
  if (hs.size(0) != ht.size(0)) fail("student and teacher row counts differ");
  if (weights.dim() != 1 || weights.size(0) != hs.size(0)) fail("weights must be [N]");
  if (o.ce_weight > 0 && (!targets.defined() || targets.dim() != 1 || targets.size(0) != hs.size(0)))
    fail("ce_weight > 0 needs targets [N]");
  if (!(o.temperature > 0)) fail("temperature must be > 0");
  if (o.vocab_tile < 1 || o.seq_tile < 1) fail("tiles must be >= 1");
}

// Per-row statistics of one row tile, carried over the vocabulary tiles (online softmax).
struct RowStats {
  at::Tensor lse_s, lse_t, lse_1;  // [n] fp32: log-sum-exp of s/tau, t/tau, s (the latter only with CE)
  at::Tensor kl;                   // [n] fp32
  at::Tensor ce;                   // [n] fp32 or undefined
};

RowStats row_tile_forward(const at::Tensor& hs, const at::Tensor& ws, const at::Tensor& ht, const at::Tensor& wt,
                          const at::Tensor& targets, const KlOptions& o) {
  const int64_t n = hs.size(0), v = ws.size(0);
  const double inv_tau = 1.0 / o.temperature;
  const bool ce = o.ce_weight > 0;
  auto f32 = hs.options().dtype(at::kFloat);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  at::Tensor m_s = at::full({n}, neg_inf, f32), l_s = at::zeros({n}, f32);  // running max / sum of exp, student
  at::Tensor m_t = at::full({n}, neg_inf, f32), l_t = at::zeros({n}, f32);  // teacher
  at::Tensor acc = at::zeros({n}, f32);  // sum_v exp(t_v/tau - m_t) (t_v - s_v)/tau, rescaled with m_t
  at::Tensor m_1, l_1, tgt;
  if (ce) {
    m_1 = at::full({n}, neg_inf, f32);
    l_1 = at::zeros({n}, f32);
    tgt = at::zeros({n}, f32);
  }
  for (int64_t v0 = 0; v0 < v; v0 += o.vocab_tile) {
    const int64_t vw = std::min(o.vocab_tile, v - v0);
    at::Tensor s = at::matmul(hs, ws.narrow(0, v0, vw).to(at::kFloat).t());  // [n, vw] fp32 logits
    at::Tensor t = at::matmul(ht, wt.narrow(0, v0, vw).to(at::kFloat).t());  // [n, vw]
    at::Tensor zs = s * inv_tau, zt = t * inv_tau;
    // student
    at::Tensor ms_new = at::maximum(m_s, std::get<0>(zs.max(1)));
    l_s = l_s * at::exp(m_s - ms_new) + at::exp(zs - ms_new.unsqueeze(1)).sum(1);
    m_s = ms_new;
    // teacher and the teacher-weighted difference
    at::Tensor mt_new = at::maximum(m_t, std::get<0>(zt.max(1)));
    at::Tensor scale = at::exp(m_t - mt_new);
    at::Tensor et = at::exp(zt - mt_new.unsqueeze(1));  // [n, vw]
    l_t = l_t * scale + et.sum(1);
    acc = acc * scale + (et * (zt - zs)).sum(1);
    m_t = mt_new;
    if (ce) {
      at::Tensor m1_new = at::maximum(m_1, std::get<0>(s.max(1)));
      l_1 = l_1 * at::exp(m_1 - m1_new) + at::exp(s - m1_new.unsqueeze(1)).sum(1);
      m_1 = m1_new;
      at::Tensor in_tile = (targets >= v0) & (targets < v0 + vw);                 // [n] bool
      at::Tensor idx = (targets - v0).clamp(0, vw - 1).unsqueeze(1);              // [n, 1]
      tgt = tgt + at::where(in_tile, s.gather(1, idx).squeeze(1), at::zeros_like(tgt));
    }
  }
  RowStats r;
  r.lse_s = m_s + at::log(l_s);
  r.lse_t = m_t + at::log(l_t);
  // KL = sum_v p_v (zt_v - zs_v) - lse_t + lse_s, with p_v = exp(zt_v - lse_t) = et_v / l_t
  r.kl = acc / l_t - r.lse_t + r.lse_s;
  if (ce) {
    r.lse_1 = m_1 + at::log(l_1);
    r.ce = r.lse_1 - tgt;
  }
  return r;
}

struct KlFromHiddenFunction : public torch::autograd::Function<KlFromHiddenFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hs, const at::Tensor& ws, const at::Tensor& ht,
                            const at::Tensor& wt, const at::Tensor& weights, const at::Tensor& targets,
                            double temperature, double ce_weight, int64_t vocab_tile, int64_t seq_tile) {
    KlOptions o{temperature, ce_weight, vocab_tile, seq_tile};
    AutocastOff no_autocast(hs.device().type());
    c10::NoGradGuard no_grad;
    const int64_t n = hs.size(0);
    auto f32 = hs.options().dtype(at::kFloat);
    at::Tensor lse_s = at::empty({n}, f32), lse_t = at::empty({n}, f32);
    at::Tensor lse_1 = ce_weight > 0 ? at::empty({n}, f32) : at::Tensor();
    at::Tensor total = at::zeros({}, f32);
    for (int64_t r0 = 0; r0 < n; r0 += seq_tile) {
      const int64_t rw = std::min(seq_tile, n - r0);
      at::Tensor tg = ce_weight > 0 ? targets.narrow(0, r0, rw) : at::Tensor();
      RowStats st = row_tile_forward(hs.narrow(0, r0, rw).to(at::kFloat), ws, ht.narrow(0, r0, rw).to(at::kFloat),
                                     wt, tg, o);
      lse_s.narrow(0, r0, rw).copy_(st.lse_s);
      lse_t.narrow(0, r0, rw).copy_(st.lse_t);
      at::Tensor per_row = st.kl;
      if (ce_weight > 0) {
        lse_1.narrow(0, r0, rw).copy_(st.lse_1);
        per_row = per_row + ce_weight * st.ce;
      }
      total += (weights.narrow(0, r0, rw).to(at::kFloat) * per_row).sum();
    }
    ctx->save_for_backward({hs, ws, ht, wt, weights, targets, lse_s, lse_t, lse_1});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["ce_weight"] = ce_weight;
    ctx->saved_data["vocab_tile"] = vocab_tile;
    ctx->saved_data["seq_tile"] = seq_tile;
    return total;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &hs = saved[0], &ws = saved[1], &ht = saved[2], &wt = saved[3], &weights = saved[4],
                     &targets = saved[5], &lse_s = saved[6], &lse_t = saved[7], &lse_1 = saved[8];
    const double tau = ctx->saved_data["temperature"].toDouble();
    const double ce_weight = ctx->saved_data["ce_weight"].toDouble();
    const int64_t vt = ctx->saved_data["vocab_tile"].toInt(), st = ctx->saved_data["seq_tile"].toInt();
    AutocastOff no_autocast(hs.device().type());
    c10::NoGradGuard no_grad;
    const at::Tensor g = grad_outputs[0].to(at::kFloat);  // [] upstream gradient
    const int64_t n = hs.size(0), v = ws.size(0);
    const bool need_hs = ctx->needs_input_grad(0), need_ws = ctx->needs_input_grad(1);
    at::Tensor grad_hs = need_hs ? at::zeros(hs.sizes(), hs.options().dtype(at::kFloat)) : at::Tensor();  // [N, Ds]
    at::Tensor grad_ws = need_ws ? at::zeros(ws.sizes(), ws.options().dtype(at::kFloat)) : at::Tensor();  // [V, Ds]
    for (int64_t r0 = 0; r0 < n; r0 += st) {
      const int64_t rw = std::min(st, n - r0);
      at::Tensor h_s = hs.narrow(0, r0, rw).to(at::kFloat), h_t = ht.narrow(0, r0, rw).to(at::kFloat);
      at::Tensor w_row = (weights.narrow(0, r0, rw).to(at::kFloat) * g).unsqueeze(1);  // [rw, 1]
      at::Tensor ls = lse_s.narrow(0, r0, rw).unsqueeze(1), lt = lse_t.narrow(0, r0, rw).unsqueeze(1);
      for (int64_t v0 = 0; v0 < v; v0 += vt) {
        const int64_t vw = std::min(vt, v - v0);
        at::Tensor w_s = ws.narrow(0, v0, vw).to(at::kFloat);  // [vw, Ds]
        at::Tensor s = at::matmul(h_s, w_s.t());                // [rw, vw]
        at::Tensor t = at::matmul(h_t, wt.narrow(0, v0, vw).to(at::kFloat).t());
        at::Tensor q = at::exp(s / tau - ls), p = at::exp(t / tau - lt);
        at::Tensor grad_logits = (q - p) * (w_row / tau);  // [rw, vw] dL/ds
        if (ce_weight > 0) {
          at::Tensor p1 = at::exp(s - lse_1.narrow(0, r0, rw).unsqueeze(1));
          at::Tensor tg = targets.narrow(0, r0, rw);
          at::Tensor in_tile = ((tg >= v0) & (tg < v0 + vw)).to(at::kFloat).unsqueeze(1);  // [rw, 1]
          at::Tensor onehot = at::zeros_like(p1).scatter_(1, (tg - v0).clamp(0, vw - 1).unsqueeze(1), in_tile);
          grad_logits = grad_logits + (p1 - onehot) * (w_row * ce_weight);
        }
        if (need_hs) grad_hs.narrow(0, r0, rw).add_(at::matmul(grad_logits, w_s));
        if (need_ws) grad_ws.narrow(0, v0, vw).add_(at::matmul(grad_logits.t(), h_s));
      }
    }
    variable_list out(10);
    if (need_hs) out[0] = grad_hs.to(hs.scalar_type());
    if (need_ws) out[1] = grad_ws.to(ws.scalar_type());
    return out;
  }
};

}  // namespace

at::Tensor kd_kl_from_hidden(const at::Tensor& h_student, const at::Tensor& w_student, const at::Tensor& h_teacher,
                             const at::Tensor& w_teacher, const at::Tensor& weights, const at::Tensor& targets,
                             const KlOptions& options) {
  check_inputs(h_student, w_student, h_teacher, w_teacher, weights, targets, options);
#if HYLO_HAVE_CUDA
  // On the GPU the same loss comes from the CUDA form (kernels/kl_from_hidden: cuBLAS tiles plus fused
  // online-softmax kernels, tested against the fp64 full-logit KL). It has no cross-entropy term, so CE runs stay
  // here. Its operands are given in fp32, the precision this function's tiles compute in, so both forms do the
  // same math; the casts are differentiable, so the gradients reach the fp32 master weights as before.
  if (h_student.is_cuda() && options.ce_weight == 0.0) {
    AutocastOff no_autocast(at::kCUDA);
    return kernels::kl_from_hidden_weighted_sum(h_student.to(at::kFloat), h_teacher.detach().to(at::kFloat),
                                                w_student.to(at::kFloat), w_teacher.detach().to(at::kFloat),
                                                options.temperature, weights.detach().to(at::kFloat));
  }
#endif
  at::Tensor tg = options.ce_weight > 0 ? targets.to(at::kLong) : at::zeros({0}, at::kLong);
  return KlFromHiddenFunction::apply(h_student, w_student, h_teacher.detach(), w_teacher.detach(), weights.detach(),
                                     tg, options.temperature, options.ce_weight, options.vocab_tile,
                                     options.seq_tile);
}

at::Tensor kd_kl_naive(const at::Tensor& h_student, const at::Tensor& w_student, const at::Tensor& h_teacher,
                       const at::Tensor& w_teacher, const at::Tensor& weights, const at::Tensor& targets,
                       const KlOptions& options) {
  check_inputs(h_student, w_student, h_teacher, w_teacher, weights, targets, options);
  const at::ScalarType ct = compute_type(h_student.scalar_type());
  AutocastOff no_autocast(h_student.device().type());
  at::Tensor s = at::matmul(h_student.to(ct), w_student.to(ct).t());  // [N, V]
  at::Tensor t;
  {
    c10::NoGradGuard no_grad;
    t = at::matmul(h_teacher.to(ct), w_teacher.to(ct).t());  // [N, V]
  }
  const double tau = options.temperature;
  at::Tensor logq = at::log_softmax(s / tau, 1), logp = at::log_softmax(t / tau, 1);
  at::Tensor per_row = (logp.exp() * (logp - logq)).sum(1);  // [N]
  if (options.ce_weight > 0)
    per_row = per_row - options.ce_weight * at::log_softmax(s, 1).gather(1, targets.to(at::kLong).unsqueeze(1)).squeeze(1);
  return (weights.to(ct) * per_row).sum();
}

}  // namespace hylo::train
