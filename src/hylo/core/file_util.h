// File helpers shared by every reader and writer: read-only memory maps (checkpoints are mapped, never
// copied whole), whole-file reads for small text files, and atomic writes (temp file in the same directory,
// fsync, rename) so that an interrupted write never leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "hylo/core/result.h"

namespace hylo {

// A read-only, shareable memory map of a whole file. Empty files map to an empty span.
class MappedFile {
 public:
  static Result<std::shared_ptr<const MappedFile>> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

Result<std::string> read_text_file(const std::filesystem::path& path);

// Writes through `writer` into `path.tmp-<pid>` next to `path`, flushes to disk, then renames over `path`.
// On any failure the temporary file is removed and `path` is untouched.
using StreamWriter = std::function<Status(std::FILE* out)>;
Status write_file_atomic(const std::filesystem::path& path, const StreamWriter& writer);
Status write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// Removes a file or a directory tree (POSIX nftw, no symlink following). A missing path is not an error.
// Prefer this over std::filesystem::remove_all: libtorch.so exports its own copy of the std::filesystem
// symbols, and its remove_all crashes (calls a null function) in binaries linked against it.
Status remove_tree(const std::filesystem::path& path);

// Replaces directory `final_dir` by `staging_dir` in one step (a rename, or an atomic exchange when `final_dir`
// exists, after which the previous one is removed), so readers see either the old checkpoint or the complete new
// one, never neither.
Status commit_directory_atomic(const std::filesystem::path& staging_dir, const std::filesystem::path& final_dir);

}  // namespace hylo
