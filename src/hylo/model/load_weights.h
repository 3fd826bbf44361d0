// Internal to model/: fills a CausalLM's parameters from a checkpoint, with the checks every format shares --
// each expected tensor present with the expected shape, nothing unexpected left over (except names that are
// known to be ignorable), dtype and device converted to the model's.
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hylo/model/causal_lm.h"

namespace hylo::detail {

struct WeightSource {
  std::string description;                   // the file or directory, for messages
  std::vector<std::string> names;            // every tensor the checkpoint holds, in HF names
  // The stored shape of a tensor, or nullopt when absent.
  std::function<std::optional<std::vector<int64_t>>(const std::string& name)> shape_of;
  // The tensor on the CPU in any floating dtype (converted by the caller).
  std::function<at::Tensor(const std::string& name)> load;
  // Names that may be present without being parameters (e.g. rotary inv_freq buffers).
  std::function<bool(const std::string& name)> ignorable;
};

void load_weights(CausalLM& model, const WeightSource& source);

// GGUF files (model/load_gguf.cpp).
std::unique_ptr<CausalLM> load_gguf_model(const std::filesystem::path& path, const LoadOptions& options);

}  // namespace hylo::detail
