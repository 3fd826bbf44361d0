// The rotary embedding of the MLA rope slice (HYLO.md 2.3): DeepSeek-V3's YaRN frequencies and cos/sin scale,
// and the DeepSeek pair order. Only the qk_rope_head_dim slice of each query head and the one shared k_pe are
// rotated; the nope slice carries no position.
//
// Frequencies (DeepSeek-V3 `DeepseekV3YarnRotaryEmbedding`, = transformers' `_compute_yarn_parameters`):
//   theta_i = base^(-2i/d), i < d/2;   interpolated theta_i / factor, extrapolated theta_i;
//   correction dims low/high from beta_fast/beta_slow over original_max_position_embeddings
//     (d * ln(L / (2 pi beta)) / (2 ln base), floored/ceiled when `truncate`, clamped to [0, d-1]);
//   ramp_i = clamp((i - low) / (high - low), 0, 1);  inv_freq_i = theta_i/factor * ramp_i + theta_i * (1 - ramp_i).
// cos/sin are multiplied by mscale(factor, mscale) / mscale(factor, mscale_all_dim), mscale(f, m) = 0.1 m ln f + 1
// for f > 1 (else 1), unless `attention_factor` overrides it. Factor 1 or type "default" is plain RoPE.
//
// Pair order. DeepSeek checkpoints store each rope vector as adjacent pairs (x0,x1),(x2,x3),.. each rotated by one
// frequency. Zebra/HyLo (and DeepSeek's HF code) first permute x -> [x0,x2,..,x_{d-2}, x1,x3,..,x_{d-1}]
// (view(d/2,2).transpose.reshape) and then apply the half-split rotation x*cos + rotate_half(x)*sin; the result
// stays in the permuted layout. transformers' DeepseekV3 with rope_interleave=True computes exactly this;
// rope_interleave=False is the plain half-split rotation without the permutation (kHalfSplit here).
//
// Why not ops/rope.h's tables: those reproduce transformers' fp32 arithmetic bit for bit (right for the GQA
// teacher). Here inv_freq and the angles are fp64 -- at the 64K-2M positions HyLo serves, an fp32 angle
// pos * inv_freq is off by up to pos * 2^-24 rad (0.06 rad at 1M) -- and the cos/sin scale follows DeepSeek's
// mscale(f, mscale) / mscale(f, mscale_all_dim), which differs from HF's when mscale_all_dim is 0 and mscale != 1.
// The rotation itself is ops/rope.h's rotate_half.
#pragma once

#include <ATen/ATen.h>

#include "hylo/config/model_config.h"

namespace hylo::ops {

enum class RopePairOrder {
  kDeepSeekPairs,  // permute adjacent pairs to halves, then rotate_half (Zebra / HyLo / DeepSeek; the default)
  kHalfSplit,      // rotate_half on the vector as stored (Llama-style; transformers rope_interleave=False)
};

// DeepSeek's yarn_get_mscale: 1 for factor <= 1, else 0.1 * mscale * ln(factor) + 1.
double yarn_get_mscale(double factor, double mscale);

// DeepSeek's yarn_find_correction_dim (= transformers' find_correction_dim): the (fractional) dimension index whose
// wavelength completes `num_rotations` turns over `original_max_pos` positions, in fp64 as both compute it.
double yarn_correction_dim(double num_rotations, int64_t dim, double base, double original_max_pos);

// The factor cos and sin are multiplied by (1 for "default" rope).
double mla_rope_cos_sin_scale(const RopeConfig& rope);

// Softmax scale of MLA attention: q_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2 when the rope is YaRN
// with a non-zero mscale_all_dim (DeepSeek-V3 proper; Zebra/HyLo have mscale_all_dim = 0, so plain).
double mla_softmax_scale(const MlaSpec& spec);

// Inverse frequencies [Dr/2] fp64 of the rope slice of width rope_dim (even). Throws hylo::Error for rope types
// other than "default" and "yarn" or for inconsistent YaRN fields.
at::Tensor mla_rope_inv_freq(const RopeConfig& rope, int64_t rope_dim);

// cos and sin tables, each [T, Dr] in `dtype` on `device`, laid out as cat(freqs, freqs) and already scaled by
// mla_rope_cos_sin_scale. Angles are computed in fp64 from the integer positions, then cast.
struct RotaryTables {
  at::Tensor cos;  // [T, Dr]
  at::Tensor sin;  // [T, Dr]
};
RotaryTables mla_rope_tables(const RopeConfig& rope, int64_t rope_dim, const at::Tensor& positions,
                             at::ScalarType dtype, at::Device device);
// The same from precomputed mla_rope_inv_freq (on the positions' device) and mla_rope_cos_sin_scale: what a mixer
// calls every step, with no host tensor involved (CUDA-graph safe).
RotaryTables mla_rope_tables(const at::Tensor& inv_freq, double scale, const at::Tensor& positions,
                             at::ScalarType dtype, at::Device device);

// (x0,x1,x2,x3,..) -> (x0,x2,..,x1,x3,..) on the last dim. x: [..., Dr]; returns [..., Dr].
at::Tensor deepseek_pair_permute(const at::Tensor& x);

// Rotates x: [B, T, H, Dr] (H = 1 for the shared k_pe) with tables of T rows. Returns [B, T, H, Dr] in the
// layout of `order` (permuted for kDeepSeekPairs), in x's dtype.
at::Tensor apply_mla_rope(const at::Tensor& x, const RotaryTables& tables, RopePairOrder order);

}  // namespace hylo::ops
