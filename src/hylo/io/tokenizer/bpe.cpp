// The BPE model: a word's characters become initial symbols (with byte fallback and unknown-token fusing as
// `tokenizers`' BPE::merge_word), then adjacent pairs merge lowest rank first, leftmost on ties, using a
// binary heap over a doubly linked list of symbols (tokenizers' Word::merge_all), so a word of n symbols
// costs O(n log n). Results of short words are cached.
#include <queue>

#include "hylo/io/tokenizer/components.h"

namespace hylo::tok {
namespace {
constexpr std::size_t kMaxCachedWordBytes = 256;
constexpr std::size_t kMaxCacheEntries = 1 << 18;

struct Symbol {
  int32_t id;
  int32_t prev, next;
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std::priority_queue pops the largest: make the lowest rank, then the leftmost position, the largest.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};
}  // namespace

Bpe::Bpe() {
  for (auto& b : byte_token) b = -1;
}

void Bpe::merge_symbols(std::vector<int32_t>& ids) const {
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;
  std::vector<Symbol> sym(static_cast<std::size_t>(n));
  for (int32_t i = 0; i < n; ++i) sym[i] = Symbol{ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::vector<Candidate> heap_storage;
  heap_storage.reserve(static_cast<std::size_t>(n));
  std::priority_queue<Candidate> heap(std::less<Candidate>(), std::move(heap_storage));
  for (int32_t i = 0; i + 1 < n; ++i) {
    auto it = merges.find(pair_key(ids[i], ids[i + 1]));
    if (it != merges.end()) heap.push(Candidate{it->second.rank, i, it->second.new_id});
  }
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    // A stale entry: the pair at this position changed since it was queued.
    auto it = merges.find(pair_key(left.id, right.id));
    if (it == merges.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = top.pos;
    if (left.prev >= 0) {
      auto p = merges.find(pair_key(sym[left.prev].id, left.id));
      if (p != merges.end()) heap.push(Candidate{p->second.rank, left.prev, p->second.new_id});
    }
    if (left.next >= 0) {
      auto q = merges.find(pair_key(left.id, sym[left.next].id));
      if (q != merges.end()) heap.push(Candidate{q->second.rank, top.pos, q->second.new_id});
    }
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

void Bpe::tokenize_uncached(std::string_view w, std::vector<int32_t>& out) const {
  std::vector<int32_t> ids;
  ids.reserve(w.size());
  std::optional<int32_t> unk_id;
  if (unk_token) {
    auto it = vocab.find(*unk_token);
    if (it != vocab.end()) unk_id = it->second;
  }
  bool pending_unk = false;
  std::string s;
  std::size_t i = 0;
  while (i < w.size()) {
    const std::size_t b = i;
    i += utf8_len(static_cast<unsigned char>(w[i]));
    const bool first = b == 0, last = i >= w.size();
    s.assign(w.substr(b, i - b));
    if (!first && !continuing_subword_prefix.empty()) s.insert(0, continuing_subword_prefix);
    if (last && !end_of_word_suffix.empty()) s += end_of_word_suffix;
    if (auto it = vocab.find(s); it != vocab.end()) {
      if (pending_unk) {
        ids.push_back(*unk_id);
        pending_unk = false;
      }
      ids.push_back(it->second);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_token[c] >= 0;
      if (all) {
        for (unsigned char c : s) ids.push_back(byte_token[c]);
        continue;
      }
    }
    if (unk_id) {
      // Consecutive unknown characters become one unknown token when fuse_unk is set.
      if (pending_unk && !fuse_unk) ids.push_back(*unk_id);
      pending_unk = true;
    }
    // Without an unknown token the character is dropped, as tokenizers does.
  }
  if (pending_unk) ids.push_back(*unk_id);
  merge_symbols(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t before = out.size();
  tokenize_uncached(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(before), out.end()));
  }
}

void Bpe::clear_cache() const {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  cache_.clear();
}

}  // namespace hylo::tok
