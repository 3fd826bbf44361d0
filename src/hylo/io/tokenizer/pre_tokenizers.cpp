// Patterns, splitting, normalizers and pre-tokenizers (see components.h). Semantics follow `tokenizers`
// 0.23: NormalizedString::split with SplitDelimiterBehavior, and pieces that end up empty are dropped.
#include <algorithm>

#include "hylo/io/tokenizer/components.h"

namespace hylo::tok {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

using Segments = std::vector<std::pair<std::pair<std::size_t, std::size_t>, bool>>;

void Pattern::find_matches(std::string_view text, Segments& out) const {
  if (text.empty()) {
    out.push_back({{0, 0}, false});
    return;
  }
  if (kind == Kind::kRegex || kind == Kind::kString) {
    thread_local std::vector<std::pair<std::size_t, std::size_t>> found;
    found.clear();
    if (kind == Kind::kRegex) {
      regex->find_all(text, found);
    } else if (!literal.empty()) {
      for (std::size_t p = text.find(literal); p != std::string_view::npos; p = text.find(literal, p + literal.size()))
        found.emplace_back(p, p + literal.size());
    }
    std::size_t prev = 0;
    for (auto [s, e] : found) {
      if (prev != s) out.push_back({{prev, s}, false});
      out.push_back({{s, e}, true});
      prev = e;
    }
    if (prev != text.size()) out.push_back({{prev, text.size()}, false});
    return;
  }
  // One code point at a time, each matching character is its own match.
  std::size_t last = 0, i = 0;
  while (i < text.size()) {
    const std::size_t b = i;
    const uint32_t cp = utf8_next(text, i);
    const bool m = kind == Kind::kChar ? cp == ch : is_white_space(cp);
    if (m) {
      if (last < b) out.push_back({{last, b}, false});
      out.push_back({{b, i}, true});
      last = i;
    }
  }
  if (i > last) out.push_back({{last, i}, false});
}

void split_piece(const Piece& piece, const Pattern& pattern, SplitBehavior behavior, bool invert, std::vector<Piece>& out) {
  thread_local Segments segs;
  segs.clear();
  pattern.find_matches(piece.text, segs);
  if (invert)
    for (auto& s : segs) s.second = !s.second;
  // (start, end, remove)
  thread_local std::vector<std::pair<std::pair<std::size_t, std::size_t>, bool>> splits;
  splits.clear();
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto& s : segs) splits.push_back({s.first, false});
      break;
    case SplitBehavior::kRemoved:
      for (auto& s : segs) splits.push_back({s.first, s.second});
      break;
    case SplitBehavior::kContiguous: {
      bool prev = false;
      for (auto& s : segs) {
        if (s.second == prev && !splits.empty()) splits.back().first.second = s.first.second;
        else splits.push_back({s.first, false});
        prev = s.second;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev = false;
      for (auto& s : segs) {
        if (s.second && !prev && !splits.empty()) splits.back().first.second = s.first.second;
        else splits.push_back({s.first, false});
        prev = s.second;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->second && !prev && !splits.empty()) splits.back().first.first = it->first.first;
        else splits.push_back({it->first, false});
        prev = it->second;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (auto& [range, remove] : splits) {
    if (remove || range.first == range.second) continue;
    out.push_back(Piece{piece.text.substr(range.first, range.second - range.first), piece.at_start && range.first == 0});
  }
}

// ---- normalizers ---------------------------------------------------------------------------------------------
namespace {

struct UnicodeNormalizer final : Normalizer {
  NormForm form;
  explicit UnicodeNormalizer(NormForm f) : form(f) {}
  void normalize(std::string& text) const override { text = unicode_normalize(text, form); }
};

struct PrependNormalizer final : Normalizer {
  std::string prepend;
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend);
  }
};

struct ReplaceNormalizer final : Normalizer {
  Pattern pattern;
  std::string content;
  void normalize(std::string& text) const override {
    Segments segs;
    pattern.find_matches(text, segs);
    std::string out;
    out.reserve(text.size());
    for (auto& [r, m] : segs) {
      if (m) out += content;
      else out.append(text, r.first, r.second - r.first);
    }
    text.swap(out);
  }
};

struct StripNormalizer final : Normalizer {
  bool left, right;
  StripNormalizer(bool l, bool r) : left(l), right(r) {}
  void normalize(std::string& text) const override {
    std::size_t b = 0, e = text.size();
    if (left) {
      while (b < e) {
        std::size_t i = b;
        if (!is_white_space(utf8_next(text, i))) break;
        b = i;
      }
    }
    if (right) {
      while (e > b) {
        const std::size_t s = utf8_prev(text, e, b);
        std::size_t i = s;
        if (!is_white_space(utf8_next(text, i))) break;
        e = s;
      }
    }
    text = text.substr(b, e - b);
  }
};

struct SequenceNormalizer final : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> parts;
  void normalize(std::string& text) const override {
    for (auto& p : parts) p->normalize(text);
  }
};

// ---- pre-tokenizers ------------------------------------------------------------------------------------------
struct SplitPreTokenizer final : PreTokenizer {
  Pattern pattern;
  SplitBehavior behavior;
  bool invert;
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (auto& p : pieces) split_piece(p, pattern, behavior, invert, out);
    pieces.swap(out);
  }
};

