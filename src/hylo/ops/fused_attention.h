// Exact causal attention with a cached prefix on CUDA through fused (flash / memory-efficient) kernels, never
// materialising the [T, S] scores or mask: the engine's chunked prefill (T queries at positions
// [q_offset, q_offset + T) over S = q_offset + T keys) and training (q_offset == 0) of GQA and decompressed MLA.
//
// The keys split in two:
//   prefix [0, q_offset):       every query sees all of it, no mask;
//   chunk  [q_offset, S):       plain causal, and since the chunk is T x T, top-left and bottom-right alignment agree.
// Each part runs in a flash kernel that also returns the log-sum-exp of its scaled scores per query row; the two
// partial outputs are merged exactly in fp32: o = (e^{l1-m} o1 + e^{l2-m} o2) / (e^{l1-m} + e^{l2-m}), m = max.
// q_offset == 0 is one causal SDPA call (flash / cuDNN / memory-efficient as ATen picks), which has a backward:
// training goes through it. The merge has no backward through the log-sum-exp, so when autograd needs gradients of
// a q_offset > 0 call the masked SDPA form is used instead (correct, not memory-lean; no caller trains with a cache).
//
// Query head h reads KV head h / (Hq / Hkv) (repeat_kv). Dv may differ from Dqk: the flash kernel needs equal head
// dims that are a multiple of 8, so q/k (and v) are zero-padded to a common width and the output sliced back
// (zero columns of q and k add nothing to the scores; zero columns of v give zero output columns).
// The readable reference is ops::causal_attention_reference (attention.h) and the ATen MLA path (mla.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::ops {

// Whether fused_causal_attention takes these tensors: CUDA, fp16/bf16/fp32 (after autocast), head dims <= 256.
bool fused_causal_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// q: [B, Hq, T, Dqk]; k: [B, Hkv, S, Dqk]; v: [B, Hkv, S, Dv]; Hkv | Hq; S >= q_offset + T (keys past
// q_offset + T are never seen). Query row i at position q_offset + i attends to keys j <= q_offset + i.
// Computes in the autocast dtype when autocast is on for CUDA, else in q's dtype. Returns [B, Hq, T, Dv].
at::Tensor fused_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                  int64_t q_offset);

}  // namespace hylo::ops
