// Sampling flags shared by generate and chat (header-only: apps/hylo is one executable).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>

#include "hylo/infer/sampler.h"

namespace hylo::cli {

struct SamplingArgs {
  bool greedy = false;
  double temperature = 0.7;
  int64_t top_k = 0;
  double top_p = 0.9;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  uint64_t seed = 0;

  SamplingParams params() const {  // validated
    SamplingParams p;
    p.temperature = greedy ? 0.0 : temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repetition_penalty = repetition_penalty;
    p.seed = seed;
    p.validate();
    return p;
  }
};

inline void add_sampling_options(CLI::App& app, SamplingArgs& a) {
  app.add_flag("--greedy", a.greedy, "argmax decoding (same as --temperature 0)");
  app.add_option("--temperature", a.temperature, "softmax temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", a.top_k, "keep the k most likely tokens; 0 = off")->capture_default_str();
  app.add_option("--top-p", a.top_p, "nucleus sampling mass; 1 = off")->capture_default_str();
  app.add_option("--min-p", a.min_p, "drop tokens below min_p x the top probability; 0 = off")->capture_default_str();
  app.add_option("--repetition-penalty", a.repetition_penalty, "HF repetition penalty; 1 = off")
      ->capture_default_str();
  app.add_option("--seed", a.seed, "sampling seed")->capture_default_str();
}

}  // namespace hylo::cli
