// Absorbed MLA decode on the GPU (sm_90a): one query token per sequence attends, for all H heads at once, over the
// sequence's cached latent [c_kv ; rope(k_pe)] (HYLO.md 2.2, ENGINE-NOTES.md 6.1). Since every head reads the same
// latent rows (MQA over the latent), one CTA loads each latent tile once into shared memory for up to 64 heads and
// runs the two products on tensor cores (mma.sync bf16, fp32 accumulate):
//
//   scores[h, t] = (q~_h . c_t + q_pe,h . k_pe,t) * scale        (online softmax over t, fp32)
//   ctx[h, :]    = sum_t softmax(scores[h, :])_t c_t
//
// The context is split (split-KV) so that one long sequence fills every SM; each split writes its normalised
// partial ctx and its log-sum-exp, and a combine kernel merges the splits by log-sum-exp. The caller applies W_UK
// before (q~ = W_UK^T q_nope) and W_UV / W_o after, as ops::mla_attention_absorbed does (docs/kernels.md).
//
// Both cache layouts run the same split kernel (a template over a row-address functor): the contiguous
// [B, S_cap, Rkv+Dr] cache of the mixer's own state, and the engine's paged cache (infer/engine/cache_pool.h). The
// launch shape depends only on the widths, heads, batch and the cache's capacity; each split finds its token range
// from the sequence's length on the device, so one launch serves any lengths and can be captured in a CUDA graph.
//
// Declared only in CUDA builds (HYLO_HAVE_CUDA); ops/mla.cpp calls it for bf16 CUDA decode and keeps the ATen form
// as the reference and for every other case.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::kernels {

// Whether mla_latent_decode takes these operands: bf16 CUDA tensors, latent width Rkv a multiple of 64 in
// [64, 512], rope width Dr a multiple of 16 in [16, 128], rows 16-byte aligned with a contiguous last dimension.
bool mla_latent_decode_supported(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& c_kv,
                                 const at::Tensor& k_pe);

// q_lat: [B, H, Rkv] bf16 (absorbed nope queries); q_pe: [B, H, Dr] bf16 (rotated rope queries);
// c_kv: [B, S, Rkv] bf16 and k_pe: [B, S, Dr] bf16, any row and batch strides with a contiguous last dimension
// (e.g. the two column ranges of one [B, S_cap, Rkv+Dr] cache); lengths: [B] int32 on the GPU, tokens of each
// sequence to attend over (<= S), or undefined for S everywhere. A sequence of length 0 gets ctx 0.
// num_splits: 0 chooses so that B * head blocks * splits fills the GPU once (each sequence's length is spread
// over the splits on the device, as for the paged form below). out: [B, H, Rkv] bf16 contiguous to
// write into, or undefined for a new tensor. Returns ctx [B, H, Rkv] bf16.
at::Tensor mla_latent_decode(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& c_kv,
                             const at::Tensor& k_pe, const at::Tensor& lengths, double scale,
                             int64_t num_splits = 0, const at::Tensor& out = at::Tensor());

// Whether mla_latent_decode_paged takes these operands: the queries as for mla_latent_decode; pages bf16
// [P, page_size, Rkv+Dr] on the same GPU with contiguous rows (stride(1) == Rkv+Dr, stride(2) == 1), page stride
// a multiple of 8 elements, 16-byte aligned; page_table int32 [S, max_pages] with a contiguous last dim (any row
// stride: a column range of a wider table works); lengths int32 [S]. Every page size >= 1 is supported (the kernel
// reads the page table per row, so pages need not hold whole key tiles); max_pages * page_size < 2^31.
bool mla_latent_decode_paged_supported(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& pages,
                                       const at::Tensor& page_table, const at::Tensor& lengths);

// The same attention as mla_latent_decode for S sequences whose latents live in pages: token t of sequence i is
// row t % page_size of page page_table[i, t / page_size] (latent c_kv in columns [0, Rkv), rotated k_pe in
// [Rkv, Rkv+Dr)). Sequence i attends over its first lengths[i] tokens (clamped to [0, max_pages * page_size]);
// length 0 gives ctx 0. Only the entries [0, ceil(lengths[i] / page_size)) of a table row are read, and they must
// be page ids in [0, P). q_lat: [S, H, Rkv] bf16; q_pe: [S, H, Dr] bf16. Returns ctx [S, H, Rkv] bf16 (into out
// when given: contiguous bf16 [S, H, Rkv]).
//
// CUDA-graph safe: no host sync, no host reads of lengths or the table; the fp32 partials come from the caching
// allocator (a graph's private pool during capture). num_splits > 0 fixes the number of context splits per
// sequence; 0 chooses one wave of CTAs over the GPU, at most one split per key tile of the table's capacity
// (max_pages * page_size), never from the lengths. A sequence's length is spread over all splits, so each replay
// uses the whole GPU whatever the lengths; splits past its end (short sequences) write an empty partial (LSE
// -inf) that the combine skips.
at::Tensor mla_latent_decode_paged(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& pages,
                                   const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                                   int64_t num_splits = 0, const at::Tensor& out = at::Tensor());

// Benchmarks only (bench/mla_decode_bench --tuning): forces the key tile (32, 64 or 128 tokens, capped by the
// width's largest) and the heads per CTA (16 x head_tiles, 1-4) of later launches of both forms, where a ring of two
// tiles fits; 0 (or an unsupported value) restores the automatic choice. Process-wide.
void set_mla_decode_tuning(int tile_tokens, int head_tiles);

}  // namespace hylo::kernels
