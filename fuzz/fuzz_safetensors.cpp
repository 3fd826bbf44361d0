// libFuzzer target: any byte string given to the safetensors reader is either a validated file whose every
// tensor view lies inside the mapping, or an error -- never a crash, leak or undefined behaviour.
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "hylo/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = hylo::io::SafetensorsFile::open(hylo::fuzz::input_as_file(data, size));
  if (!f.ok()) {
    if (f.error().empty()) std::abort();  // every error must say something
    return 0;
  }
  unsigned sum = 0;
  for (const auto& t : f->tensors()) {
    auto v = f->view(t.name);
    if (!v.ok() || v->bytes.size() != t.nbytes) std::abort();
    for (std::byte b : v->bytes) sum += static_cast<unsigned>(b);  // ASan checks each byte is mapped
  }
  for (const auto& [k, v] : f->metadata()) sum += static_cast<unsigned>(k.size() + v.size());
  volatile unsigned sink = sum;
  (void)sink;
  return 0;
}
