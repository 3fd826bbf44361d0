// Small checks shared by the safetensors and GGUF readers: shape text for messages, element counts, and the
// "no two tensors share bytes" check over their data spans.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::io {

// "[d0, d1, ...]" in the order given.
std::string shape_text(const std::vector<int64_t>& dims);

// Product of the dims (1 for none). Callers validate the dims (non-negative, no overflow) when reading them.
int64_t shape_numel(const std::vector<int64_t>& dims);

struct NamedSpan {
  const std::string* name;  // the tensor's name (owned by the caller)
  uint64_t offset = 0;
  uint64_t nbytes = 0;
};

// Error "<where>: tensors "a" [b, e) and "c" [b, e) overlap<suffix>" for the first pair of non-empty spans that
// share a byte (empty spans hold no bytes and never overlap). Sorts `spans` by offset.
Status check_spans_disjoint(std::vector<NamedSpan> spans, const std::string& where, const std::string& suffix = "");

}  // namespace hylo::io
