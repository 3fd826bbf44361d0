// PCRE2-backed regex for the tokenizer's Split pre-tokenizer and Replace normalizer. Hugging Face
// `tokenizers` compiles these patterns with Oniguruma, whose Unicode \s, \d and \w differ from PCRE2's, so
// the pattern is first rewritten to spell those classes out as Oniguruma defines them (\s = White_Space,
// \d = Nd, \w = L|M|Nd|Pc); everything else in the patterns these files use (\p{..}, (?i:..), lookahead)
// means the same in both engines.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::tok {

class Regex {
 public:
  // `what` names the file and component in error messages.
  static Result<std::shared_ptr<const Regex>> compile(const std::string& onig_pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [start, end) byte ranges of all leftmost non-overlapping matches in valid UTF-8 `text`.
  void find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
  std::string pattern_;
};

// The Oniguruma -> PCRE2 rewrite described above (exposed for tests).
std::string onig_to_pcre2(std::string_view pattern);

}  // namespace hylo::tok
