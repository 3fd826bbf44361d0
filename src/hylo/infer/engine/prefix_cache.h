// Prefix reuse for hybrids (ENGINE-NOTES.md section 9.1): an entry remembers a token prefix that ends on a page
// boundary, the pages holding its latent / KV entries (shared, reference-counted) and a snapshot of every recurrent
// layer's state taken when a sequence stood exactly at that boundary. A new prompt that starts with an entry's
// tokens takes the pages and a copy of the snapshot and computes only the rest. Because entries end on page
// boundaries, shared pages are full and never written again, so no copy-on-write is needed.
//
// Entries are keyed by a hash chained page by page and verified against their stored tokens (a hash collision is a
// miss, never a wrong answer). Eviction is least-recently-used; it returns pages and snapshot slots to the pools.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "hylo/infer/engine/cache_pool.h"

namespace hylo::engine {

class PrefixCache {
 public:
  PrefixCache(CachePools& pools, bool needs_snapshots) : pools_(pools), needs_snapshots_(needs_snapshots) {}
  ~PrefixCache();

  struct Hit {
    int64_t length = 0;            // tokens covered (a multiple of the page size); 0 = miss
    std::vector<int32_t> pages;    // already referenced for the caller
    int64_t snapshot = -1;         // slot to copy the state from (-1 without recurrent layers)
  };
  // The longest cached prefix of tokens[0, limit) (limit <= tokens.size()). The returned pages carry one new
  // reference each, owned by the caller.
  Hit lookup(std::span<const int64_t> tokens, int64_t limit);

  // Remembers tokens[0, length) (length a multiple of the page size) with pages[0, length / page_size) and the
  // state in live slot `slot`. Takes its own page references and a snapshot slot (evicting the least recently used
  // entry if none is free); does nothing when the prefix is cached already or no snapshot slot can be had.
  void insert(std::span<const int64_t> tokens, int64_t length, std::span<const int32_t> pages, int64_t slot);

  // Frees the least recently used entry; false when empty.
  bool evict_one();
  void clear();
  int64_t size() const { return static_cast<int64_t>(entries_.size()); }

 private:
  struct Entry {
    std::vector<int64_t> tokens;
    std::vector<int32_t> pages;
    int64_t snapshot = -1;
    uint64_t last_used = 0;
  };
  // Keys of the prefixes tokens[0, k * page_size) for k = 1 .. length / page_size, from one pass over the tokens.
  std::vector<uint64_t> boundary_keys(std::span<const int64_t> tokens, int64_t length) const;
  void drop(std::unordered_map<uint64_t, Entry>::iterator it);

  CachePools& pools_;
  bool needs_snapshots_;
  uint64_t clock_ = 0;
  std::unordered_map<uint64_t, Entry> entries_;
};

}  // namespace hylo::engine
