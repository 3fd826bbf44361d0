// The engine's scheduling policy for one step (continuous batching):
//   1. every running sequence with exactly one pending token decodes it (oldest first); when its next page cannot
//      be had, prefix-cache entries are evicted, then the newest running sequence is preempted (pages and slot
//      freed, back to the front of the queue, recomputed from its tokens later; its sampler is kept);
//   2. running sequences still in prefill get their next chunk (oldest first) from the remaining token budget;
//   3. waiting sequences are admitted in order while the budget, a free slot and pages allow, each first looking up
//      the prefix cache.
// Prefill chunks end on page boundaries except at the end of a sequence's tokens; with prefix reuse the last full
// page boundary of the tokens also ends a chunk, so a snapshot can be taken there for the next turn.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/prefix_cache.h"
#include "hylo/infer/engine/sequence.h"

namespace hylo::engine {

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int64_t count = 0;  // tokens [seq->num_cached, seq->num_cached + count) run this step
};

struct StepPlan {
  std::vector<ScheduledChunk> decode;   // count 1 each
  std::vector<ScheduledChunk> prefill;
  bool empty() const { return decode.empty() && prefill.empty(); }
};

class Scheduler {
 public:
  // prefix may be null (no prefix reuse).
  Scheduler(CachePools& pools, PrefixCache* prefix, const EngineOptions& options);

  void enqueue(Sequence* seq);                 // to the back of the waiting queue
  StepPlan schedule();
  void release(Sequence* seq);                 // a finished or cancelled sequence gives back pages and slot
  // After a step: remembers each sequence's state at a page boundary it reached (prefix reuse).
  void remember_prefixes(const StepPlan& plan);

  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }
  void remove_waiting(Sequence* seq);

  int64_t preemptions = 0, prefix_lookups = 0, prefix_hits = 0, prefix_tokens_reused = 0;

 private:
  int64_t chunk_for(const Sequence& seq, int64_t budget) const;
  bool ensure_pages(Sequence& seq, int64_t tokens);   // allocates pages up to `tokens`, evicting prefix entries
  void free_resources(Sequence& seq);
  void preempt(Sequence& seq);
  Sequence* newest_running() const;
  bool admit(Sequence& seq, int64_t budget, StepPlan& plan);

  CachePools& pools_;
  PrefixCache* prefix_;
  EngineOptions options_;
  int64_t chunk_limit_ = 0;   // prefill_chunk rounded down to whole pages (at least one page)
  int64_t admissions_ = 0;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // in admission order
};

}  // namespace hylo::engine
