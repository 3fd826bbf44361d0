// PCRE2 regex wrapper (see regex.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "hylo/io/tokenizer/regex.h"

#include <pcre2.h>

#include "hylo/io/tokenizer/unicode.h"

namespace hylo::tok {
namespace {

constexpr const char* kSpaceSet = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}";
constexpr const char* kWordSet = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

// A per-thread JIT stack: the default 32 KiB is too small for long runs of whitespace under (?!\S).
struct JitStack {
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* ctx = nullptr;
  JitStack() {
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    if (stack && ctx) pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~JitStack() {
    if (ctx) pcre2_match_context_free(ctx);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

struct MatchData {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  ~MatchData() { pcre2_match_data_free(md); }
};

}  // namespace

std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  int in_class = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[++i];
      switch (n) {
        case 's': out += in_class ? std::string(kSpaceSet) : std::string("[") + kSpaceSet + "]"; break;
        case 'S': out += in_class ? std::string("\\S") : std::string("[^") + kSpaceSet + "]"; break;
        case 'd': out += "\\p{Nd}"; break;
        case 'D': out += "\\P{Nd}"; break;
        case 'w': out += in_class ? std::string(kWordSet) : std::string("[") + kWordSet + "]"; break;
        case 'W': out += in_class ? std::string("\\W") : std::string("[^") + kWordSet + "]"; break;
        default: out += c; out += n; break;
      }
      continue;
    }
    if (c == '[') {
      ++in_class;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) --in_class;
    out += c;
  }
  return out;
}

Result<std::shared_ptr<const Regex>> Regex::compile(const std::string& onig_pattern, const std::string& what) {
  const std::string pat = onig_to_pcre2(onig_pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), PCRE2_UTF | PCRE2_UCP, &err,
                                   &off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return make_error(what + ": cannot compile regex '" + onig_pattern + "' at offset " + std::to_string(off) + ": " +
                      reinterpret_cast<const char*>(buf));
  }
  std::shared_ptr<Regex> re(new Regex());
  re->code_ = code;
  re->pattern_ = onig_pattern;
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<const Regex>(std::move(re));
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Regex::find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  thread_local JitStack jit;
  thread_local MatchData data;
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, 0, data.md, jit.ctx)
                        : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, data.md, jit.ctx);
    if (rc < 0) break;  // no match (or a resource limit: the rest of the text is one unmatched piece)
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.md);
    const std::size_t s = ov[0], e = ov[1];
    out.emplace_back(s, e);
    if (e > s) {
      pos = e;
    } else {  // empty match: move on by one character, as Oniguruma's iterator does
      if (e >= text.size()) break;
      pos = e + utf8_len(static_cast<unsigned char>(text[e]));
    }
  }
}

}  // namespace hylo::tok
