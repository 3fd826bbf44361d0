// Multi-head latent attention over a latent cache (HYLO.md 2.2, ENGINE-NOTES.md 6.1), in its two forms:
//
//   decompressed: per KV group g, k_g = [W_UK,g c_t ; k_pe,t] and v_g = W_UV,g c_t are built for every key token,
//                 and each head h (group h / (H/G), as repeat_kv) attends with q_h = [q_nope,h ; q_pe,h].
//                 Used for training and prefill.
//   absorbed:     q~_h = W_UK,g^T q_nope,h moves the query into latent space; scores = q~_h . c_t + q_pe,h . k_pe,t
//                 over the cached [c ; k_pe] directly; ctx_h = sum_t p_t c_t; out_h = W_UV,g ctx_h. Used for decode.
//
// Both compute softmax((q.k) * scale + causal) v with the softmax in fp32 (fp64 for fp64 inputs); they are the
// same function of their inputs and differ only in rounding. W_kvb is kv_b_proj.weight [G*(Dn+Dv), Rkv], whose rows
// are, per group g, Dn rows of W_UK,g followed by Dv rows of W_UV,g (DeepSeek / Zebra layout). Dv may differ from
// Dn+Dr: ATen's matmul needs no zero-padding of v (flash-attn does; that belongs in a kernel, not here).
//
// Shapes (docs/architecture.md glossary): B batch, T query tokens, S key tokens (cache + new), H heads, G kv
// groups (H % G == 0), Dn nope dim, Dr rope dim, Dv value dim, Rkv kv_lora_rank. Query t attends to keys
// s <= q_offset + t (q_offset = tokens already in the cache before these queries; 0 for a stateless forward).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::ops {

// W_UK [G, Dn, Rkv] and W_UV [G, Dv, Rkv] views of kv_b_proj.weight [G*(Dn+Dv), Rkv].
struct MlaUpProjections {
  at::Tensor w_uk;  // [G, Dn, Rkv]
  at::Tensor w_uv;  // [G, Dv, Rkv]
};
MlaUpProjections mla_split_kv_b(const at::Tensor& kv_b_weight, int64_t num_kv_groups, int64_t nope_dim);

// q_nope: [B, T, H, Dn]; q_pe: [B, T, H, Dr] (rotated); c_kv: [B, S, Rkv]; k_pe: [B, S, Dr] (rotated);
// kv_b_weight: [G*(Dn+Dv), Rkv]. Returns [B, T, H, Dv] in q's dtype.
// On CUDA (fp16/bf16/fp32, head dims <= 256): k = [W_UK c ; k_pe] and v = W_UV c are decompressed per group and
// ops::fused_causal_attention (fused_attention.h) attends over them: flash kernels, no T x S scores, autograd
// for q_offset == 0 (training). Elsewhere (the reference): query rows are processed in blocks whose scores
// [B, H, t, s] hold at most `max_score_elements` values (0: 2^26, 256 MiB in fp32), so a long prefill does not
// materialise all T x S scores at once; blocking changes no value.
at::Tensor mla_attention_decompressed(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& c_kv,
                                      const at::Tensor& k_pe, const at::Tensor& kv_b_weight,
                                      int64_t num_kv_groups, double scale, int64_t q_offset,
                                      int64_t max_score_elements = 0);

// Same arguments and result as mla_attention_decompressed, computed in latent space.
at::Tensor mla_attention_absorbed(const at::Tensor& q_nope, const at::Tensor& q_pe, const at::Tensor& c_kv,
                                  const at::Tensor& k_pe, const at::Tensor& kv_b_weight, int64_t num_kv_groups,
                                  double scale, int64_t q_offset, int64_t max_score_elements = 0);

}  // namespace hylo::ops
