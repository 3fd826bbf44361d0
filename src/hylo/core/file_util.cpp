#include "hylo/core/file_util.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hylo {
namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

Result<std::shared_ptr<const MappedFile>> MappedFile::open(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(path.string() + ": cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string msg = path.string() + ": cannot stat: " + errno_text();
    ::close(fd);
    return make_error(msg);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(path.string() + ": not a regular file");
  }
  auto* file = new MappedFile();
  std::shared_ptr<const MappedFile> holder(file);
  file->path_ = path;
  file->size_ = static_cast<std::size_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::string msg = path.string() + ": cannot mmap: " + errno_text();
      ::close(fd);
      return make_error(msg);
    }
    file->data_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);
  return holder;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

Result<std::string> read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(path.string() + ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(path.string() + ": read error");
  return ss.str();
}

Status write_file_atomic(const fs::path& path, const StreamWriter& writer) {
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) return make_error(tmp.string() + ": cannot create: " + errno_text());
  Status st = writer(out);
  bool flushed = std::fflush(out) == 0 && ::fsync(::fileno(out)) == 0;
  bool closed = std::fclose(out) == 0;
  if (!st.ok() || !flushed || !closed) {
    std::error_code ec;
    fs::remove(tmp, ec);
    if (!st.ok()) return st;
    return make_error(tmp.string() + ": write failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return make_error(path.string() + ": cannot rename temporary file into place: " + ec.message());
  }
  return {};
}

Status write_file_atomic(const fs::path& path, std::string_view contents) {
  return write_file_atomic(path, [&](std::FILE* out) -> Status {
    if (!contents.empty() && std::fwrite(contents.data(), 1, contents.size(), out) != contents.size())
      return make_error(path.string() + ": short write");
    return {};
  });
}

namespace {
int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path) == 0 ? 0 : -1; }
}  // namespace

Status remove_tree(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return make_error(path.string() + ": cannot stat: " + errno_text());
  }
  // Depth first (FTW_DEPTH) so directories are empty when removed; FTW_PHYS: never follow symlinks.
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return make_error(path.string() + ": cannot remove: " + errno_text());
  return {};
}

Status commit_directory_atomic(const fs::path& staging_dir, const fs::path& final_dir) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) {
    fs::rename(staging_dir, final_dir, ec);
    if (ec) return make_error(final_dir.string() + ": cannot move staged directory into place: " + ec.message());
    return {};
  }
  // Swap the two directories in one step, so readers see the old checkpoint or the new one, never neither;
  // the staging name then holds the old checkpoint, which is removed.
  if (::renameat2(AT_FDCWD, staging_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0)
    return make_error(final_dir.string() + ": cannot swap in the staged directory " + staging_dir.string() + ": " +
                      errno_text());
  (void)remove_tree(staging_dir);  // the new checkpoint is in place; a leftover old copy is harmless
  return {};
}

}  // namespace hylo
