#include "hylo/ops/attention.h"

#include <algorithm>
#include <limits>
#include <string>

#include "hylo/core/result.h"
#include "hylo/ops/fused_attention.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::ops {
namespace {

void check_shapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t q_offset) {
  const bool ok = q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(0) == k.size(0) &&
                  q.size(3) == k.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0 && q_offset >= 0 &&
                  k.size(2) >= q_offset + q.size(2);
  if (!ok)
    throw Error("causal_attention: expected q [B, Hq, T, Dh], k/v [B, Hkv, S, Dh] with Hkv | Hq and S >= q_offset + T; "
                "got q " + c10::str(q.sizes()) + ", k " + c10::str(k.sizes()) + ", v " + c10::str(v.sizes()) +
                ", q_offset " + std::to_string(q_offset));
}

}  // namespace

at::Tensor causal_mask(int64_t t, int64_t s, int64_t q_offset, std::optional<int64_t> window, at::Device device) {
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor qpos = at::arange(q_offset, q_offset + t, opts).unsqueeze(1);  // [T, 1]
  at::Tensor kpos = at::arange(0, s, opts).unsqueeze(0);                    // [1, S]
  at::Tensor mask = kpos <= qpos;                                           // [T, S]
  if (window) mask = at::logical_and(mask, kpos > qpos - *window);
  return mask;
}

at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                      int64_t q_offset, std::optional<int64_t> window) {
  check_shapes(q, k, v, q_offset);
  const int64_t b = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  const int64_t hkv = k.size(1), s = k.size(2), rep = hq / hkv;
  // Group the query heads that share a KV head: [B, Hkv, rep, T, Dh]; k, v broadcast as [B, Hkv, 1, S, Dh].
  // fp32 math for half types, fp64 for fp64 inputs (so fp64 tests compare forms at rounding level).
  const at::ScalarType ct = compute_type(q.scalar_type());
  at::Tensor qg = q.to(ct).reshape({b, hkv, rep, t, d});
  at::Tensor kg = k.to(ct).unsqueeze(2);
  at::Tensor vg = v.to(ct).unsqueeze(2);
  at::Tensor scores = at::matmul(qg, kg.transpose(-1, -2)) * scale;          // [B, Hkv, rep, T, S]
  at::Tensor mask = causal_mask(t, s, q_offset, window, q.device());        // [T, S]
  scores = scores.masked_fill(at::logical_not(mask), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);                                // [B, Hkv, rep, T, S]
  at::Tensor out = at::matmul(probs, vg);                                    // [B, Hkv, rep, T, Dh]
  return out.reshape({b, hq, t, d}).to(q.scalar_type());
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            int64_t q_offset, std::optional<int64_t> window) {
  if (!q.is_cuda()) return causal_attention_reference(q, k, v, scale, q_offset, window);
  check_shapes(q, k, v, q_offset);
  const int64_t t = q.size(2), s = q_offset + t;  // keys past q_offset + T are never seen
  // A window that every query's span fits in changes nothing: exact prefix + chunk attention, no [T, S] mask.
  if ((!window || *window >= s) && fused_causal_attention_supported(q, k, v))
    return fused_causal_attention(q, k, v, scale, q_offset);
  // A window that cuts the prefix: keys before the first query's window are seen by no row, so the masked form
  // runs over the last T + W - 1 keys at most and its mask stays [T, T + W - 1], not [T, S].
  const int64_t first = window ? std::max<int64_t>(0, q_offset + 1 - *window) : 0;
  at::Tensor ks = k.narrow(2, first, s - first), vs = v.narrow(2, first, s - first);
  at::Tensor mask = causal_mask(t, s - first, q_offset - first, window, q.device());  // [T, s - first] bool
  return at::scaled_dot_product_attention(q, ks, vs, mask, 0.0, /*is_causal=*/false, scale,
                                          /*enable_gqa=*/k.size(1) != q.size(1));
}

}  // namespace hylo::ops
