#include "hylo/ops/mla.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/fused_attention.h"
#include "hylo/ops/tensor_util.h"
#if HYLO_HAVE_CUDA
#include "hylo/kernels/mla_decode/mla_decode.h"
#endif

namespace hylo::ops {
namespace {

struct Dims {
  int64_t b, t, h, p, r, s, c, g, rep, v;
};

// Checks every shape against the others and returns the dimensions; errors name the tensor and what was expected.
Dims check_inputs(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& c_kv, const at::Tensor& k_pe,
                  const at::Tensor& kv_b_weight, int64_t num_kv_groups, int64_t q_offset) {
  auto fail = [](const std::string& what) { throw Error("mla attention: " + what); };
  if (q_nope.dim() != 4) fail("q_nope must be [B, T, H, Dn], got " + c10::str(q_nope.sizes()));
  Dims d{};
  d.b = q_nope.size(0), d.t = q_nope.size(1), d.h = q_nope.size(2), d.p = q_nope.size(3);
  if (q_pe.dim() != 4 || q_pe.size(0) != d.b || q_pe.size(1) != d.t || q_pe.size(2) != d.h)
    fail("q_pe must be [B, T, H, Dr] = [" + std::to_string(d.b) + ", " + std::to_string(d.t) + ", " +
         std::to_string(d.h) + ", Dr], got " + c10::str(q_pe.sizes()));
  d.r = q_pe.size(3);
  if (c_kv.dim() != 3 || c_kv.size(0) != d.b) fail("c_kv must be [B, S, Rkv], got " + c10::str(c_kv.sizes()));
  d.s = c_kv.size(1), d.c = c_kv.size(2);
  if (k_pe.dim() != 3 || k_pe.size(0) != d.b || k_pe.size(1) != d.s || k_pe.size(2) != d.r)
    fail("k_pe must be [B, S, Dr] = [" + std::to_string(d.b) + ", " + std::to_string(d.s) + ", " +
         std::to_string(d.r) + "], got " + c10::str(k_pe.sizes()));
  if (num_kv_groups <= 0 || d.h % num_kv_groups != 0)
    fail("num_kv_groups " + std::to_string(num_kv_groups) + " must divide num_heads " + std::to_string(d.h));
  d.g = num_kv_groups, d.rep = d.h / d.g;
  if (kv_b_weight.dim() != 2 || kv_b_weight.size(1) != d.c || kv_b_weight.size(0) % d.g != 0 ||
      kv_b_weight.size(0) / d.g <= d.p)
    fail("kv_b_proj.weight must be [G*(Dn+Dv), Rkv] with G=" + std::to_string(d.g) + ", Dn=" + std::to_string(d.p) +
         ", Rkv=" + std::to_string(d.c) + ", got " + c10::str(kv_b_weight.sizes()));
  d.v = kv_b_weight.size(0) / d.g - d.p;
  if (q_offset < 0 || q_offset + d.t > d.s)
    fail("q_offset " + std::to_string(q_offset) + " + T " + std::to_string(d.t) + " exceeds the " +
         std::to_string(d.s) + " key tokens");
  return d;
}

// [B, T, H, X] -> [B, G, rep*T, X]: heads of one kv group stacked along the row axis (head h = g*rep + i).
at::Tensor to_groups(const at::Tensor& x, const Dims& d) {
  const int64_t width = x.size(3);
  return x.reshape({d.b, d.t, d.g, d.rep, width}).permute({0, 2, 3, 1, 4}).reshape({d.b, d.g, d.rep * d.t, width});
}

// [B, G, rep*T, X] -> [B, T, H, X].
at::Tensor from_groups(const at::Tensor& x, const Dims& d) {
  const int64_t width = x.size(3);
  return x.reshape({d.b, d.g, d.rep, d.t, width}).permute({0, 3, 1, 2, 4}).reshape({d.b, d.t, d.h, width});
}

// Scaled, causally masked softmax over keys; scores: [B, G, rep*T, S] in the working dtype. The softmax runs in
// fp32 (fp64 for fp64 inputs) and the probabilities are returned in the working dtype, as HF's eager attention.
at::Tensor causal_softmax(const at::Tensor& scores, double scale, const Dims& d, int64_t q_offset) {
  at::TensorOptions idx = at::TensorOptions().dtype(at::kLong).device(scores.device());
  at::Tensor q_pos = at::arange(d.t, idx).add_(q_offset);                           // [T]
  at::Tensor k_pos = at::arange(d.s, idx);                                          // [S]
  at::Tensor masked = k_pos.unsqueeze(0) > q_pos.unsqueeze(1);                      // [T, S] true = future key
  at::ScalarType soft_type = compute_type(scores.scalar_type());
  at::Tensor s = (scores.to(soft_type) * scale).reshape({d.b, d.g, d.rep, d.t, d.s});  // [B, G, rep, T, S]
  s = s.masked_fill(masked, -std::numeric_limits<double>::infinity());
  return at::softmax(s, -1).to(scores.scalar_type()).reshape({d.b, d.g, d.rep * d.t, d.s});  // [B, G, rep*T, S]
}

// Runs `attend(block_dims, t0)` over blocks of query rows [t0, t0 + t) so that one block's scores
// [B, H, t, s] stay within `max_score_elements` (0: kDefaultScoreElements); each block sees only the keys it may
// attend to, s = q_offset + t0 + t. Rows are independent, so blocking changes no value. Returns [B, T, H, Dv].
template <class Fn>
at::Tensor by_query_blocks(const Dims& d, int64_t q_offset, int64_t max_score_elements, Fn attend) {
  constexpr int64_t kDefaultScoreElements = int64_t{1} << 26;  // 256 MiB of fp32 scores
  const int64_t budget = max_score_elements > 0 ? max_score_elements : kDefaultScoreElements;
  const int64_t rows = std::max<int64_t>(1, budget / std::max<int64_t>(1, d.b * d.h * d.s));
  std::vector<at::Tensor> outs;
  for (int64_t t0 = 0; t0 < d.t; t0 += rows) {
    Dims bd = d;
    bd.t = std::min(rows, d.t - t0);
    bd.s = q_offset + t0 + bd.t;
    outs.push_back(attend(bd, t0));
  }
  return outs.size() == 1 ? outs[0] : at::cat(outs, 1);
}

}  // namespace

MlaUpProjections mla_split_kv_b(const at::Tensor& kv_b_weight, int64_t num_kv_groups, int64_t nope_dim) {
  const int64_t rows = kv_b_weight.size(0) / num_kv_groups;
  at::Tensor w = kv_b_weight.reshape({num_kv_groups, rows, kv_b_weight.size(1)});  // [G, Dn+Dv, Rkv]
  return {w.narrow(1, 0, nope_dim), w.narrow(1, nope_dim, rows - nope_dim)};
}

at::Tensor mla_attention_decompressed(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& c_kv,
                                      const at::Tensor& k_pe, const at::Tensor& kv_b_weight,
                                      int64_t num_kv_groups, double scale, int64_t q_offset,
                                      int64_t max_score_elements) {
  const Dims d = check_inputs(q_nope, q_pe, c_kv, k_pe, kv_b_weight, num_kv_groups, q_offset);
  if (q_nope.is_cuda()) {
    // CUDA: decompress the keys a query can see (s = q_offset + T) and run fused causal attention over them, GQA
    // over the G groups (head h reads group h / rep, as to_groups below): no [T, S] scores, and a backward.
    const int64_t s = q_offset + d.t;
    at::Tensor kv = at::linear(c_kv.narrow(1, 0, s), kv_b_weight).reshape({d.b, s, d.g, d.p + d.v});  // [B, s, G, Dn+Dv]
    at::Tensor k_rot = k_pe.narrow(1, 0, s).unsqueeze(2).expand({d.b, s, d.g, d.r});                 // [B, s, G, Dr]
    at::Tensor k = at::cat({kv.narrow(3, 0, d.p), k_rot.to(kv.scalar_type())}, 3).permute({0, 2, 1, 3});  // [B, G, s, Dn+Dr]
    at::Tensor v = kv.narrow(3, d.p, d.v).permute({0, 2, 1, 3});                                      // [B, G, s, Dv]
    at::Tensor q = at::cat({q_nope, q_pe.to(q_nope.scalar_type())}, 3).permute({0, 2, 1, 3});        // [B, H, T, Dn+Dr]
    if (fused_causal_attention_supported(q, k, v))
      return fused_causal_attention(q, k, v, scale, q_offset).permute({0, 2, 1, 3});                  // [B, T, H, Dv]
  }
  // Decompress every key token into its G groups of [k_nope ; v] (kv_b_proj), then append the shared k_pe.
  at::Tensor kv = at::linear(c_kv, kv_b_weight).reshape({d.b, d.s, d.g, d.p + d.v});  // [B, S, G, Dn+Dv]
  at::Tensor k_nope = kv.narrow(3, 0, d.p).permute({0, 2, 1, 3});                       // [B, G, S, Dn]
  at::Tensor v = kv.narrow(3, d.p, d.v).permute({0, 2, 1, 3});                          // [B, G, S, Dv]
  at::Tensor k_rot = k_pe.unsqueeze(1).expand({d.b, d.g, d.s, d.r});                    // [B, G, S, Dr]
  at::Tensor k = at::cat({k_nope, k_rot}, 3);                                           // [B, G, S, Dn+Dr]
  return by_query_blocks(d, q_offset, max_score_elements, [&](const Dims& bd, int64_t t0) {
    at::Tensor q = to_groups(at::cat({q_nope.narrow(1, t0, bd.t), q_pe.narrow(1, t0, bd.t)}, 3), bd);  // [B, G, rep*t, Dn+Dr]
    at::Tensor scores = at::matmul(q, k.narrow(2, 0, bd.s).transpose(2, 3));                           // [B, G, rep*t, s]
    at::Tensor probs = causal_softmax(scores, scale, bd, q_offset + t0);                               // [B, G, rep*t, s]
    return from_groups(at::matmul(probs, v.narrow(2, 0, bd.s)), bd);                                   // [B, t, H, Dv]
  });
}

at::Tensor mla_attention_absorbed(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& c_kv,
                                  const at::Tensor& k_pe, const at::Tensor& kv_b_weight, int64_t num_kv_groups,
                                  double scale, int64_t q_offset, int64_t max_score_elements) {
  const Dims d = check_inputs(q_nope, q_pe, c_kv, k_pe, kv_b_weight, num_kv_groups, q_offset);
  MlaUpProjections up = mla_split_kv_b(kv_b_weight, d.g, d.p);                         // [G, Dn, Rkv], [G, Dv, Rkv]
#if HYLO_HAVE_CUDA
  // One decode token per sequence on the GPU: the split-KV latent kernel (kernels/mla_decode) does the attention
  // core; the absorption of W_UK before and W_UV after stay here. T == 1 sees keys [0, q_offset] only.
  if (d.t == 1 && q_nope.is_cuda()) {
    at::Tensor q_lat = at::matmul(to_groups(q_nope, d), up.w_uk).reshape({d.b, d.h, d.c});  // [B, H, Rkv]
    at::Tensor q_rot = q_pe.reshape({d.b, d.h, d.r});                                      // [B, H, Dr]
    at::Tensor cs = c_kv.narrow(1, 0, q_offset + 1), ks = k_pe.narrow(1, 0, q_offset + 1);  // [B, s, Rkv], [B, s, Dr]
    if (kernels::mla_latent_decode_supported(q_lat, q_rot, cs, ks)) {
      at::Tensor ctx = kernels::mla_latent_decode(q_lat, q_rot, cs, ks, at::Tensor(), scale);  // [B, H, Rkv]
      at::Tensor out = at::matmul(ctx.reshape({d.b, d.g, d.rep, d.c}), up.w_uv.transpose(1, 2));  // [B, G, rep, Dv]
      return out.reshape({d.b, 1, d.h, d.v});                                                    // [B, 1, H, Dv]
    }
  }
#endif
  at::Tensor c = c_kv.unsqueeze(1);                                                     // [B, 1, S, Rkv]
  at::Tensor kr = k_pe.unsqueeze(1);                                                    // [B, 1, S, Dr]
  return by_query_blocks(d, q_offset, max_score_elements, [&](const Dims& bd, int64_t t0) {
    // q~ = q_nope W_UK: the nope query of each head expressed in latent coordinates.
    at::Tensor q_lat = at::matmul(to_groups(q_nope.narrow(1, t0, bd.t), bd), up.w_uk);  // [B, G, rep*t, Rkv]
    at::Tensor q_rot = to_groups(q_pe.narrow(1, t0, bd.t), bd);                         // [B, G, rep*t, Dr]
    at::Tensor cs = c.narrow(2, 0, bd.s);                                               // [B, 1, s, Rkv]
    at::Tensor scores = at::matmul(q_lat, cs.transpose(2, 3)) +
                        at::matmul(q_rot, kr.narrow(2, 0, bd.s).transpose(2, 3));      // [B, G, rep*t, s]
    at::Tensor probs = causal_softmax(scores, scale, bd, q_offset + t0);                // [B, G, rep*t, s]
    at::Tensor ctx = at::matmul(probs, cs);                                             // [B, G, rep*t, Rkv]
    // out = ctx W_UV^T: back from latent to value coordinates.
    return from_groups(at::matmul(ctx, up.w_uv.transpose(1, 2)), bd);                   // [B, t, H, Dv]
  });
}

}  // namespace hylo::ops
