// Shared by the fuzz targets: the parsers take paths (they mmap), so each input is written to one in-memory
// file (memfd) per process and opened through /proc/self/fd -- no disk traffic, no temp files left behind.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace hylo::fuzz {

inline std::string input_as_file(const uint8_t* data, size_t size) {
  static int fd = [] {
    int f = ::memfd_create("hylo_fuzz_input", MFD_CLOEXEC);
    if (f < 0) std::abort();
    return f;
  }();
  if (::ftruncate(fd, 0) != 0) std::abort();
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace hylo::fuzz
