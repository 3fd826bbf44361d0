// Helpers for the data-parallel tests: the test binary re-executes itself as N ranks through the real
// launcher (train/distributed_launch.h); each rank runs one DISABLED_ test body (never run by ctest directly)
// and leaves its results as files in a per-test directory that the parent test reads.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hylo/train/distributed.h"
#include "hylo/train/distributed_launch.h"

// Multi-rank tests on the CPU need the Gloo process group; a build without gloo's headers (the GPU machine has no
// libgloo-dev) skips them with the reason instead of failing on the missing backend.
#define HYLO_REQUIRE_GLOO()                                                                     \
  do {                                                                                          \
    if (!::hylo::train::has_gloo_backend())                                                     \
      GTEST_SKIP() << "this build has no Gloo process group (gloo's headers were not found)";   \
  } while (0)

namespace hylo::train::testing {

namespace fs = std::filesystem;

inline fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("hylo_train_dist_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Runs DistRank.DISABLED_<body> as `nproc` ranks; HYLO_DIST_TEST_DIR=dir for every rank.
inline LaunchReport run_ranks(const std::string& body, int nproc, const fs::path& dir,
                              std::vector<std::string> env = {},
                              std::chrono::milliseconds grace = std::chrono::milliseconds(5000)) {
  LaunchOptions o;
  o.nproc = nproc;
  o.grace = grace;
  o.extra_env = std::move(env);
  o.extra_env.push_back("HYLO_DIST_TEST_DIR=" + dir.string());
  o.extra_env.push_back("OMP_NUM_THREADS=1");
  std::vector<std::string> argv = {"test_train_dist", "--gtest_also_run_disabled_tests",
                                   "--gtest_filter=DistRank.DISABLED_" + body};
  return launch_local_ranks(argv, o).value_or_throw();
}

// In a rank: the directory and the process group.
inline fs::path rank_dir() {
  const char* d = std::getenv("HYLO_DIST_TEST_DIR");
  if (d == nullptr) throw std::runtime_error("not launched by run_ranks (HYLO_DIST_TEST_DIR unset)");
  return d;
}

inline std::shared_ptr<ProcessGroup> rank_group() {
  DistEnv env = dist_env_from_environment().value_or_throw();
  auto timeout = dist_timeout_from_environment().value_or_throw();
  return ProcessGroup::create(env, at::Device(at::kCPU), timeout).value_or_throw();
}

// Raw little-endian dump of a contiguous tensor, and back (the dtype and numel are the reader's).
inline void write_tensor(const fs::path& path, const at::Tensor& t) {
  at::Tensor c = t.contiguous().cpu();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

inline at::Tensor read_tensor(const fs::path& path, at::ScalarType dtype) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int64_t n = static_cast<int64_t>(bytes.size()) / static_cast<int64_t>(c10::elementSize(dtype));
  at::Tensor t = at::empty({n}, at::TensorOptions().dtype(dtype));
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

inline void write_text(const fs::path& path, const std::string& s) { std::ofstream(path) << s; }

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace hylo::train::testing
