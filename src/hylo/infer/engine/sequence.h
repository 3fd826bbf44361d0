// One request's life inside the engine: its tokens (prompt, then generated), how many of them are already in the
// caches, the pages and slot holding them, its sampler, and the result being built.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "hylo/infer/engine/engine.h"
#include "hylo/infer/sampler.h"

namespace hylo::engine {

enum class SeqPhase { kWaiting, kRunning, kFinished };

struct Sequence {
  SeqId id = 0;
  Request request;
  std::vector<int64_t> tokens;      // prompt then generated ids
  int64_t num_cached = 0;           // tokens whose cache / state entries are written
  std::vector<int32_t> pages;       // page table (paged layers)
  int64_t slot = -1;                // live state slot (recurrent layers), -1 when not admitted
  std::unique_ptr<Sampler> sampler;
  SeqPhase phase = SeqPhase::kWaiting;
  bool cancel_requested = false;
  int64_t admitted_at = 0;          // admission order, for preempting the newest first
  SequenceResult result;
  std::vector<at::Tensor> logits_rows;  // keep_logits: [V] fp32 per position (filled in any order)
  std::chrono::steady_clock::time_point submitted, first_token;
  bool has_first_token = false;

  int64_t prompt_len() const { return static_cast<int64_t>(request.prompt.size()); }
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - num_cached; }
  // Whether this request needs logits at every prompt position (no prefix reuse then).
  bool wants_prompt_rows() const { return request.prompt_logprobs || request.keep_logits; }
};

}  // namespace hylo::engine
