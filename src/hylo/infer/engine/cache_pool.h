// The engine's memory (ENGINE-NOTES.md section 10, "cache layout"): one pool of pages shared by every paged layer
// (a page id names the same token range in each MLA latent / GQA KV tensor), and one pool of state slots shared by
// every recurrent layer (a slot id names one sequence's conv + recurrent state in each GDN / Mamba2 layer). Slots
// [0, max_sequences) are live sequences; the rest are prefix-cache snapshots. Both pools are sized once, from the
// memory budget, before any request runs (MemoryPlan), so a request that cannot fit is refused up front.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "hylo/config/model_config.h"
#include "hylo/infer/engine/engine.h"
#include "hylo/model/causal_lm.h"

namespace hylo::engine {

// One layer's share of the pools. Paged kinds (mla, gqa) fill the page tensors; recurrent kinds (gdn, mamba2) hold
// the mixer's own state object made for num_slots "batch rows" (GatedDeltaNetState / Mamba2State), so the slot
// tensors have the mixer's shapes with dim 0 = slot.
struct LayerCache {
  MixerKind kind = MixerKind::kGqa;
  at::Tensor pages;                  // mla: [num_pages, page_size, Rkv + Dr] latent c_kv then rotated k_pe
  at::Tensor k_pages, v_pages;       // gqa: [num_pages, page_size, Hkv, Dh] each, RoPE already applied to k
  std::unique_ptr<MixerState> slots; // gdn / mamba2: state for num_slots rows (recurrent in options.state_dtype)
  std::vector<at::Tensor> slot_tensors;  // every tensor of `slots` (dim 0 = slot), for copies and zeroing
};

class CachePools {
 public:
  // The sizes the pools would get for this model on `device` (no allocation). Throws hylo::Error when the budget
  // holds less than one page plus one live slot, saying how much is needed.
  static MemoryPlan plan(const CausalLM& model, const EngineOptions& options);

  // Plans and allocates.
  CachePools(CausalLM& model, const EngineOptions& options);

  const MemoryPlan& plan() const { return plan_; }
  int64_t page_size() const { return page_size_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  LayerCache& layer(int64_t i) { return layers_.at(static_cast<size_t>(i)); }
  bool has_paged_layers() const { return plan_.bytes_per_page > 0; }
  bool has_recurrent_layers() const { return plan_.bytes_per_slot > 0; }

  // Pages are reference-counted: a prefix-cache entry and the sequences that reuse it share pages.
  std::optional<int32_t> alloc_page();     // refcount 1, or nullopt when none is free
  void ref_page(int32_t page);
  void unref_page(int32_t page);           // back to the free list at refcount 0
  int64_t free_pages() const { return static_cast<int64_t>(free_pages_.size()); }
  int32_t page_refs(int32_t page) const { return page_refs_.at(static_cast<size_t>(page)); }

  // Live slots [0, max_sequences) and snapshot slots [max_sequences, num_slots).
  std::optional<int64_t> alloc_slot();     // zeroed
  void free_slot(int64_t slot);
  std::optional<int64_t> alloc_snapshot();
  void free_snapshot(int64_t slot);
  int64_t free_slots() const { return static_cast<int64_t>(free_slots_.size()); }
  int64_t free_snapshots() const { return static_cast<int64_t>(free_snapshots_.size()); }
  int64_t live_slots() const { return live_slots_; }
  int64_t snapshot_slots() const { return plan_.num_slots - live_slots_; }

  // One page and one live slot set aside for the padding rows of bucketed decode steps (cuda_graphs.h): padding may
  // write them, nothing reads them. max_tokens_per_sequence shrinks by the page. Returns {slot, page}; -1 for a
  // pool the model does not have. Call once, before any request.
  std::pair<int64_t, int32_t> reserve_scratch();

  void copy_slot(int64_t from, int64_t to);  // every recurrent layer's state
  void zero_slot(int64_t slot);

 private:
  MemoryPlan plan_;
  int64_t page_size_ = 0;
  int64_t live_slots_ = 0;
  std::vector<LayerCache> layers_;
  std::vector<int32_t> free_pages_;        // a stack; lowest ids handed out first
  std::vector<int32_t> page_refs_;
  std::vector<int64_t> free_slots_, free_snapshots_;
};

}  // namespace hylo::engine
