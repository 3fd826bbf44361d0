// Rotary position embedding (RoPE) as Hugging Face computes it: inverse frequencies for the rope types
// default, linear, llama3 and yarn (same fp32 operation order as transformers' modeling_rope_utils, so the
// tables agree bit for bit on CPU), the cos/sin tables with the attention factor folded in (yarn), and the
// rotate_half application (pairs (i, i + Dh/2), the HF/Llama layout).
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "hylo/config/model_config.h"

namespace hylo::ops {

// The inverse frequencies for a rotary dimension `dim` (even): [dim/2] fp32 on CPU.
at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t dim);

// The factor transformers multiplies cos and sin by: 1 except for yarn (attention_factor, or
// get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim), or 0.1 ln(factor) + 1).
double rope_attention_scaling(const RopeConfig& rope);

// inv_freq: [dim/2] fp32 (any device); positions: [T] int64 on the same device.
// Returns {cos, sin}, each [T, dim] in `dtype`, already multiplied by `attention_scaling`.
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               double attention_scaling, at::ScalarType dtype);

// x: [..., Dh] -> [..., Dh]: cat(-x[..., Dh/2:], x[..., :Dh/2]).
at::Tensor rotate_half(const at::Tensor& x);

// x: [B, H, T, Dh]; cos, sin: [T, Dh]. Returns x * cos + rotate_half(x) * sin, [B, H, T, Dh].
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace hylo::ops
