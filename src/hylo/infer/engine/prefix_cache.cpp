#include "hylo/infer/engine/prefix_cache.h"

#include <algorithm>

namespace hylo::engine {

namespace {
// FNV-1a over the token ids, page by page: the key of a prefix only depends on its tokens.
uint64_t mix(uint64_t h, int64_t token) {
  auto v = static_cast<uint64_t>(token);
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xffu;
    h *= 1099511628211ull;
  }
  return h;
}
}  // namespace

PrefixCache::~PrefixCache() { clear(); }

std::vector<uint64_t> PrefixCache::boundary_keys(std::span<const int64_t> tokens, int64_t length) const {
  // The key of a prefix depends only on its tokens: a running FNV-1a over them, closed by the length.
  const int64_t ps = pools_.page_size();
  std::vector<uint64_t> keys;
  uint64_t h = 14695981039346656037ull;
  for (int64_t i = 0; i < (length / ps) * ps; ++i) {
    h = mix(h, tokens[static_cast<size_t>(i)]);
    if ((i + 1) % ps == 0) keys.push_back(mix(h, i + 1));
  }
  return keys;
}

PrefixCache::Hit PrefixCache::lookup(std::span<const int64_t> tokens, int64_t limit) {
  Hit hit;
  const int64_t ps = pools_.page_size();
  limit = std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()));
  const std::vector<uint64_t> keys = boundary_keys(tokens, limit);  // longest first below
  for (int64_t length = (limit / ps) * ps; length > 0; length -= ps) {
    auto it = entries_.find(keys[static_cast<size_t>(length / ps - 1)]);
    if (it == entries_.end()) continue;
    Entry& e = it->second;
    if (static_cast<int64_t>(e.tokens.size()) != length || !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin()))
      continue;  // a hash collision: not this prefix
    e.last_used = ++clock_;
    hit.length = length;
    hit.pages = e.pages;
    for (int32_t p : hit.pages) pools_.ref_page(p);
    hit.snapshot = e.snapshot;
    return hit;
  }
  return hit;
}

void PrefixCache::insert(std::span<const int64_t> tokens, int64_t length, std::span<const int32_t> pages,
                         int64_t slot) {
  const int64_t ps = pools_.page_size();
  if (length <= 0 || length % ps != 0 || static_cast<int64_t>(tokens.size()) < length ||
      static_cast<int64_t>(pages.size()) < length / ps)
    return;
  const uint64_t key = boundary_keys(tokens, length).back();
  auto found = entries_.find(key);
  if (found != entries_.end()) {
    found->second.last_used = ++clock_;
    return;  // cached already (or a collision, which keeps the older entry)
  }
  Entry e;
  if (needs_snapshots_) {
    auto snap = pools_.alloc_snapshot();
    while (!snap && evict_one()) snap = pools_.alloc_snapshot();
    if (!snap) return;
    e.snapshot = *snap;
    pools_.copy_slot(slot, e.snapshot);
  }
  e.tokens.assign(tokens.begin(), tokens.begin() + length);
  e.pages.assign(pages.begin(), pages.begin() + length / ps);
  for (int32_t p : e.pages) pools_.ref_page(p);
  e.last_used = ++clock_;
  entries_.emplace(key, std::move(e));
}

void PrefixCache::drop(std::unordered_map<uint64_t, Entry>::iterator it) {
  for (int32_t p : it->second.pages) pools_.unref_page(p);
  if (it->second.snapshot >= 0) pools_.free_snapshot(it->second.snapshot);
  entries_.erase(it);
}

bool PrefixCache::evict_one() {
  if (entries_.empty()) return false;
  auto oldest = entries_.begin();
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->second.last_used < oldest->second.last_used) oldest = it;
  drop(oldest);
  return true;
}

void PrefixCache::clear() {
  while (!entries_.empty()) drop(entries_.begin());
}

}  // namespace hylo::engine
