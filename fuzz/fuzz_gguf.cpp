// libFuzzer target: the GGUF reader on arbitrary bytes, then everything a model loader does with an accepted
// file -- typed metadata access, dequantization of every tensor, ModelConfig import and the HF-layout load --
// must end in a value or an error, never a crash, leak or undefined behaviour.
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "hylo/config/gguf_config.h"
#include "hylo/io/gguf.h"
#include "hylo/io/gguf_names.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = hylo::io::GgufFile::open(hylo::fuzz::input_as_file(data, size));
  if (!f.ok()) {
    if (f.error().empty()) std::abort();
    return 0;
  }
  for (const auto& [key, value] : f->metadata()) {
    (void)f->get_int(key);
    (void)f->get_float(key);
    (void)f->get_string(key);
    (void)f->get_string_array(key);
    (void)f->get_int_array(key);
    (void)f->get_float_array(key);
  }
  for (const auto& t : f->tensors()) {
    auto values = f->dequantize(t.name);
    if (!values.ok()) std::abort();  // an accepted file must dequantize: spans were validated on open
    if (static_cast<int64_t>(values->size()) != t.numel()) std::abort();
  }
  auto cfg = hylo::model_config_from_gguf(*f);
  if (cfg.ok()) {
    for (const auto& t : f->tensors()) {
      std::vector<int64_t> shape;
      (void)hylo::io::load_gguf_tensor_hf_layout(*f, t.name, *cfg, &shape);
    }
  }
  return 0;
}
