// Argument parsing shared by several hylo subcommands (header-only: apps/hylo is one executable).
#pragma once

#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::cli {

// Token ids given on the command line: "1 2 3" or "1,2,3" (any mix of spaces and commas). Every id must be a
// non-negative integer and at least one must be given; errors name `option` (e.g. "--ids").
inline std::vector<int64_t> parse_token_ids(const std::string& text, const std::string& option) {
  std::string s = text;
  for (char& c : s)
    if (c == ',') c = ' ';
  std::istringstream in(s);
  std::vector<int64_t> ids;
  std::string tok;
  while (in >> tok) {
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size() || v < 0) throw Error(option + ": '" + tok + "' is not a non-negative integer id");
    ids.push_back(v);
  }
  if (ids.empty()) throw Error(option + ": no ids given");
  return ids;
}

}  // namespace hylo::cli
