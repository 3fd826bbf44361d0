#include "hylo/ops/fused_attention.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "hylo/core/result.h"
#include "hylo/ops/attention.h"

namespace hylo::ops {
namespace {

constexpr int64_t kMaxHeadDim = 256;  // the flash kernel's largest head dim

int64_t round_up8(int64_t x) { return (x + 7) / 8 * 8; }

// The dtype the kernels run in: autocast's on CUDA when it is on (as SDPA under autocast would), else q's.
at::ScalarType working_dtype(const at::Tensor& q) {
  if (at::autocast::is_autocast_enabled(at::kCUDA)) return at::autocast::get_autocast_dtype(at::kCUDA);
  return q.scalar_type();
}

bool fused_dtype(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat; }

// [..., D] -> [..., width] with zero columns appended (autograd-capable; a no-op at width D).
at::Tensor pad_last(const at::Tensor& x, int64_t width) {
  const int64_t d = x.size(-1);
  return d == width ? x : at::constant_pad_nd(x, {0, width - d});
}

void check_shapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t q_offset) {
  const bool ok = q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.size(0) == q.size(0) && v.size(0) == q.size(0) &&
                  k.size(1) > 0 && v.size(1) == k.size(1) && q.size(1) % k.size(1) == 0 && k.size(3) == q.size(3) &&
                  v.size(2) == k.size(2) && q_offset >= 0 && k.size(2) >= q_offset + q.size(2);
  if (!ok)
    throw Error("fused_causal_attention: expected q [B, Hq, T, Dqk], k [B, Hkv, S, Dqk], v [B, Hkv, S, Dv] with "
                "Hkv | Hq and S >= q_offset + T; got q " + c10::str(q.sizes()) + ", k " + c10::str(k.sizes()) +
                ", v " + c10::str(v.sizes()) + ", q_offset " + std::to_string(q_offset));
}

struct Partial {
  at::Tensor out;  // [B, Hq, T, D] in the working dtype
  at::Tensor lse;  // [B, Hq, T] fp32: log sum_j exp(scale q.k_j) over this part's keys
};

// One part of the keys, all rows unmasked (causal = false) or T x T causal (causal = true), with its log-sum-exp.
// fp16/bf16: the flash kernel (GQA native). fp32: the memory-efficient kernel, KV heads repeated (it takes equal
// head counts only in some ATen versions). Both kernels may pad the log-sum-exp's row axis; it is cut back to T.
Partial attend_part(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, bool causal) {
  const int64_t t = q.size(2);
  at::Tensor out, lse;
  if (q.scalar_type() == at::kFloat) {
    const int64_t rep = q.size(1) / k.size(1);
    at::Tensor kr = rep == 1 ? k : k.repeat_interleave(rep, 1), vr = rep == 1 ? v : v.repeat_interleave(rep, 1);
    auto r = at::_scaled_dot_product_efficient_attention(q.contiguous(), kr.contiguous(), vr.contiguous(),
                                                         /*attn_bias=*/std::nullopt, /*compute_log_sumexp=*/true,
                                                         /*dropout_p=*/0.0, causal, scale);
    out = std::get<0>(r), lse = std::get<1>(r);
  } else {
    auto r = at::_scaled_dot_product_flash_attention(q, k, v, /*dropout_p=*/0.0, causal, /*return_debug_mask=*/false,
                                                     scale);
    out = std::get<0>(r), lse = std::get<1>(r);
  }
  return {out, lse.narrow(-1, 0, t).to(at::kFloat)};
}

// Exact softmax over the union of two disjoint key sets from the parts' outputs and log-sum-exps, in fp32.
at::Tensor merge(const Partial& a, const Partial& b, at::ScalarType dtype) {
  at::Tensor la = a.lse.unsqueeze(-1), lb = b.lse.unsqueeze(-1);  // [B, Hq, T, 1]
  at::Tensor m = at::maximum(la, lb);
  at::Tensor wa = at::exp(la - m), wb = at::exp(lb - m);           // each in (0, 1], one of them 1
  at::Tensor o = (a.out.to(at::kFloat) * wa + b.out.to(at::kFloat) * wb) / (wa + wb);  // [B, Hq, T, D]
  return o.to(dtype);
}

}  // namespace

bool fused_causal_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!q.is_cuda() || !k.is_cuda() || !v.is_cuda() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  if (!fused_dtype(working_dtype(q))) return false;
  if (!at::autocast::is_autocast_enabled(at::kCUDA) &&
      (k.scalar_type() != q.scalar_type() || v.scalar_type() != q.scalar_type()))
    return false;
  return round_up8(std::max(q.size(3), v.size(3))) <= kMaxHeadDim;
}

at::Tensor fused_causal_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                  double scale, int64_t q_offset) {
  check_shapes(q_in, k_in, v_in, q_offset);
  if (!fused_causal_attention_supported(q_in, k_in, v_in))
    throw Error("fused_causal_attention: needs CUDA tensors of one dtype among fp16/bf16/fp32 with head dims <= " +
                std::to_string(kMaxHeadDim) + "; got q " + c10::str(q_in.sizes()) + " " +
                std::string(c10::toString(q_in.scalar_type())) + " on " + q_in.device().str() + ", v " +
                c10::str(v_in.sizes()));
  const at::ScalarType dtype = working_dtype(q_in);
  const int64_t t = q_in.size(2), s = q_offset + t, dv = v_in.size(3);
  const int64_t width = round_up8(std::max(q_in.size(3), dv));
  at::Tensor q = pad_last(q_in.to(dtype), width);                      // [B, Hq, T, W]
  at::Tensor k = pad_last(k_in.narrow(2, 0, s).to(dtype), width);      // [B, Hkv, S, W]
  at::Tensor v = pad_last(v_in.narrow(2, 0, s).to(dtype), width);      // [B, Hkv, S, W]
  const bool gqa = k.size(1) != q.size(1);
  const bool needs_grad =
      at::GradMode::is_enabled() && (q_in.requires_grad() || k_in.requires_grad() || v_in.requires_grad());

  at::Tensor out;  // [B, Hq, T, W]
  if (q_offset == 0) {
    // Training and the first prefill chunk: one causal call, with a backward.
    out = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, 0.0, /*is_causal=*/true, scale, gqa);
  } else if (t == 1) {
    // A decode token sees every key: no mask at all.
    out = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, 0.0, /*is_causal=*/false, scale, gqa);
  } else if (needs_grad) {
    // Gradients through a cached prefix: the masked form (the merge below has no backward through the lse).
    at::Tensor mask = causal_mask(t, s, q_offset, std::nullopt, q.device());  // [T, S] bool
    out = at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/false, scale, gqa);
  } else {
    Partial prefix = attend_part(q, k.narrow(2, 0, q_offset), v.narrow(2, 0, q_offset), scale, /*causal=*/false);
    Partial chunk = attend_part(q, k.narrow(2, q_offset, t), v.narrow(2, q_offset, t), scale, /*causal=*/true);
    out = merge(prefix, chunk, dtype);
  }
  return out.narrow(3, 0, dv);  // [B, Hq, T, Dv]
}

}  // namespace hylo::ops
