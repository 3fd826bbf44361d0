// CausalLM from a GGUF file: the config from its metadata (config/gguf_config.h), each tensor dequantized to
// f32 in the HF layout through the one name table (io/gguf_names.h), then the shared checks of load_weights.
#include <map>

#include "hylo/config/gguf_config.h"
#include "hylo/core/result.h"
#include "hylo/io/gguf.h"
#include "hylo/io/gguf_names.h"
#include "hylo/model/load_weights.h"

namespace hylo::detail {

std::unique_ptr<CausalLM> load_gguf_model(const std::filesystem::path& path, const LoadOptions& options) {
  io::GgufFile file = io::GgufFile::open(path).value_or_throw();
  ModelConfig config = model_config_from_gguf(file).value_or_throw();
  auto model = std::make_unique<CausalLM>(config, at::TensorOptions().dtype(options.dtype).device(options.device));

  std::map<std::string, const io::GgufTensorInfo*> by_hf_name;  // HF name -> GGUF tensor
  std::vector<std::string> names;
  for (const auto& info : file.tensors()) {
    auto hf = io::gguf_to_hf_name(info.name);
    // Names outside the table keep their GGUF spelling so that they are reported as unexpected.
    std::string name = hf ? *hf : info.name;
    by_hf_name[name] = &info;
    names.push_back(name);
  }
  WeightSource src;
  src.description = path.string();
  src.names = names;
  src.shape_of = [&](const std::string& name) -> std::optional<std::vector<int64_t>> {
    auto it = by_hf_name.find(name);
    if (it == by_hf_name.end()) return std::nullopt;
    return it->second->shape();
  };
  src.load = [&](const std::string& name) {
    const io::GgufTensorInfo* info = by_hf_name.at(name);
    std::vector<int64_t> shape;
    std::vector<float> data = io::load_gguf_tensor_hf_layout(file, info->name, config, &shape).value_or_throw();
    return at::from_blob(data.data(), shape, at::TensorOptions().dtype(at::kFloat)).clone();  // [HF shape] f32
  };
  const bool freq_factors = !config.rope.freq_factors.empty();
  src.ignorable = [freq_factors](const std::string& name) {
    // llama.cpp's per-frequency RoPE factors: model_config_from_gguf already read them into config.rope.
    return freq_factors && name == "rope_freqs.weight";
  };
  load_weights(*model, src);
  return model;
}

}  // namespace hylo::detail
