// Strict JSON parsing for untrusted headers and index files: never throws, reports the first syntax error
// with its byte position, and rejects what nlohmann::json silently accepts -- duplicate object keys (it keeps
// the last one) and absurd nesting (a hostile header could otherwise nest arbitrarily deep).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "hylo/core/result.h"

namespace hylo::io {

// `what` prefixes every message (e.g. "model.safetensors: header"); `max_depth` counts nested objects and
// arrays (the root object is depth 1).
Result<nlohmann::json> parse_json_strict(std::string_view text, const std::string& what, int max_depth = 64);

}  // namespace hylo::io
