#include "hylo/ops/paged_decode.h"

#include <limits>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#if HYLO_HAVE_CUDA
#include "hylo/kernels/gqa_decode/gqa_decode.h"
#include "hylo/kernels/mla_decode/mla_decode.h"
#endif
#include "hylo/ops/mla.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::ops {
namespace {

// Checks the paging operands shared by every op here; `who` names the op in errors. On CPU also checks that page
// ids name pages and lengths fit the table (on a GPU that would cost a sync per layer; a bad id there is a device
// assert from index_select, a too-long length reads only padding rows).
void check_paging(const char* who, const at::Tensor& pages, const at::Tensor& page_table, const at::Tensor& lengths,
                  int64_t sequences) {
  auto fail = [&](const std::string& what) { throw Error(std::string(who) + ": " + what); };
  if (pages.dim() < 3) fail("pages must be [P, page_size, ...], got " + shape_str(pages));
  if (page_table.dim() != 2 || page_table.scalar_type() != at::kInt || page_table.size(0) != sequences ||
      page_table.size(1) == 0)
    fail("page_table must be [S, max_pages] int32 with S = " + std::to_string(sequences) + " and max_pages >= 1, got " +
         shape_str(page_table) + " " + std::string(c10::toString(page_table.scalar_type())));
  if (lengths.dim() != 1 || lengths.scalar_type() != at::kInt || lengths.size(0) != sequences)
    fail("lengths must be [S] int32 with S = " + std::to_string(sequences) + ", got " + shape_str(lengths) + " " +
         std::string(c10::toString(lengths.scalar_type())));
  if (page_table.device() != pages.device() || lengths.device() != pages.device())
    fail("pages, page_table and lengths must be on one device");
  if (pages.is_cpu() && sequences > 0) {
    const int64_t lo = page_table.min().item<int64_t>(), hi = page_table.max().item<int64_t>();
    if (lo < 0 || hi >= pages.size(0))
      fail("page_table names pages [" + std::to_string(lo) + ", " + std::to_string(hi) + "] but there are " +
           std::to_string(pages.size(0)));
    const int64_t capacity = page_table.size(1) * pages.size(1);
    const int64_t lmin = lengths.min().item<int64_t>(), lmax = lengths.max().item<int64_t>();
    if (lmin < 0 || lmax > capacity)
      fail("lengths must be in [0, max_pages * page_size = " + std::to_string(capacity) + "], got [" +
           std::to_string(lmin) + ", " + std::to_string(lmax) + "]");
  }
}

// [S, L] true where key position t < lengths[s] (and, with a window W, t >= lengths[s] - W).
at::Tensor valid_keys(const at::Tensor& lengths, int64_t l, std::optional<int64_t> window) {
  at::Tensor pos = at::arange(l, lengths.options().dtype(at::kLong)).unsqueeze(0);  // [1, L]
  at::Tensor len = lengths.to(at::kLong).unsqueeze(1);                                // [S, 1]
  at::Tensor valid = pos < len;                                                       // [S, L]
  if (window) valid = at::logical_and(valid, pos >= len - *window);
  return valid;
}

// softmax over the last axis of scores [S, X, L] (already scaled) where valid [S, 1, L]; rows without a valid key
// (length 0) give probabilities 0 instead of NaN.
at::Tensor masked_softmax(const at::Tensor& scores, const at::Tensor& valid) {
  at::Tensor s = scores.masked_fill(at::logical_not(valid), -std::numeric_limits<double>::infinity());
  return at::softmax(s, -1).masked_fill(at::logical_not(valid), 0.0);
}

}  // namespace

at::Tensor gather_paged_rows(const at::Tensor& pages, const at::Tensor& page_table) {
  if (pages.dim() < 2 || page_table.dim() != 2)
    throw Error("gather_paged_rows: pages must be [P, page_size, ...] and page_table [S, max_pages], got " +
                shape_str(pages) + " and " + shape_str(page_table));
  const int64_t s = page_table.size(0), rows = page_table.size(1) * pages.size(1);
  std::vector<int64_t> shape = pages.sizes().vec();
  shape.erase(shape.begin(), shape.begin() + 2);
  shape.insert(shape.begin(), {s, rows});
  return pages.index_select(0, page_table.reshape({-1}).to(at::kLong)).reshape(shape);  // [S, maxp*page_size, ...]
}

