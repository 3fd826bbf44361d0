#include "hylo/infer/engine/scheduler.h"

#include <algorithm>

namespace hylo::engine {

Scheduler::Scheduler(CachePools& pools, PrefixCache* prefix, const EngineOptions& options)
    : pools_(pools), prefix_(prefix), options_(options) {
  const int64_t ps = pools_.page_size();
  chunk_limit_ = std::max(ps, (options_.prefill_chunk / ps) * ps);
}

void Scheduler::enqueue(Sequence* seq) {
  seq->phase = SeqPhase::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::remove_waiting(Sequence* seq) {
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
}

int64_t Scheduler::chunk_for(const Sequence& seq, int64_t budget) const {
  const int64_t ps = pools_.page_size();
  const int64_t total = static_cast<int64_t>(seq.tokens.size());
  int64_t end = seq.num_cached + std::min({seq.pending(), budget, chunk_limit_});
  if (end < total) {
    // Not the last chunk: end on a page boundary so every chunk after it starts a fresh page (prefix entries and
    // snapshots live on boundaries). A budget smaller than a page still makes progress, unaligned.
    const int64_t aligned = (end / ps) * ps;
    if (aligned > seq.num_cached) end = aligned;
  } else if (prefix_ != nullptr && !seq.wants_prompt_rows()) {
    // The last chunk: stop first at the last page boundary before the end, where the next turn can resume.
    const int64_t boundary = ((total - 1) / ps) * ps;
    if (boundary > seq.num_cached && boundary < end) end = boundary;
  }
  return end - seq.num_cached;
}

bool Scheduler::ensure_pages(Sequence& seq, int64_t tokens) {
  if (!pools_.has_paged_layers()) return true;
  const int64_t ps = pools_.page_size();
  const int64_t need = (tokens + ps - 1) / ps - static_cast<int64_t>(seq.pages.size());
  if (need <= 0) return true;
  while (pools_.free_pages() < need)
    if (prefix_ == nullptr || !prefix_->evict_one()) return false;
  for (int64_t i = 0; i < need; ++i) seq.pages.push_back(*pools_.alloc_page());
  return true;
}

void Scheduler::free_resources(Sequence& seq) {
  for (int32_t p : seq.pages) pools_.unref_page(p);
  seq.pages.clear();
  if (seq.slot >= 0) pools_.free_slot(seq.slot);
  seq.slot = -1;
  seq.num_cached = 0;
}

void Scheduler::release(Sequence* seq) {
  free_resources(*seq);
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  remove_waiting(seq);
}

void Scheduler::preempt(Sequence& seq) {
  free_resources(seq);
  running_.erase(std::remove(running_.begin(), running_.end(), &seq), running_.end());
  seq.phase = SeqPhase::kWaiting;
  seq.result.preemptions += 1;
  ++preemptions;
  waiting_.push_front(&seq);
}

Sequence* Scheduler::newest_running() const {
  Sequence* newest = nullptr;
  for (Sequence* s : running_)
    if (newest == nullptr || s->admitted_at > newest->admitted_at) newest = s;
  return newest;
}

bool Scheduler::admit(Sequence& seq, int64_t budget, StepPlan& plan) {
  const bool recurrent = pools_.has_recurrent_layers();
  // max_sequences bounds the running set for every model, not only through the state slots of recurrent ones: a
  // Transformer would otherwise take requests while pages last, and decode batches past the largest CUDA-graph
  // bucket (sized from max_sequences) would run eagerly.
  if (static_cast<int64_t>(running_.size()) >= options_.max_sequences) return false;
  if (recurrent && pools_.free_slots() == 0) return false;
  PrefixCache::Hit hit;
  if (prefix_ != nullptr && !seq.wants_prompt_rows()) {
    // At least the last token is computed: its logits choose the next token.
    hit = prefix_->lookup(seq.tokens, static_cast<int64_t>(seq.tokens.size()) - 1);
    ++prefix_lookups;
    if (hit.length > 0) {
      seq.pages = hit.pages;
      seq.num_cached = hit.length;
    }
  }
  const int64_t count = chunk_for(seq, budget);
  if (count <= 0 || !ensure_pages(seq, seq.num_cached + count)) {
    free_resources(seq);  // gives the prefix pages back; the sequence stays first in line
    return false;
  }
  if (recurrent) {
    seq.slot = *pools_.alloc_slot();
    if (hit.snapshot >= 0) pools_.copy_slot(hit.snapshot, seq.slot);
  }
  if (hit.length > 0) {
    ++prefix_hits;
    prefix_tokens_reused += hit.length;
    seq.result.cached_prompt_tokens = std::max(seq.result.cached_prompt_tokens, std::min(hit.length, seq.prompt_len()));
  }
  seq.phase = SeqPhase::kRunning;
  seq.admitted_at = ++admissions_;
  running_.push_back(&seq);
  plan.prefill.push_back({&seq, count});
  return true;
}

StepPlan Scheduler::schedule() {
  for (;;) {
    StepPlan plan;
    int64_t budget = options_.max_step_tokens;

    // 1. Decode steps, oldest first; the newest sequences give way when pages run out.
    std::vector<Sequence*> order = running_;
    for (Sequence* s : order) {
      if (s->phase != SeqPhase::kRunning || s->pending() != 1 || budget == 0) continue;
      while (s->phase == SeqPhase::kRunning && !ensure_pages(*s, s->num_cached + 1)) preempt(*newest_running());
      if (s->phase != SeqPhase::kRunning) continue;
      plan.decode.push_back({s, 1});
      budget -= 1;
    }
    // 2. Prefills already under way.
    for (Sequence* s : running_) {
      if (s->pending() <= 1 || budget == 0) continue;
      const int64_t count = chunk_for(*s, budget);
      if (count <= 0 || !ensure_pages(*s, s->num_cached + count)) continue;
      plan.prefill.push_back({s, count});
      budget -= count;
    }
    // 3. Admissions in arrival order.
    while (budget > 0 && !waiting_.empty()) {
      Sequence* s = waiting_.front();
      if (!admit(*s, budget, plan)) break;
      waiting_.pop_front();
      budget -= plan.prefill.back().count;
    }
    if (!plan.empty() || running_.empty()) return plan;
    // Running sequences hold every page and none can move: the newest gives way, and we plan again.
    preempt(*newest_running());
  }
}

void Scheduler::remember_prefixes(const StepPlan& plan) {
  if (prefix_ == nullptr) return;
  const int64_t ps = pools_.page_size();
  auto visit = [&](const ScheduledChunk& c) {
    Sequence& s = *c.seq;
    if (s.phase != SeqPhase::kRunning || s.num_cached % ps != 0 || s.num_cached == 0) return;
    prefix_->insert(s.tokens, s.num_cached, s.pages, s.slot);
  };
  for (const auto& c : plan.decode) visit(c);
  for (const auto& c : plan.prefill) visit(c);
}

}  // namespace hylo::engine
