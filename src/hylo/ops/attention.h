// Causal grouped-query softmax attention (GQA; MHA when Hkv == Hq, MQA when Hkv == 1), with a query position
// offset for KV-cached prefill chunks and decode, and an optional sliding window (Mistral/Qwen2).
//
// Query row i sits at absolute position q_offset + i; key column j at absolute position j. Row i attends to
// column j when j <= q_offset + i and, with a window W, j > q_offset + i - W (transformers'
// sliding_window_overlay). Query head h reads KV head h / (Hq / Hkv) (transformers' repeat_kv).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace hylo::ops {

// The readable reference: explicit q k^T, mask, softmax and p v, all in fp32, cast back to q's dtype.
// q: [B, Hq, T, Dh]; k, v: [B, Hkv, S, Dh] with S >= q_offset + T. Returns [B, Hq, T, Dh].
at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                      int64_t q_offset = 0, std::optional<int64_t> window = std::nullopt);

// Same contract. On CUDA tensors (fp16/bf16/fp32) without a window that cuts the keys: fused_causal_attention
// (fused_attention.h: causal SDPA for q_offset == 0, else flash over the cached prefix and the causal chunk merged
// by log-sum-exp; no [T, S] mask). A cutting window: masked SDPA over the keys some row can see, a mask of
// [T, T + W - 1] at most. Elsewhere: the reference.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            int64_t q_offset = 0, std::optional<int64_t> window = std::nullopt);

// The boolean mask [T, S] (true = attend) of the rule above, on `device`.
at::Tensor causal_mask(int64_t t, int64_t s, int64_t q_offset, std::optional<int64_t> window, at::Device device);

}  // namespace hylo::ops
