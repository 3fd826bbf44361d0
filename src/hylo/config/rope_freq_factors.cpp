#include "hylo/config/rope_freq_factors.h"

#include <cmath>
#include <cstdio>
#include <numbers>

namespace hylo {

std::vector<double> llama3_freq_factors(const RopeConfig& rope, int64_t dim) {
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_wavelen = old_context / rope.low_freq_factor, high_wavelen = old_context / rope.high_freq_factor;
  std::vector<double> out;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double freq = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / static_cast<double>(dim));
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0);
    } else if (wavelen > low_wavelen) {
      out.push_back(rope.factor);
    } else {
      const double s = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
      out.push_back(1.0 / ((1.0 - s) / rope.factor + s));
    }
  }
  return out;
}

Result<RopeConfig> rope_from_freq_factors(const std::vector<float>& factors, double theta, int64_t dim,
                                          const std::string& what) {
  const int64_t n = static_cast<int64_t>(factors.size());
  if (dim <= 0 || n * 2 != dim)
    return make_error(what + ": " + std::to_string(n) + " factors, expected one per RoPE frequency (" +
                      std::to_string(dim / 2) + " for rotary dimension " + std::to_string(dim) + ")");
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(factors[i]) || factors[i] < 1.0f)
      return make_error(what + "[" + std::to_string(i) + "] = " + std::to_string(factors[i]) +
                        ": llama3 frequency factors are finite and >= 1");
  const double factor = factors[n - 1];  // the slowest frequency is always fully scaled
  // The interpolated band: 1 / rf = (1 - s) / factor + s  =>  s = (1 / rf - 1 / factor) / (1 - 1 / factor).
  std::vector<double> xs, ss;  // frequency / 2pi, s
  const double tol = 1e-6;     // fp32 storage of the factors
  for (int64_t i = 0; i < n; ++i) {
    const double rf = factors[i];
    if (std::abs(rf - 1.0) <= tol || std::abs(rf - factor) <= tol * factor) continue;
    const double freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(dim));
    xs.push_back(freq / (2 * std::numbers::pi));
    ss.push_back((1.0 / rf - 1.0 / factor) / (1.0 - 1.0 / factor));
  }
  // s = old_context * x - low) / (high - low) = a x + b. With low = 1: high = 1 - 1 / b, old_context = a (high - 1).
  double a = 0, b = -1.0 / 3.0;  // b = -1/3 is low 1, high 4: every Llama-3.x release
  if (xs.size() >= 2) {
    double mx = 0, ms = 0, sxx = 0, sxs = 0;
    for (size_t k = 0; k < xs.size(); ++k) mx += xs[k], ms += ss[k];
    mx /= xs.size(), ms /= xs.size();
    for (size_t k = 0; k < xs.size(); ++k) sxx += (xs[k] - mx) * (xs[k] - mx), sxs += (xs[k] - mx) * (ss[k] - ms);
    a = sxs / sxx;
    b = ms - a * mx;
  } else if (xs.size() == 1) {
    a = (ss[0] - b) / xs[0];
  } else {
    // No interpolated frequency: any boundary between the last unscaled and the first scaled one fits; take the
    // geometric middle of the old-context range they allow (low 1, high 4).
    double wl_one = 0, wl_scaled = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double wl = 2 * std::numbers::pi * std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(dim));
      if (std::abs(factors[i] - 1.0) <= tol) wl_one = wl;
      else if (wl_scaled == 0) wl_scaled = wl;
    }
    const double lo = 4 * wl_one, hi = wl_scaled > 0 ? wl_scaled : 8 * lo;
    a = std::sqrt(std::max(lo, 1.0) * std::max(hi, 1.0)) / 3.0;  // old_context = a (high - 1) = 3 a
  }
  RopeConfig rope;
  rope.theta = theta;
  rope.type = "llama3";
  rope.factor = factor;
  rope.low_freq_factor = 1.0;
  rope.high_freq_factor = (b < 0 && std::isfinite(b)) ? 1.0 - 1.0 / b : 4.0;
  const double old_context = a * (rope.high_freq_factor - 1.0);
  // Released configs hold an integer original context; round to it when that still reproduces the factors.
  rope.original_max_position_embeddings = static_cast<int64_t>(std::llround(old_context));
  if (factor == 1.0 || !(old_context > 0) || !std::isfinite(rope.high_freq_factor) || rope.high_freq_factor <= 1.0)
    return make_error(what + ": the factors (" + std::to_string(factors.front()) + " ... " + std::to_string(factor) +
                      ") are not a llama3 RoPE scaling profile (1 for fast frequencies rising to a factor > 1)");
  const std::vector<double> want = llama3_freq_factors(rope, dim);
  for (int64_t i = 0; i < n; ++i) {
    // fp32 storage plus the converter's fp32 frequencies: a relative 1e-5 is ~100 ulps.
    if (std::abs(want[i] - factors[i]) > 1e-5 * want[i]) {
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    "[%lld] = %.9g, but the llama3 RoPE scaling the other factors imply (factor %g, low_freq_factor 1, "
                    "high_freq_factor %.6g, original_max_position_embeddings %lld, rope.freq_base %g) gives %.9g: "
                    "the factors are not llama3 scaling",
                    static_cast<long long>(i), static_cast<double>(factors[i]), factor, rope.high_freq_factor,
                    static_cast<long long>(rope.original_max_position_embeddings), theta, want[i]);
      return make_error(what + buf);
    }
  }
  rope.freq_factors = factors;
  return rope;
}

}  // namespace hylo
