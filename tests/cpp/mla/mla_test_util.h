// Shared helpers of the MLA tests: tiny and HyLo-sized specs, seeded parameter fill, error measures.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "hylo/config/model_config.h"
#include "hylo/model/mixers/mla.h"

namespace hylo::mla_test {

// Tiny tensors: intra-op threads would only spin on the shared 2-core machine. Runs once per process.
inline const bool kSingleThreaded = (at::set_num_threads(1), true);

inline ModelConfig config_with(int64_t hidden, const MlaSpec& spec) {
  ModelConfig c;
  c.hidden_size = hidden;
  LayerSpec l;
  l.mixer = MixerKind::kMla;
  l.mla = spec;
  c.layers.push_back(l);
  return c;
}

// Tiny HyLo-variant shapes: low-rank q, 2 kv groups repeated to 4 heads, no latent norms, YaRN on.
inline MlaSpec tiny_spec() {
  MlaSpec s;
  s.num_heads = 4;
  s.q_lora_rank = 7;
  s.kv_lora_rank = 5;
  s.qk_nope_head_dim = 2;
  s.qk_rope_head_dim = 4;
  s.v_head_dim = 3;
  s.num_kv_groups = 2;
  s.rope.theta = 10000.0;
  s.rope.type = "yarn";
  s.rope.factor = 4.0;
  s.rope.original_max_position_embeddings = 16;
  return s;
}

// Fills every parameter with seeded N(0, 1/sqrt(fan_in)) values (norm weights around 1), in place.
inline void fill_parameters(Mixer& mixer, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  mixer.visit_parameters("", [&](const std::string& name, at::Tensor& t) {
    c10::NoGradGuard no_grad;
    at::Tensor r = at::randn(t.sizes(), gen, at::TensorOptions().dtype(at::kDouble));
    if (name.find("layernorm") != std::string::npos) {
      r = 1.0 + 0.2 * r;
    } else {
      const double fan_in = t.dim() == 2 ? static_cast<double>(t.size(1)) : 4.0;
      r = r / std::sqrt(fan_in);
    }
    t.copy_(r);
  });
}

inline at::Tensor randn(at::IntArrayRef shape, uint64_t seed, at::ScalarType dtype = at::kDouble) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)).to(dtype);
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

inline double rel_rms(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor d = a.detach().to(at::kDouble) - ref.detach().to(at::kDouble);
  return d.norm().item<double>() / ref.detach().to(at::kDouble).norm().item<double>();
}

// "1.234e-07": measured errors recorded as test properties (std::to_string would print 0.000000).
inline std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3e", v);
  return buf;
}

constexpr double kEps32 = 1.1920928955078125e-07;  // 2^-23
constexpr double kEps64 = 2.220446049250313e-16;    // 2^-52

}  // namespace hylo::mla_test