at::Tensor mla_latent_decode_paged_reference(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& pages,
                                             const at::Tensor& page_table, const at::Tensor& lengths, double scale) {
  if (q_lat.dim() != 3 || q_pe.dim() != 3 || q_pe.size(0) != q_lat.size(0) || q_pe.size(1) != q_lat.size(1))
    throw Error("mla_latent_decode_paged: q_lat must be [S, H, Rkv] and q_pe [S, H, Dr], got " + shape_str(q_lat) +
                " and " + shape_str(q_pe));
  const int64_t s = q_lat.size(0), c = q_lat.size(2), r = q_pe.size(2);
  check_paging("mla_latent_decode_paged", pages, page_table, lengths, s);
  if (pages.dim() != 3 || pages.size(2) != c + r)
    throw Error("mla_latent_decode_paged: pages must be [P, page_size, Rkv+Dr = " + std::to_string(c + r) +
                "], got " + shape_str(pages));
  const at::ScalarType work = q_lat.scalar_type();
  at::Tensor rows = gather_paged_rows(pages, page_table).to(work);                   // [S, L, Rkv+Dr]
  const int64_t l = rows.size(1);
  at::Tensor valid = valid_keys(lengths, l, std::nullopt);                            // [S, L]
  rows = rows.masked_fill(at::logical_not(valid).unsqueeze(2), 0.0);
  at::Tensor c_kv = rows.narrow(2, 0, c), k_pe = rows.narrow(2, c, r);                // [S, L, Rkv], [S, L, Dr]
  at::Tensor scores = at::matmul(q_lat, c_kv.transpose(1, 2)) +
                      at::matmul(q_pe.to(work), k_pe.transpose(1, 2));                // [S, H, L]
  at::Tensor probs = masked_softmax(scores.to(compute_type(work)) * scale, valid.unsqueeze(1)).to(work);
  return at::matmul(probs, c_kv);                                                     // [S, H, Rkv]
}

at::Tensor mla_decode_paged(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& pages,
                            const at::Tensor& page_table, const at::Tensor& lengths, const at::Tensor& kv_b_weight,
                            int64_t num_kv_groups, double scale) {
  if (q_nope.dim() != 3 || q_pe.dim() != 3 || q_pe.size(0) != q_nope.size(0) || q_pe.size(1) != q_nope.size(1))
    throw Error("mla_decode_paged: q_nope must be [S, H, Dn] and q_pe [S, H, Dr], got " + shape_str(q_nope) +
                " and " + shape_str(q_pe));
  const int64_t s = q_nope.size(0), h = q_nope.size(1), p = q_nope.size(2);
  if (num_kv_groups <= 0 || h % num_kv_groups != 0)
    throw Error("mla_decode_paged: num_kv_groups " + std::to_string(num_kv_groups) + " must divide num_heads " +
                std::to_string(h));
  const int64_t g = num_kv_groups, rep = h / g;
  if (kv_b_weight.dim() != 2 || kv_b_weight.size(0) % g != 0 || kv_b_weight.size(0) / g <= p)
    throw Error("mla_decode_paged: kv_b_proj.weight must be [G*(Dn+Dv), Rkv] with G=" + std::to_string(g) +
                ", Dn=" + std::to_string(p) + ", got " + shape_str(kv_b_weight));
  const int64_t c = kv_b_weight.size(1), v = kv_b_weight.size(0) / g - p;
  MlaUpProjections up = mla_split_kv_b(kv_b_weight, g, p);                                  // [G, Dn, Rkv], [G, Dv, Rkv]
  // q~ = q_nope W_UK per group (head h = g * rep + i, as mla_attention_absorbed groups them).
  at::Tensor q_lat = at::matmul(q_nope.reshape({s, g, rep, p}), up.w_uk).reshape({s, h, c});  // [S, H, Rkv]
  at::Tensor ctx;  // [S, H, Rkv]
#if HYLO_HAVE_CUDA
  // bf16 on the GPU: the split-KV paged kernel (kernels/mla_decode) does the attention core, graph-safe; W_UK above
  // and W_UV below stay here. The reference below is what its GPU tests compare against.
  if (q_lat.is_cuda()) {
    at::Tensor ql = q_lat.to(pages.scalar_type()).contiguous(), qp = q_pe.to(pages.scalar_type()).contiguous();
    if (kernels::mla_latent_decode_paged_supported(ql, qp, pages, page_table, lengths))
      ctx = kernels::mla_latent_decode_paged(ql, qp, pages, page_table, lengths, scale).to(q_lat.scalar_type());
  }
#endif
  if (!ctx.defined()) ctx = mla_latent_decode_paged_reference(q_lat, q_pe, pages, page_table, lengths, scale);
  // out = ctx W_UV^T: back from latent to value coordinates.
  return at::matmul(ctx.reshape({s, g, rep, c}), up.w_uv.transpose(1, 2)).reshape({s, h, v});  // [S, H, Dv]
}

