#include "hylo/model/checkpoint.h"

#include <unistd.h>

#include <vector>

#include <map>

#include "hylo/config/amd_export.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/core/file_util.h"
#include "hylo/io/gguf.h"
#include "hylo/io/gguf_write.h"
#include "hylo/io/safetensors.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {
namespace fs = std::filesystem;

namespace {

Status copy_tokenizer(const fs::path& source, const fs::path& staging) {
  std::error_code ec;
  if (fs::is_directory(source, ec)) {
    if (!fs::exists(source / "tokenizer.json", ec)) {
      // The same rule as Tokenizer::from_path: a checkpoint upcycled from a GGUF teacher holds tokenizer.gguf only.
      if (fs::exists(source / "tokenizer.gguf", ec)) return copy_tokenizer(source / "tokenizer.gguf", staging);
      return make_error(source.string() + ": no tokenizer.json (nor tokenizer.gguf) to copy into the checkpoint");
    }
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "generation_config.json", "chat_template.jinja"}) {
      if (!fs::exists(source / name, ec)) continue;
      // Read + atomic write rather than fs::copy_file: libtorch.so exports its own std::filesystem (file_util.h).
      HYLO_TRY(std::string bytes, read_text_file(source / name));
      HYLO_CHECK_OK(write_file_atomic(staging / name, bytes));
    }
    return {};
  }
  if (source.extension() == ".gguf") {
    HYLO_TRY(auto gguf, io::GgufFile::open(source));
    return io::write_gguf_tokenizer(gguf, staging / "tokenizer.gguf");
  }
  if (source.filename() == "tokenizer.json") return copy_tokenizer(source.parent_path(), staging);
  return make_error(source.string() + ": not a tokenizer source (expected a model directory, tokenizer.json or .gguf)");
}

Status write_config(CausalLM& model, const fs::path& staging, CheckpointLayout layout) {
  if (layout == CheckpointLayout::kHylo)
    return write_file_atomic(staging / "config.json", checkpoint_config_to_json(model.config()).dump(2) + "\n");
  std::map<std::string, std::vector<int64_t>> shapes;
  model.visit_parameters([&](const std::string& name, at::Tensor& t) {
    shapes[name] = std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
  });
  auto shape_of = [&](const std::string& name) -> std::optional<std::vector<int64_t>> {
    auto it = shapes.find(name);
    if (it == shapes.end()) return std::nullopt;
    return it->second;
  };
  HYLO_TRY(AmdConfigFiles files, amd_config_files(model.config(), shape_of, model.source().string()));
  HYLO_CHECK_OK(write_file_atomic(staging / "config.json", files.config.dump(2) + "\n"));
  return write_file_atomic(staging / "hybrid_config.json", files.hybrid_config.dump(2) + "\n");
}

Status write_all(CausalLM& model, const fs::path& staging, const fs::path& tokenizer_source, CheckpointLayout layout) {
  HYLO_CHECK_OK(write_config(model, staging, layout));
  TensorsToWrite tensors;
  model.visit_parameters([&](const std::string& name, at::Tensor& t) { tensors.add(name, t); });
  HYLO_CHECK_OK(io::write_safetensors(staging / "model.safetensors", tensors.tensors, {{"format", "pt"}}));
  return copy_tokenizer(tokenizer_source, staging);
}

// The target is replaced as a whole, so only something that is safe to lose may be there: nothing, an empty
// directory, or an earlier hylo checkpoint that is not the source of this one. Anything else (a teacher
// directory, a GGUF file, a home directory given by mistake) is refused before any work.
Status check_replaceable(const fs::path& dir, const fs::path& tokenizer_source) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return {};
  const fs::path source = fs::absolute(tokenizer_source).lexically_normal();
  const auto rel = source.lexically_relative(dir);
  if (!rel.empty() && *rel.begin() != "..")
    return make_error(dir.string() + ": refusing to replace it: it is or holds this checkpoint's source (" +
                      source.string() + "); choose another --out");
  if (!fs::is_directory(dir, ec)) return make_error(dir.string() + ": exists and is not a directory; refusing to replace it");
  if (fs::is_empty(dir, ec)) return {};
  if (fs::exists(dir / "hybrid_config.json", ec) && fs::exists(dir / "model.safetensors", ec))
    return {};  // an earlier AMD-layout export (hylo export --format amd)
  auto text = read_text_file(dir / "config.json");
  if (!text.ok() || text->find("\"hybrid\"") == std::string::npos)
    return make_error(dir.string() + ": exists and is not a hylo checkpoint (no config.json with a 'hybrid' block, "
                      "nor an AMD-layout hybrid_config.json); refusing to replace it");
  return {};
}

}  // namespace

Status save_checkpoint(CausalLM& model, const fs::path& dir_in, const fs::path& tokenizer_source,
                       CheckpointLayout layout) {
  fs::path dir = fs::absolute(dir_in).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "out/" names the directory "out"
  if (dir == dir.root_path()) return make_error(dir_in.string() + ": cannot write a checkpoint over the root directory");
  HYLO_CHECK_OK(check_replaceable(dir, tokenizer_source));
  std::error_code ec;
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  if (ec) return make_error(dir.parent_path().string() + ": cannot create: " + ec.message());
  fs::path staging = dir;
  staging += ".staging-" + std::to_string(::getpid());
  HYLO_CHECK_OK(remove_tree(staging));  // a leftover of an earlier interrupted run with the same pid
  fs::create_directory(staging, ec);
  if (ec) return make_error(staging.string() + ": cannot create the staging directory: " + ec.message());
  Status st = [&]() -> Status {
    try {
      return write_all(model, staging, tokenizer_source, layout);
    } catch (const std::exception& e) {
      return make_error(dir.string() + ": writing the checkpoint failed: " + e.what());
    }
  }();
  if (!st.ok()) {
    (void)remove_tree(staging);
    return st;
  }
  st = commit_directory_atomic(staging, dir);
  if (!st.ok()) (void)remove_tree(staging);
  return st;
}

}  // namespace hylo
