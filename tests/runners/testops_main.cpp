#include <cstdio>
#include <map>
#include <string>

#include "hylo/core/result.h"
#include "hylo/io/safetensors.h"
#include "hylo/ops/tensor_util.h"
#include "testops.h"

namespace hylo::testops {
namespace {
std::map<std::string, OpFn>& registry() {
  static std::map<std::string, OpFn> ops;
  return ops;
}
}  // namespace

OpRegistrar::OpRegistrar(const std::string& name, OpFn fn) { registry()[name] = std::move(fn); }

const at::Tensor& input(const TensorMap& inputs, const std::string& name) {
  auto it = inputs.find(name);
  if (it == inputs.end()) throw Error("testops: missing input tensor '" + name + "'");
  return it->second;
}

double param_double(const Params& p, const std::string& k, double fallback) {
  auto it = p.find(k);
  return it == p.end() ? fallback : std::stod(it->second);
}
int64_t param_int(const Params& p, const std::string& k, int64_t fallback) {
  auto it = p.find(k);
  return it == p.end() ? fallback : std::stoll(it->second);
}
std::string param_str(const Params& p, const std::string& k, const std::string& fallback) {
  auto it = p.find(k);
  return it == p.end() ? fallback : it->second;
}

}  // namespace hylo::testops

int main(int argc, char** argv) {
  using namespace hylo;
  using namespace hylo::testops;
  if (argc < 4) {
    std::fprintf(stderr, "usage: hylo_testops OP IN.safetensors OUT.safetensors [key=value ...]\nops:");
    for (auto& [name, fn] : registry()) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  try {
    auto it = registry().find(argv[1]);
    if (it == registry().end()) throw Error(std::string("unknown op '") + argv[1] + "'");
    auto file = io::SafetensorsFile::open(argv[2]).value_or_throw();
    TensorMap inputs;
    for (const auto& info : file.tensors()) inputs[info.name] = tensor_from_view(file.view(info.name).value_or_throw());
    Params params;
    for (int i = 4; i < argc; ++i) {
      std::string kv = argv[i];
      auto eq = kv.find('=');
      if (eq == std::string::npos) throw Error("parameter '" + kv + "' is not key=value");
      params[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    TensorMap outputs = it->second(inputs, params);
    std::vector<io::TensorToWrite> writes;
    std::vector<at::Tensor> keep;
    for (auto& [name, t] : outputs) {
      at::Tensor c = t.detach().to(at::kCPU).contiguous();
      keep.push_back(c);
      writes.push_back({name, to_io_dtype(c.scalar_type()), c.sizes().vec(),
                        {static_cast<const std::byte*>(c.data_ptr()), c.nbytes()}});
    }
    io::write_safetensors(argv[3], writes).value_or_throw();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
