// The models `hylo bench` compares, built one at a time (bench.h BenchModelSource):
//   - a checkpoint (MODEL), optionally with a teacher checkpoint (--teacher);
//   - random weights for a Transformer config (--random-config config.json, HF format) as the teacher, and with
//     --plan the hybrid that plan makes of it (config/layer_plan.h), also with random weights: speed and memory
//     depend on shapes only, and a 1B-parameter model needs no download;
//   - a Transformer checkpoint (MODEL) with --plan: MODEL is the teacher, the hybrid is random weights of its plan.
// Random weights are drawn on the model's device (norms around 1, the rest N(0, 0.02), as CausalLM::random draws
// them on the CPU, which takes minutes at 1B parameters).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hylo/infer/bench/bench.h"
#include "hylo/model/causal_lm.h"

namespace hylo::bench {

struct BenchModelSpec {
  std::string model;          // checkpoint path (HF directory, GGUF, hylo checkpoint); or empty
  std::string teacher;        // checkpoint path; or empty
  std::string random_config;  // HF config.json of a Transformer; or empty
  std::string plan;           // layer plan YAML; or empty
  LoadOptions load;
  uint64_t seed = 0;
};

// Checks the combination (hylo::Error naming the flags) and returns the sources, the hybrid first.
std::vector<BenchModelSource> bench_model_sources(const BenchModelSpec& spec);

std::unique_ptr<CausalLM> random_model_on_device(const ModelConfig& config, const LoadOptions& load, uint64_t seed);

}  // namespace hylo::bench
