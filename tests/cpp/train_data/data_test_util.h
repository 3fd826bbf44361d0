// Helpers of the training-data tests: temporary directories, small files, the GPT-2 tokenizer from the
// shared test data (tests skip when set-up has not unpacked it), and synthetic datasets.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/train/data_format.h"

namespace hylo::train::testing {

inline std::filesystem::path data_root() {
  if (const char* d = std::getenv("HYLO_DATA"); d && *d) return d;
  if (const char* h = std::getenv("HOME"); h && *h) return std::filesystem::path(h) / ".cache/hylo/data";
  return {};
}

inline std::filesystem::path gpt2_tokenizer() { return data_root() / "tokenizers/gpt2/tokenizer.json"; }

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("hylo-train-data-" + std::to_string(::getpid()) + "-" + (info ? info->name() : "x"));
    (void)remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { (void)remove_tree(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Documents whose tokens are their positions in the stream (0, 1, 2, ...), so a token names its place.
// sizes: the documents' lengths; every other document gets a mask with every third token 0.
inline DatasetContents positional_contents(const std::vector<int>& sizes, bool with_masks, int64_t vocab) {
  DatasetContents c;
  c.tokenizer = {{"vocab_size", vocab}, {"doc_end_id", nullptr}};
  uint32_t next = 0;
  for (size_t d = 0; d < sizes.size(); ++d) {
    Document doc;
    for (int i = 0; i < sizes[d]; ++i) doc.tokens.push_back(next++);
    if (with_masks && d % 2 == 1)
      for (int i = 0; i < sizes[d]; ++i) doc.mask.push_back(i % 3 == 0 ? 0 : 1);
    doc.origin.index = static_cast<int64_t>(d);
    c.train.push_back(std::move(doc));
  }
  return c;
}

}  // namespace hylo::train::testing
