// llama.cpp's SentencePiece-score tokenizer (see Spm in components.h): the special-token split, the leading-space
// rule and "▁" escaping, and the score-driven bigram merge over a linked list of symbols with a priority queue,
// so a fragment of n characters costs O(n log n).
#include <queue>

#include "hylo/io/tokenizer/components.h"

namespace hylo::tok {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// UTF-8 sequence length from the lead byte's high nibble, as llama.cpp reads it: a stray continuation byte or an
// invalid lead byte is a symbol of its own; a truncated sequence at the end is cut to what is there.
std::size_t lead_len(unsigned char c) {
  static constexpr unsigned char kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

struct Symbol {
  std::size_t start, n;  // bytes of the escaped fragment; n == 0 once merged into its left neighbour
  int32_t prev, next;
};

struct Bigram {
  float score;
  int32_t left, right;
  std::size_t size;
  // std::priority_queue pops the largest: the highest score, then the leftmost.
  bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
};

}  // namespace

Spm::Spm() {
  for (auto& b : byte_token) b = -1;
}

void Spm::tokenize_fragment(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const {
  std::string s;
  s.reserve(text.size() + 8);
  if (prefix_space) s += kSpace;
  for (char c : text) {
    if (c == ' ') s += kSpace;
    else s += c;
  }
  if (s.empty()) return;
  std::vector<Symbol> sym;
  sym.reserve(s.size());
  for (std::size_t off = 0; off < s.size();) {
    const std::size_t n = std::min(lead_len(static_cast<unsigned char>(s[off])), s.size() - off);
    const auto i = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{off, n, i - 1, off + n == s.size() ? -1 : i + 1});
    off += n;
  }
  std::priority_queue<Bigram> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::size_t size = sym[left].n + sym[right].n;
    auto it = by_text.find(std::string_view(s).substr(sym[left].start, size));
    if (it == by_text.end()) return;
    queue.push(Bigram{scores[static_cast<std::size_t>(it->second)], left, right, size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    // Stale: one side was merged since this pair was queued.
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  // Every merged symbol spells a token (a pair is queued only then), so a symbol that is no token is one
  // character that is not in the vocabulary: its bytes' tokens stand for it. (llama.cpp's re-segmentation of
  // merged symbols never applies for the same reason.)
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    const std::string_view t = std::string_view(s).substr(sym[i].start, sym[i].n);
    if (auto it = by_text.find(t); it != by_text.end()) {
      out.push_back(it->second);
      continue;
    }
    for (unsigned char c : t)
      if (byte_token[c] >= 0) out.push_back(byte_token[c]);
  }
}

void Spm::encode(std::string_view text, std::vector<int32_t>& out) const {
  struct Fragment {
    std::size_t off, len;
    int32_t id;  // -1: raw text
  };
  std::vector<Fragment> frags, next;
  if (!text.empty()) frags.push_back(Fragment{0, text.size(), -1});
  // llama.cpp's tokenizer_st_partition: one special token at a time, longest first, every occurrence of it in
  // every raw fragment left so far.
  for (const Special& sp : specials) {
    if (sp.text.empty()) continue;
    next.clear();
    for (const Fragment& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view window = text.substr(0, f.off + f.len);
      std::size_t pos = f.off;
      for (std::size_t m; (m = window.find(sp.text, pos)) != std::string_view::npos;) {
        if (m > pos) next.push_back(Fragment{pos, m - pos, -1});
        next.push_back(Fragment{m, sp.text.size(), sp.id});
        pos = m + sp.text.size();
      }
      if (pos < f.off + f.len) next.push_back(Fragment{pos, f.off + f.len - pos, -1});
    }
    frags.swap(next);
  }
  bool prev_special = true;  // the text's start counts as following a special token
  for (const Fragment& f : frags) {
    if (f.id >= 0) {
      out.push_back(f.id);
      prev_special = true;
      continue;
    }
    tokenize_fragment(text.substr(f.off, f.len), add_space_prefix && prev_special, out);
    prev_special = false;
  }
}

}  // namespace hylo::tok
