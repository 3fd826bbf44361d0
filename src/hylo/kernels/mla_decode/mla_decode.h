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
// num_splits: 0 chooses so that B * head blocks * splits fills the GPU once. out: [B, H, Rkv] bf16 contiguous to
// write into, or undefined for a new tensor. Returns ctx [B, H, Rkv] bf16.
at::Tensor mla_latent_decode(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& c_kv,
                             const at::Tensor& k_pe, const at::Tensor& lengths, double scale,
                             int64_t num_splits = 0, const at::Tensor& out = at::Tensor());

}  // namespace hylo::kernels
