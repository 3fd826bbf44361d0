// AdamW (Loshchilov & Hutter) over a list of named fp32 parameters, with decoupled weight decay, written out
// rather than taken from torch::optim so that data parallelism can shard it (ZeRO-1: each rank keeps state for
// and updates only the parameters it owns, set_owned) and checkpoints can save/load its state by parameter name.
//
// Per parameter p with gradient g, at its own step count k = 1, 2, ...:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr * wd * p                                     (only where decay applies: tensors of rank >= 2)
//   p -= lr * (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)
// State is fp32 and lives on the parameter's device. Parameters without a gradient this step are skipped.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/train/sync_hooks.h"

namespace hylo::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled; applied to matrices (rank >= 2) only, never to norms and biases
};

class AdamW {
 public:
  AdamW(std::vector<NamedParam> params, AdamWOptions options);

  // ZeRO-1: only parameters with owned[i] keep state and are updated. Drops the state of parameters no
  // longer owned. Default: all owned.
  void set_owned(const std::vector<bool>& owned);
  bool owns(size_t i) const { return owned_.at(i); }

  // One update of every owned parameter that has a gradient, at learning rate `lr`.
  void step(double lr);
  // Sets every parameter's gradient to undefined (the next backward allocates it fresh).
  void zero_grad();

  const std::vector<NamedParam>& params() const { return params_; }

  // State of owned parameters by name: "<param>.exp_avg", "<param>.exp_avg_sq" (fp32, the parameter's shape)
  // and "<param>.step" (int64 scalar), all on the CPU.
  std::map<std::string, at::Tensor> state_dict() const;
  // Loads the state of every owned parameter from `state` (which may hold other ranks' entries as well).
  // Errors name `source`, the entry and what was expected; a missing owned entry is an error.
  Status load_state_dict(const std::map<std::string, at::Tensor>& state, const std::string& source);

 private:
  struct State {
    int64_t step = 0;
    at::Tensor exp_avg, exp_avg_sq;  // fp32, like the parameter; undefined until the first step
  };
  std::vector<NamedParam> params_;
  std::vector<bool> owned_;
  std::vector<State> state_;
  AdamWOptions options_;
};

}  // namespace hylo::train
