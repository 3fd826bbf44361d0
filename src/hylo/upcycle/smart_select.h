// SMART layer selection (Zebra-Llama, HYLO.md 7.1): starting from a pure-linear model, score every layer by how
// much swapping that layer alone to MLA reduces the KL to the teacher on calibration text, and take the top k.
// The two Stage-I models (pure MLA, pure linear) supply the layers; HyLo / Zebra score Stage-I-trained models,
// and the function is the same for freshly upcycled ones.
#pragma once

#include <functional>
#include <vector>

#include "hylo/config/layer_plan.h"
#include "hylo/model/causal_lm.h"

namespace hylo {

struct SmartScore {
  int64_t layer = 0;
  double kl = 0;    // KL(teacher || linear model with this one layer from the MLA model), nats/token
  double gain = 0;  // kl_linear - kl: how much the swap helps
};

struct SmartResult {
  double kl_linear = 0;              // the pure-linear model
  std::vector<SmartScore> scores;    // one per layer, in layer order
  std::vector<int64_t> selected;     // the k layers of largest gain, ascending
};

// ids: [1, T] calibration tokens. Throws hylo::Error when the models do not fit together or k is out of range.
SmartResult smart_select(CausalLM& teacher, CausalLM& mla_model, CausalLM& linear_model, const at::Tensor& ids,
                         int64_t k, const std::function<void(int64_t done, int64_t total)>& progress = {});

}  // namespace hylo
