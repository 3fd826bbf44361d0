#include "hylo/io/span_check.h"

#include <algorithm>

namespace hylo::io {

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

int64_t shape_numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Status check_spans_disjoint(std::vector<NamedSpan> spans, const std::string& where, const std::string& suffix) {
  std::erase_if(spans, [](const NamedSpan& s) { return s.nbytes == 0; });
  std::sort(spans.begin(), spans.end(), [](const NamedSpan& a, const NamedSpan& b) { return a.offset < b.offset; });
  for (std::size_t i = 1; i < spans.size(); ++i) {
    const NamedSpan& a = spans[i - 1];
    const NamedSpan& b = spans[i];
    // Spans were checked to lie inside the file, so offset + nbytes does not wrap.
    if (b.offset < a.offset + a.nbytes)
      return make_error(where + ": tensors \"" + *a.name + "\" [" + std::to_string(a.offset) + ", " +
                        std::to_string(a.offset + a.nbytes) + ") and \"" + *b.name + "\" [" +
                        std::to_string(b.offset) + ", " + std::to_string(b.offset + b.nbytes) + ") overlap" + suffix);
  }
  return {};
}

}  // namespace hylo::io
