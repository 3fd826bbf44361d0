// The device memory one engine step needs beside the pools (activations of max_step_tokens packed tokens), kept
// out of the pool budget when it is derived from the device (EngineOptions::activation_reserve_bytes == 0).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "hylo/config/model_config.h"

namespace hylo::engine {

// The widest output of one token mixer's input projections (per token, elements):
//   gqa: (H + 2*Hkv) * Dh;  mla: q (H * (nope + rope)) + kv_a (Rkv + Dr) + kv_b (H * (nope + v)) + k_pe (H * Dr);
//   gdn: 2*key_dim + 2*value_dim + 2*H (q, k, v, g, a, b);  mamba2: 2*d_inner + 2*d_xb + H (in_proj).
int64_t mixer_projection_width(const LayerSpec& layer);

// reserve = T * (e * (4*D + 3*I + 2*W) + 8*V) bytes, with T = max_step_tokens, e the model dtype's size, D the
// hidden size, I the largest MLP width, W the largest mixer_projection_width and V the vocabulary:
//   4*D  the block input, the normalised input, the mixer output and the block output of every packed token;
//   3*I  the SwiGLU gate, up and their product;
//   2*W  a mixer's projection output and one derived tensor of the same width (conv output, split heads);
//   8*V  fp32 logits and one fp32 temporary (log-softmax) for every token: prompt_logprobs and keep_logits need
//        the logits of every prompt row, so a step may compute T rows.
// Attention score workspace is not counted: it depends on the attention implementation and on context lengths;
// a deployment whose attention materialises scores passes activation_reserve_bytes explicitly.
int64_t derived_activation_reserve_bytes(const ModelConfig& config, at::ScalarType model_dtype,
                                         int64_t max_step_tokens);

}  // namespace hylo::engine