namespace {

// The operand checks both GQA entry points share; returns nothing, throws hylo::Error naming `who`.
void check_gqa_operands(const char* who, const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                        const at::Tensor& page_table, const at::Tensor& lengths, std::optional<int64_t> window) {
  if (q.dim() != 3 || k_pages.dim() != 4 || v_pages.sizes() != k_pages.sizes() || k_pages.size(3) != q.size(2) ||
      k_pages.size(2) == 0 || q.size(1) % k_pages.size(2) != 0)
    throw Error(std::string(who) + ": expected q [S, Hq, Dh] and k_pages, v_pages [P, page_size, Hkv, Dh] with "
                "Hkv | Hq; got q " + shape_str(q) + ", k_pages " + shape_str(k_pages) + ", v_pages " +
                shape_str(v_pages));
  if (window && *window <= 0)
    throw Error(std::string(who) + ": window must be positive, got " + std::to_string(*window));
  check_paging(who, k_pages, page_table, lengths, q.size(0));
}

// The ATen form, operands already checked.
at::Tensor gqa_reference_checked(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                 const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                                 std::optional<int64_t> window) {
  const int64_t s = q.size(0), hq = q.size(1), dh = q.size(2), hkv = k_pages.size(2), rep = hq / hkv;
  const at::ScalarType soft = compute_type(q.scalar_type());
  at::Tensor k = gather_paged_rows(k_pages, page_table).to(soft);                     // [S, L, Hkv, Dh]
  at::Tensor v = gather_paged_rows(v_pages, page_table).to(soft);                     // [S, L, Hkv, Dh]
  const int64_t l = k.size(1);
  at::Tensor valid = valid_keys(lengths, l, window);                                  // [S, L]
  at::Tensor unused = at::logical_not(valid).view({s, l, 1, 1});
  k = k.masked_fill(unused, 0.0).permute({0, 2, 1, 3});                               // [S, Hkv, L, Dh]
  v = v.masked_fill(unused, 0.0).permute({0, 2, 1, 3});                               // [S, Hkv, L, Dh]
  at::Tensor qg = q.to(soft).reshape({s, hkv, rep, dh});                              // [S, Hkv, rep, Dh]
  at::Tensor scores = at::matmul(qg, k.transpose(2, 3)) * scale;                      // [S, Hkv, rep, L]
  at::Tensor probs = masked_softmax(scores.reshape({s, hq, l}), valid.unsqueeze(1));  // [S, Hq, L]
  at::Tensor out = at::matmul(probs.reshape({s, hkv, rep, l}), v);                    // [S, Hkv, rep, Dh]
  return out.reshape({s, hq, dh}).to(q.scalar_type());
}

}  // namespace

at::Tensor gqa_decode_paged(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                            const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                            std::optional<int64_t> window) {
  check_gqa_operands("gqa_decode_paged", q, k_pages, v_pages, page_table, lengths, window);
#if HYLO_HAVE_CUDA
  // On the GPU: the split-context paged kernel (kernels/gqa_decode), fp32 like the form below and graph-safe; the
  // form below stays the reference its GPU tests compare against and serves every other case (fp64, other head
  // dims, the CPU).
  if (kernels::gqa_decode_paged_supported(q, k_pages, v_pages, page_table, lengths))
    return kernels::gqa_decode_paged_cuda(q, k_pages, v_pages, page_table, lengths, scale, window.value_or(0));
#endif
  return gqa_reference_checked(q, k_pages, v_pages, page_table, lengths, scale, window);
}

at::Tensor gqa_decode_paged_reference(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                      const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                                      std::optional<int64_t> window) {
  check_gqa_operands("gqa_decode_paged_reference", q, k_pages, v_pages, page_table, lengths, window);
  return gqa_reference_checked(q, k_pages, v_pages, page_table, lengths, scale, window);
}

}  // namespace hylo::ops
