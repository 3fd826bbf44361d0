// Writing GGUF v3 files that hold metadata only (no tensors): used to store a GGUF teacher's tokenizer
// (tokenizer.ggml.* keys) inside a hylo checkpoint as `tokenizer.gguf`, so the checkpoint is self-contained
// and the tokenizer is read back by the same GGUF vocabulary loader, token for token. Written atomically.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "hylo/core/result.h"
#include "hylo/io/gguf.h"

namespace hylo::io {

Status write_gguf_metadata(const std::filesystem::path& path, const std::map<std::string, GgufValue>& metadata);

// The metadata of `source` whose keys start with "tokenizer." plus general.architecture / general.name,
// written to `path` with write_gguf_metadata.
Status write_gguf_tokenizer(const GgufFile& source, const std::filesystem::path& path);

}  // namespace hylo::io
