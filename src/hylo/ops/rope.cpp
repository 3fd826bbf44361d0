#include "hylo/ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "hylo/core/result.h"
#include "hylo/ops/rope_yarn.h"

namespace hylo::ops {
namespace {

// transformers evaluates `c / t` on tensors as `t.reciprocal() * c` (torch's __rtruediv__); mirrored here so
// the fp32 roundings are the same.
at::Tensor rdiv(double c, const at::Tensor& t) { return at::reciprocal(t) * c; }

// base ** (arange(0, dim, 2) / dim) in fp32: [dim/2]
at::Tensor pos_freqs(double base, int64_t dim) {
  at::Tensor exponent = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) / dim;
  return at::pow(base, exponent);
}

}  // namespace

at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t dim) {
  if (dim <= 0 || dim % 2 != 0) throw Error("rope: rotary dimension must be even and > 0, got " + std::to_string(dim));
  const double base = rope.theta;
  if (!rope.freq_factors.empty()) {
    // llama.cpp (ggml_rope_ext with freq_factors): theta_i = p * base^(-2i/d) / freq_factors[i].
    if (static_cast<int64_t>(rope.freq_factors.size()) * 2 != dim)
      throw Error("rope: " + std::to_string(rope.freq_factors.size()) + " frequency factors for rotary dimension " +
                  std::to_string(dim));
    at::Tensor ff = at::tensor(at::ArrayRef<float>(rope.freq_factors), at::TensorOptions().dtype(at::kFloat));  // [dim/2]
    return rdiv(1.0, pos_freqs(base, dim)) / ff;
  }
  if (rope.type == "default" || rope.type == "linear") {
    at::Tensor inv_freq = rdiv(1.0, pos_freqs(base, dim));  // [dim/2]
    if (rope.type == "linear") inv_freq = inv_freq / rope.factor;
    return inv_freq;
  }
  if (rope.type == "llama3") {
    at::Tensor inv_freq = rdiv(1.0, pos_freqs(base, dim));  // [dim/2]
    const double factor = rope.factor, lo = rope.low_freq_factor, hi = rope.high_freq_factor;
    const double old_context = static_cast<double>(rope.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / lo, high_freq_wavelen = old_context / hi;
    at::Tensor wavelen = rdiv(2 * std::numbers::pi, inv_freq);  // [dim/2]
    at::Tensor llama = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
    at::Tensor smooth = (rdiv(old_context, wavelen) - lo) / (hi - lo);
    at::Tensor smoothed = at::rsub(smooth, 1) * llama / factor + smooth * llama;
    at::Tensor medium = at::logical_not(wavelen < high_freq_wavelen) * at::logical_not(wavelen > low_freq_wavelen);
    return at::where(medium, smoothed, llama);
  }
  if (rope.type == "yarn") {
    const double factor = rope.factor;
    const double orig = static_cast<double>(rope.original_max_position_embeddings);
    at::Tensor pf = pos_freqs(base, dim);                       // [dim/2]
    at::Tensor extrapolation = rdiv(1.0, pf);
    at::Tensor interpolation = rdiv(1.0, pf * factor);
    // Python-float (fp64) arithmetic in transformers too, so sharing the MLA rope's helper changes no bit.
    double low = yarn_correction_dim(rope.beta_fast, dim, base, orig);
    double high = yarn_correction_dim(rope.beta_slow, dim, base, orig);
    if (rope.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // HF: prevent a zero-width ramp
    at::Tensor ramp = at::clamp((at::arange(dim / 2, at::TensorOptions().dtype(at::kFloat)) - low) / (high - low), 0, 1);
    at::Tensor extrapolation_factor = at::rsub(ramp, 1);       // [dim/2]
    return interpolation * at::rsub(extrapolation_factor, 1) + extrapolation * extrapolation_factor;
  }
  throw Error("rope: type '" + rope.type + "' is not supported (supported: default, linear, llama3, yarn)");
}

double rope_attention_scaling(const RopeConfig& rope) {
  if (rope.type != "yarn") return 1.0;
  if (rope.attention_factor) return *rope.attention_factor;
  if (rope.mscale != 0.0 && rope.mscale_all_dim != 0.0)
    return yarn_get_mscale(rope.factor, rope.mscale) / yarn_get_mscale(rope.factor, rope.mscale_all_dim);
  return yarn_get_mscale(rope.factor, 1.0);
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               double attention_scaling, at::ScalarType dtype) {
  at::Tensor freqs = at::outer(positions.to(at::kFloat), inv_freq.to(at::kFloat));  // [T, dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);                                     // [T, dim]
  at::Tensor cos = emb.cos() * attention_scaling;
  at::Tensor sin = emb.sin() * attention_scaling;
  return {cos.to(dtype), sin.to(dtype)};
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;  // cos/sin [T, Dh] broadcast over [B, H]
}

}  // namespace hylo::ops
