// hylo_testops: a test-only executable that runs one named op of ours on tensors read from a safetensors
// file and writes the results to another, so Python oracle tests (fla, mamba_ssm, transformers) can compare
// our math with theirs on identical inputs. Each op registers itself from its own *_ops.cpp file here.
//
//   hylo_testops OP IN.safetensors OUT.safetensors [key=value ...]
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>

namespace hylo::testops {

using TensorMap = std::map<std::string, at::Tensor>;
using Params = std::map<std::string, std::string>;
using OpFn = std::function<TensorMap(const TensorMap& inputs, const Params& params)>;

struct OpRegistrar {
  OpRegistrar(const std::string& name, OpFn fn);
};

// Helpers for op implementations: a required input (error names it), and typed parameters with defaults.
const at::Tensor& input(const TensorMap& inputs, const std::string& name);
double param_double(const Params& params, const std::string& key, double fallback);
int64_t param_int(const Params& params, const std::string& key, int64_t fallback);
std::string param_str(const Params& params, const std::string& key, const std::string& fallback);

}  // namespace hylo::testops

// Usage in a *_ops.cpp file:  static const hylo::testops::OpRegistrar reg_gdn("gdn_chunk", [](auto& in, auto& p) {...});
