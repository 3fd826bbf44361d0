// safetensors reading (mmap, lazy per tensor, sharded model.safetensors.index.json) and atomic writing.
// Every structural property of the file is validated on open: header length bounds, JSON well-formedness,
// known dtype, shape x dtype size == byte span, spans inside the data section and non-overlapping, no
// duplicate names. Each violation is an error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/core/result.h"
#include "hylo/io/dtype.h"

namespace hylo::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;   // within the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
};

// A validated view of one tensor's bytes; the span stays valid while `file` (the mapping) is alive.
struct TensorView {
  const TensorInfo* info = nullptr;
  std::span<const std::byte> bytes;
  std::shared_ptr<const MappedFile> file;
};

class SafetensorsFile {
 public:
  static Result<SafetensorsFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  Result<TensorView> view(const std::string& name) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_start_ = 0;
};

// One checkpoint made of one or more safetensors files: a single file, a directory holding
// model.safetensors, or a directory with model.safetensors.index.json (sharded). Tensor names are unique
// across shards (a duplicate is an error naming both files).
class SafetensorsCheckpoint {
 public:
  static Result<SafetensorsCheckpoint> open(const std::filesystem::path& file_or_dir);
  std::vector<std::string> names() const;
  const TensorInfo* find(const std::string& name) const;
  Result<TensorView> view(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> owner_;  // tensor name -> index into files_
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;  // must be numel * dtype_size bytes
};

// Writes a single safetensors file atomically (temp file + rename). Tensors are laid out in name order,
// 8-byte aligned header as the reference implementation does.
Status write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace hylo::io
