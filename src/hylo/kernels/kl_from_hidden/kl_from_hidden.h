// Logit-free distillation KL on the GPU: the per-token forward KL(p_t || p_s) between the teacher's and the
// student's next-token distributions, p = softmax(h W^T / tau), computed from the two final hidden states and the
// two LM heads without ever holding the [N, V] logits: the vocabulary is walked in tiles (cuBLAS GEMMs into one
// [N, V_tile] fp32 tile at a time), and small CUDA kernels keep online-softmax statistics per token
// (kl_softmax_stats.h). The backward recomputes each tile's logits from the saved log-sum-exps and forms
// d logits_s = grad_n (p_s - p_t) / tau one tile at a time (docs/kernels.md).
//
// Declared only in CUDA builds (HYLO_HAVE_CUDA). The training loss is the caller's reduction of the per-token
// values (kl_from_hidden_weighted_sum below: sum_n weights_n KL_n); tau^2 scaling, if wanted, is the caller's too.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::kernels {

// hs: [N, Ds] student final hidden (bf16, fp16 or fp32), ht: [N, Dt] teacher final hidden, ws: [V, Ds] student
// LM head, wt: [V, Dt] teacher LM head (each head in its hidden's dtype), all on one GPU. Returns [N] fp32,
// KL_n = sum_v p_t,nv (log p_t,nv - log p_s,nv). Differentiable (autograd) with respect to hs and ws; the teacher
// operands are constants (they are detached). vocab_tile: 0 picks one so an fp32 tile holds <= 32M values.
at::Tensor kl_from_hidden(const at::Tensor& hs, const at::Tensor& ht, const at::Tensor& ws, const at::Tensor& wt,
                          double tau, int64_t vocab_tile = 0);

// sum_n weights_n KL_n as a 0-dim fp32 tensor (weights: [N], e.g. the target mask over the token count);
// differentiable like kl_from_hidden.
at::Tensor kl_from_hidden_weighted_sum(const at::Tensor& hs, const at::Tensor& ht, const at::Tensor& ws,
                                       const at::Tensor& wt, double tau, const at::Tensor& weights,
                                       int64_t vocab_tile = 0);

}  // namespace hylo::kernels