struct ByteLevelPreTokenizer final : PreTokenizer {
  bool add_prefix_space;
  std::optional<Pattern> split;
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space)
      for (auto& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, " ");
    if (split) {
      std::vector<Piece> out;
      out.reserve(pieces.size() * 4);
      for (auto& p : pieces) split_piece(p, *split, SplitBehavior::kIsolated, false, out);
      pieces.swap(out);
    }
    const auto& map = byte_level_map();
    for (auto& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char b : p.text) mapped += map.byte_to_utf8[b];
      p.text.swap(mapped);
    }
  }
};

struct MetaspacePreTokenizer final : PreTokenizer {
  std::string rep;
  uint32_t replacement;
  PrependScheme scheme;
  bool split;
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    Pattern pat;
    pat.kind = Pattern::Kind::kChar;
    pat.ch = replacement;
    for (auto& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') t += rep;
        else t += c;
      }
      const bool starts = t.compare(0, rep.size(), rep) == 0;
      if (!starts && (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && p.at_start)))
        t.insert(0, rep);
      Piece np{std::move(t), p.at_start};
      if (split) split_piece(np, pat, SplitBehavior::kMergedWithNext, false, out);
      else if (!np.text.empty()) out.push_back(std::move(np));
    }
    pieces.swap(out);
  }
};

struct SequencePreTokenizer final : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : parts) p->pre_tokenize(pieces);
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_unicode_normalizer(NormForm form) { return std::make_unique<UnicodeNormalizer>(form); }
std::unique_ptr<Normalizer> make_prepend_normalizer(std::string prepend) {
  auto n = std::make_unique<PrependNormalizer>();
  n->prepend = std::move(prepend);
  return n;
}
std::unique_ptr<Normalizer> make_replace_normalizer(Pattern pattern, std::string content) {
  auto n = std::make_unique<ReplaceNormalizer>();
  n->pattern = std::move(pattern);
  n->content = std::move(content);
  return n;
}
std::unique_ptr<Normalizer> make_strip_normalizer(bool left, bool right) { return std::make_unique<StripNormalizer>(left, right); }
std::unique_ptr<Normalizer> make_sequence_normalizer(std::vector<std::unique_ptr<Normalizer>> parts) {
  auto n = std::make_unique<SequenceNormalizer>();
  n->parts = std::move(parts);
  return n;
}

std::unique_ptr<PreTokenizer> make_split_pre_tokenizer(Pattern pattern, SplitBehavior behavior, bool invert) {
  auto p = std::make_unique<SplitPreTokenizer>();
  p->pattern = std::move(pattern);
  p->behavior = behavior;
  p->invert = invert;
  return p;
}

Result<std::unique_ptr<PreTokenizer>> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex) {
  auto p = std::make_unique<ByteLevelPreTokenizer>();
  p->add_prefix_space = add_prefix_space;
  if (use_regex) {
    HYLO_TRY(auto re, Regex::compile(kGpt2Pattern, "ByteLevel pre-tokenizer"));
    Pattern pat;
    pat.kind = Pattern::Kind::kRegex;
    pat.regex = std::move(re);
    p->split = std::move(pat);
  }
  return std::unique_ptr<PreTokenizer>(std::move(p));
}

Result<std::unique_ptr<PreTokenizer>> make_digits_pre_tokenizer(bool individual_digits) {
  // Rust's char::is_numeric is the general categories Nd, Nl and No: \p{N}, one character per match.
  HYLO_TRY(auto re, Regex::compile("\\p{N}", "Digits pre-tokenizer"));
  Pattern pat;
  pat.kind = Pattern::Kind::kRegex;
  pat.regex = std::move(re);
  return make_split_pre_tokenizer(std::move(pat), individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                                  false);
}

std::unique_ptr<PreTokenizer> make_metaspace_pre_tokenizer(uint32_t replacement, PrependScheme scheme, bool split) {
  auto p = std::make_unique<MetaspacePreTokenizer>();
  utf8_append(p->rep, replacement);
  p->replacement = replacement;
  p->scheme = scheme;
  p->split = split;
  return p;
}

Result<std::unique_ptr<PreTokenizer>> make_whitespace_pre_tokenizer() {
  HYLO_TRY(auto re, Regex::compile("\\w+|[^\\w\\s]+", "Whitespace pre-tokenizer"));
  Pattern pat;
  pat.kind = Pattern::Kind::kRegex;
  pat.regex = std::move(re);
  return make_split_pre_tokenizer(std::move(pat), SplitBehavior::kRemoved, true);
}

std::unique_ptr<PreTokenizer> make_whitespace_split_pre_tokenizer() {
  Pattern pat;
  pat.kind = Pattern::Kind::kWhiteSpaceChar;
  return make_split_pre_tokenizer(std::move(pat), SplitBehavior::kRemoved, false);
}

std::unique_ptr<PreTokenizer> make_sequence_pre_tokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) {
  auto p = std::make_unique<SequencePreTokenizer>();
  p->parts = std::move(parts);
  return p;
}

}  // namespace hylo::tok
