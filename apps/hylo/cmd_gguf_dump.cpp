// hylo gguf-dump FILE.gguf --out OUT.safetensors [--hf-names] [--metadata]
// A developer tool: writes every tensor of a GGUF file dequantized to F32 into one safetensors file (GGUF
// names and shapes, or with --hf-names the HF names and layout a transformers checkpoint has), and with
// --metadata prints the metadata as JSON (arrays longer than 16 elided). The oracle tests compare its
// output with the `gguf` package and transformers' GGUF loader.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "hylo/config/gguf_config.h"
#include "hylo/io/gguf.h"
#include "hylo/io/gguf_names.h"
#include "hylo/io/safetensors.h"

namespace hylo::cli {
namespace {

constexpr std::size_t kMaxArrayShown = 16;

nlohmann::json value_to_json(const io::GgufValue& v) {
  return std::visit(
      [](const auto& x) -> nlohmann::json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, io::GgufArray>) {
          nlohmann::json arr = nlohmann::json::array();
          for (std::size_t i = 0; i < x.size() && i < kMaxArrayShown; ++i) arr.push_back(value_to_json(x[i]));
          if (x.size() <= kMaxArrayShown) return arr;
          return {{"length", x.size()}, {"first", std::move(arr)}};
        } else {
          return x;
        }
      },
      v.v);
}

int run_gguf_dump(const std::string& in, const std::string& out, bool hf_names, bool metadata) {
  io::GgufFile f = io::GgufFile::open(in).value_or_throw();
  if (metadata) {
    nlohmann::json md = nlohmann::json::object();
    for (const auto& [key, value] : f.metadata()) md[key] = value_to_json(value);
    md["GGUF.version"] = f.version();
    md["GGUF.tensor_count"] = f.tensors().size();
    // Token strings need not be valid UTF-8; replace what is not rather than fail.
    std::cout << md.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  if (out.empty()) return 0;

  std::optional<ModelConfig> cfg;
  if (hf_names) cfg = model_config_from_gguf(f).value_or_throw();
  std::vector<std::vector<float>> storage;  // keeps each tensor's f32 values alive until written
  std::vector<io::TensorToWrite> tensors;
  storage.reserve(f.tensors().size());
  for (const auto& info : f.tensors()) {
    io::TensorToWrite t;
    t.dtype = io::DType::kF32;
    if (hf_names) {
      auto hf = io::gguf_to_hf_name(info.name);
      if (!hf) throw Error(in + ": tensor \"" + info.name + "\" has no Hugging Face name in the mapping table");
      t.name = *hf;
      storage.push_back(io::load_gguf_tensor_hf_layout(f, info.name, *cfg, &t.shape).value_or_throw());
    } else {
      t.name = info.name;
      t.shape = info.shape();
      storage.push_back(f.dequantize(info.name).value_or_throw());
    }
    const auto& data = storage.back();
    t.bytes = std::as_bytes(std::span<const float>(data.data(), data.size()));
    tensors.push_back(std::move(t));
  }
  io::write_safetensors(out, tensors, {{"source", in}, {"format", "pt"}}).value_or_throw();
  std::fprintf(stderr, "wrote %zu tensors to %s\n", tensors.size(), out.c_str());
  return 0;
}

CommandRun setup(CLI::App& app) {
  struct Opts {
    std::string in, out;
    bool hf_names = false, metadata = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("file", o->in, "GGUF file")->required();
  app.add_option("--out", o->out, "output .safetensors (every tensor dequantized to F32)");
  app.add_flag("--hf-names", o->hf_names, "Hugging Face tensor names and layout (undoes llama.cpp's q/k permutation)");
  app.add_flag("--metadata", o->metadata, "print the metadata as JSON on stdout");
  return [o]() -> int {
    // The specific complaint first: --hf-names alone is a request, just an incomplete one.
    if (o->hf_names && o->out.empty()) throw Error("gguf-dump: --hf-names names the tensors written by --out; give --out");
    if (o->out.empty() && !o->metadata) throw Error("gguf-dump: nothing to do (give --out and/or --metadata)");
    return run_gguf_dump(o->in, o->out, o->hf_names, o->metadata);
  };
}

}  // namespace

HYLO_COMMAND(gguf_dump, "gguf-dump", "Dump a GGUF file's tensors (dequantized to F32) and metadata", setup);

}  // namespace hylo::cli
