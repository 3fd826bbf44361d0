// Encode throughput of hylo's tokenizer, single-threaded: the whole text in one call, and line by line.
// Usage: tokenizer_throughput --tokenizer PATH --file TEXT [--repeat N]
// Prints one JSON object: bytes, tokens, and MB/s (best of N timed runs after one warm-up run, so the BPE
// word cache is warm -- as it is for `tokenizers` in bench/tokenizer_vs_hf.py, which runs the same way).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  std::string tok_path, file;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) tok_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--file")) file = argv[i + 1];
    else if (!std::strcmp(argv[i], "--repeat")) repeat = std::max(1, std::atoi(argv[i + 1]));
  }
  if (tok_path.empty() || file.empty()) {
    std::fprintf(stderr, "usage: tokenizer_throughput --tokenizer PATH --file TEXT [--repeat N]\n");
    return 2;
  }
  try {
    const auto t_load0 = std::chrono::steady_clock::now();
    auto tok = hylo::tok::Tokenizer::from_path(tok_path).value_or_throw();
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load0).count();
    const std::string text = hylo::read_text_file(file).value_or_throw();
    std::vector<std::string> lines;
    for (std::size_t p = 0; p < text.size();) {
      std::size_t e = text.find('\n', p);
      e = e == std::string::npos ? text.size() : e + 1;
      lines.push_back(text.substr(p, e - p));  // each line keeps its newline, as the Python side splits
      p = e;
    }
    auto time_it = [&](auto&& fn) {
      fn();  // warm-up
      double best = 1e30;
      for (int r = 0; r < repeat; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    std::size_t n_whole = 0, n_lines = 0;
    const double whole_s = time_it([&] { n_whole = tok.encode(text, false).size(); });
    const double lines_s = time_it([&] {
      n_lines = 0;
      for (const auto& l : lines) n_lines += tok.encode(l, false).size();
    });
    const double mb = static_cast<double>(text.size()) / 1e6;
    std::printf("{\"bytes\": %zu, \"lines\": %zu, \"tokens_whole\": %zu, \"tokens_lines\": %zu, \"load_s\": %.3f, "
                "\"whole_mb_s\": %.3f, \"lines_mb_s\": %.3f}\n",
                text.size(), lines.size(), n_whole, n_lines, load_s, mb / whole_s, mb / lines_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
