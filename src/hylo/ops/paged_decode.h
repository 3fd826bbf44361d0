// Decode attention over a paged cache (the engine's pools, infer/engine/cache_pool.h): S sequences, one query
// token each, different lengths, whose cached tokens sit in fixed-size pages named by a page table. These are the
// readable references; GPU kernels taking the same operands go beside them (kernels/mla_decode) and are tested
// against them.
//
// Paging: pages [P, page_size, ...]; page_table [S, max_pages] int32, row s = sequence s's page ids in order
// (padded with any valid id); lengths [S] int32, tokens of sequence s to attend over. Token t of sequence s is row
// t % page_size of page page_table[s, t / page_size]. Rows past a sequence's length are never read into a result
// (they are zeroed before use, so garbage there, even NaN, does not leak); a sequence of length 0 gets output 0.
// The query token of sequence s sits at position lengths[s] - 1 and its own key is already in the pages.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace hylo::ops {

// Each sequence's token rows, in order: pages [P, page_size, ...], page_table [S, max_pages] int32 ->
// [S, max_pages * page_size, ...] (a copy; rows past a sequence's length hold whatever its padding pages hold).
at::Tensor gather_paged_rows(const at::Tensor& pages, const at::Tensor& page_table);

// The absorbed MLA attention core over a paged latent cache (what kernels::mla_latent_decode computes for a
// contiguous cache): q_lat [S, H, Rkv] (absorbed nope queries, q~ = W_UK^T q_nope); q_pe [S, H, Dr] rotated;
// pages [P, page_size, Rkv+Dr] holding [c_kv ; rotated k_pe] per token. Returns ctx [S, H, Rkv] in q_lat's dtype:
// ctx_h = sum_t softmax_t((q~_h . c_t + q_pe,h . k_pe,t) * scale) c_t, the softmax in fp32 (fp64 for fp64).
at::Tensor mla_latent_decode_paged_reference(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& pages,
                                             const at::Tensor& page_table, const at::Tensor& lengths, double scale);

// Absorbed MLA decode for S sequences at once: exactly ops::mla_attention_absorbed (ops/mla.h) of each sequence's
// one query over its first lengths[s] cached tokens. q_nope [S, H, Dn]; q_pe [S, H, Dr] rotated; pages
// [P, page_size, Rkv+Dr]; page_table [S, max_pages] int32; lengths [S] int32; kv_b_weight [G*(Dn+Dv), Rkv].
// Returns [S, H, Dv] in q's dtype. W_UK is applied before the latent core and W_UV after it, so a kernel for the
// core slots in between (the bf16 CUDA route belongs in this function).
at::Tensor mla_decode_paged(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& pages,
                            const at::Tensor& page_table, const at::Tensor& lengths, const at::Tensor& kv_b_weight,
                            int64_t num_kv_groups, double scale);

// Grouped-query decode for S sequences at once over a paged KV cache: q [S, Hq, Dh] (RoPE applied);
// k_pages, v_pages [P, page_size, Hkv, Dh] (k after RoPE); page_table [S, max_pages] int32; lengths [S] int32.
// Query head h reads KV head h / (Hq / Hkv); with a window W only the last W tokens [len - W, len) are attended
// (ops/attention.h's rule for the query at position len - 1). Scores, softmax and p v in fp32 (fp64 for fp64).
// Returns [S, Hq, Dh] in q's dtype. In CUDA builds, GPU operands that kernels::gqa_decode_paged_supported takes
// run the split-context kernel (kernels/gqa_decode) instead of this ATen form.
at::Tensor gqa_decode_paged(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                            const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                            std::optional<int64_t> window = std::nullopt);

// The ATen form of gqa_decode_paged on any device and dtype (the reference its CUDA kernel is tested against).
at::Tensor gqa_decode_paged_reference(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                      const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                                      std::optional<int64_t> window = std::nullopt);

}  // namespace hylo::ops
