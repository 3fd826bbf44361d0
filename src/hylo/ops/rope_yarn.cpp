#include "hylo/ops/rope_yarn.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/rope.h"

namespace hylo::ops {
namespace {

bool is_yarn(const RopeConfig& rope) {
  if (rope.type == "yarn") return true;
  if (rope.type == "default") return false;
  throw Error("MLA rope: rope type '" + rope.type + "' is not supported on the MLA rope slice (expected "
              "\"default\" or \"yarn\", as in DeepSeek-V3 / Zebra-Llama)");
}

}  // namespace

double yarn_correction_dim(double num_rotations, int64_t dim, double base, double original_max_pos) {
  return (static_cast<double>(dim) * std::log(original_max_pos / (num_rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

double yarn_get_mscale(double factor, double mscale) {
  if (factor <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(factor) + 1.0;
}

double mla_rope_cos_sin_scale(const RopeConfig& rope) {
  if (!is_yarn(rope)) return 1.0;
  if (rope.attention_factor) return *rope.attention_factor;
  return yarn_get_mscale(rope.factor, rope.mscale) / yarn_get_mscale(rope.factor, rope.mscale_all_dim);
}

double mla_softmax_scale(const MlaSpec& spec) {
  double scale = 1.0 / std::sqrt(static_cast<double>(spec.q_head_dim()));
  if (is_yarn(spec.rope) && spec.rope.mscale_all_dim != 0.0) {
    double m = yarn_get_mscale(spec.rope.factor, spec.rope.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

at::Tensor mla_rope_inv_freq(const RopeConfig& rope, int64_t rope_dim) {
  if (rope_dim <= 0 || rope_dim % 2 != 0)
    throw Error("MLA rope: qk_rope_head_dim must be positive and even, got " + std::to_string(rope_dim));
  if (!(rope.theta > 1.0)) throw Error("MLA rope: rope_theta must be > 1, got " + std::to_string(rope.theta));
  const int64_t half = rope_dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / static_cast<double>(rope_dim));
  if (is_yarn(rope) && rope.factor != 1.0) {
    if (!(rope.factor > 0.0))
      throw Error("MLA rope: yarn factor must be > 0, got " + std::to_string(rope.factor));
    if (rope.original_max_position_embeddings <= 0)
      throw Error("MLA rope: yarn needs original_max_position_embeddings > 0 (rope_scaling field), got " +
                  std::to_string(rope.original_max_position_embeddings));
    const double orig = static_cast<double>(rope.original_max_position_embeddings);
    double low = yarn_correction_dim(rope.beta_fast, rope_dim, rope.theta, orig);
    double high = yarn_correction_dim(rope.beta_slow, rope_dim, rope.theta, orig);
    if (rope.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(rope_dim - 1));
    if (low == high) high += 0.001;  // DeepSeek: avoid a zero-width ramp
    for (int64_t i = 0; i < half; ++i) {
      double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      double extrapolation_weight = 1.0 - ramp;  // DeepSeek's inv_freq_mask
      inv[i] = inv[i] / rope.factor * (1.0 - extrapolation_weight) + inv[i] * extrapolation_weight;
    }
  }
  return at::tensor(inv, at::TensorOptions().dtype(at::kDouble));
}

RotaryTables mla_rope_tables(const RopeConfig& rope, int64_t rope_dim, const at::Tensor& positions,
                             at::ScalarType dtype, at::Device device) {
  at::Tensor inv = mla_rope_inv_freq(rope, rope_dim).to(positions.device());        // [Dr/2] fp64
  return mla_rope_tables(inv, mla_rope_cos_sin_scale(rope), positions, dtype, device);
}

RotaryTables mla_rope_tables(const at::Tensor& inv_freq, double scale, const at::Tensor& positions,
                             at::ScalarType dtype, at::Device device) {
  if (positions.dim() != 1)
    throw Error("MLA rope: positions must be 1-D [T], got " + std::to_string(positions.dim()) + " dims");
  // fp64 on the positions' device: no host round trip, so a decode step can be captured in a CUDA graph.
  at::Tensor pos = positions.to(at::kDouble);                                       // [T] fp64
  at::Tensor freqs = pos.unsqueeze(1) * inv_freq.to(pos.device()).unsqueeze(0);     // [T, Dr/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);                                     // [T, Dr]
  RotaryTables t;
  t.cos = (emb.cos() * scale).to(device, dtype);                                    // [T, Dr]
  t.sin = (emb.sin() * scale).to(device, dtype);                                    // [T, Dr]
  return t;
}

at::Tensor deepseek_pair_permute(const at::Tensor& x) {
  const int64_t d = x.size(-1);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = d / 2;
  shape.push_back(2);
  at::Tensor pairs = x.reshape(shape);                                              // [..., Dr/2, 2]
  std::vector<int64_t> out_shape = x.sizes().vec();
  return pairs.transpose(-1, -2).reshape(out_shape);                                // [..., Dr] evens then odds
}

at::Tensor apply_mla_rope(const at::Tensor& x, const RotaryTables& tables, RopePairOrder order) {
  if (x.dim() != 4 || x.size(1) != tables.cos.size(0) || x.size(3) != tables.cos.size(1))
    throw Error("MLA rope: expected x [B, T, N, Dr] matching tables [T, Dr] = [" +
                std::to_string(tables.cos.size(0)) + ", " + std::to_string(tables.cos.size(1)) + "], got " +
                c10::str(x.sizes()));
  at::Tensor v = order == RopePairOrder::kDeepSeekPairs ? deepseek_pair_permute(x) : x;  // [B, T, H, Dr]
  at::Tensor cos = tables.cos.to(v.scalar_type()).unsqueeze(0).unsqueeze(2);        // [1, T, 1, Dr]
  at::Tensor sin = tables.sin.to(v.scalar_type()).unsqueeze(0).unsqueeze(2);        // [1, T, 1, Dr]
  return v * cos + rotate_half(v) * sin;
}

}  // namespace hylo::ops
