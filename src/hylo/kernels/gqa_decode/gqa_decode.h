// Grouped-query decode over the engine's paged KV cache on the GPU (flash-decoding): S sequences, one query token
// each, attend over their own cached keys and values, which sit in fixed-size pages named by a page table
// (infer/engine/cache_pool.h). It computes exactly what ops::gqa_decode_paged's ATen form computes
// (ops/paged_decode.h), in fp32:
//
//   out[s, h, :] = sum_t softmax_t(scale * q[s, h] . k[s, t, h / rep]) v[s, t, h / rep],   t in [lo, len_s)
//
// with rep = Hq / Hkv and lo = max(0, len_s - window) (0 without a window). The context of each sequence is split
// over several CTAs (each a slice of its tokens, writing a normalised partial output and a base-2 log-sum-exp), and
// a combine kernel merges the slices by log-sum-exp, so one long sequence fills the GPU and a large batch of short
// ones runs at one CTA per (sequence, KV head). One CTA reads each K/V row once for all query heads of its group (up
// to 8 heads per CTA; larger groups take several CTAs). The products run on the CUDA cores in fp32: decode reads
// every cached byte once per step and does rep multiply-adds per element, far below the fp32 rate (docs/kernels.md).
//
// Declared only in CUDA builds (HYLO_HAVE_CUDA); ops::gqa_decode_paged routes CUDA operands this supports here and
// keeps the ATen form as the reference and for every other case.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::kernels {

// Whether gqa_decode_paged_cuda takes these operands: q [S, Hq, D] fp32/bf16/fp16 on a GPU with D 64 or 128 and
// 0 < S < 65536; k_pages, v_pages [P, page_size, Hkv, D] of one dtype (fp32, bf16 or fp16), same sizes and strides,
// rows contiguous (stride(3) == 1, stride(2) == D, stride(1) == Hkv * D), page stride a multiple of 8 elements,
// 16-byte aligned; Hq a multiple of Hkv; page_table int32 [S, max_pages] with a contiguous last dim (any row stride);
// lengths int32 [S]; all on q's GPU; max_pages * page_size < 2^31.
bool gqa_decode_paged_supported(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                const at::Tensor& page_table, const at::Tensor& lengths);

// The attention above. Token t of sequence s is row t % page_size of page page_table[s, t / page_size]; sequence s
// attends over tokens [max(0, len - window), len) with len = lengths[s] clamped to [0, max_pages * page_size]
// (window <= 0: no window); length 0 gives output 0. Only the table entries covering those tokens are read, and they
// must be page ids in [0, P); rows past a length are never read. Returns [S, Hq, D] in q's dtype.
//
// CUDA-graph safe: no host sync and no host reads of lengths or the table; the fp32 partials come from the caching
// allocator (a graph's private pool during capture). The launch shape depends only on the shapes and the table's
// capacity, never on the lengths: num_splits > 0 fixes the splits per sequence (tests), 0 chooses about one wave of
// CTAs over the GPU, each split at least 256 tokens of the capacity. Each sequence's length is spread over the splits
// on the device; splits past its end write an empty partial (LSE -inf) that the combine skips.
at::Tensor gqa_decode_paged_cuda(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                 const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                                 int64_t window = 0, int64_t num_splits = 0);

}  // namespace hylo::kernels
