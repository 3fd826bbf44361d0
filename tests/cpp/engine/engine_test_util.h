// Helpers shared by the engine tests (CPU and GPU): models whose every layer matters, prompts, and the full
// forward the engine is compared with.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hylo/model/causal_lm.h"
#include "shared/tiny_models.h"

namespace hylo::engine::test {

// CausalLM::random draws every weight as 0.02 * N(0, 1), which makes the mixers' outputs tiny and the recurrent
// layers forget within a few tokens (decay ~0.5 per token), so a wrong or missing state would hardly show. The
// engine tests want every layer to matter and the state to carry far: weights 10x larger, decay ~0.999 per token.
inline void make_every_layer_matter(CausalLM& model) {
  model.visit_parameters([](const std::string& name, at::Tensor& t) {
    auto ends_with = [&](const std::string& tail) {
      return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (ends_with("A_log")) t.fill_(std::log(0.01));           // A = -0.01
    else if (ends_with("dt_bias")) t.fill_(-2.0);              // softplus(-2) = 0.13: decay exp(-0.0013)
    else if (!ends_with("norm.weight") && !ends_with(".D")) t.mul_(10.0);
  });
}

inline std::unique_ptr<CausalLM> random_model(const ModelConfig& config, at::ScalarType dtype, uint64_t seed,
                                              at::Device device = at::kCPU) {
  LoadOptions o;
  o.dtype = dtype;
  o.device = device;
  auto model = CausalLM::random(config, seed, o);
  make_every_layer_matter(*model);
  return model;
}

inline std::vector<int64_t> random_prompt(int64_t n, uint64_t seed, int64_t vocab = 101) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (auto& t : p) t = static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

// Full forward over every token the engine ran (prompt + output except the last generated token): [n, V] fp64 on
// the CPU.
inline at::Tensor full_logits(CausalLM& model, const std::vector<int64_t>& prompt, const std::vector<int64_t>& output) {
  std::vector<int64_t> all = prompt;
  all.insert(all.end(), output.begin(), output.end());
  all.pop_back();
  at::Tensor ids = at::tensor(all, at::kLong).unsqueeze(0).to(model.options().device());
  return model.forward(ids)[0].to(at::kCPU, at::kDouble);
}

}  // namespace hylo::engine::test
