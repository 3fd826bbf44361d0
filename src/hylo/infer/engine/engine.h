// The inference engine (ENGINE-NOTES.md section 10): many sequences at once over one CausalLM, with
//   - memory pools sized from a budget: a paged latent cache for MLA layers, a paged KV cache for GQA layers
//     (teachers and baselines run in the same engine), and fixed state slots for GDN / Mamba2 layers;
//   - chunked prefill that carries recurrent and conv state exactly across chunks;
//   - continuous batching: every step mixes one decode token of each running sequence with prefill chunks of
//     others, up to a token budget; when pages run out the newest sequence is preempted (its pages and slot are
//     freed and it is recomputed later from its tokens, sampler state kept), so nothing is lost;
//   - prefix reuse for hybrids: at page-aligned chunk ends the recurrent state is snapshotted, and a new request
//     whose prompt starts with a cached run of full pages shares those pages and restores the snapshot;
//   - per-sequence sampling parameters, cancellation, and statistics (pool use, prefix hit rate).
//
// The engine is single-threaded: submit() / cancel() / step() from one thread (serve/ wraps it in a loop
// thread). Every result equals a full-forward recomputation of the same tokens up to rounding (tests/cpp/engine).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hylo/infer/sampler.h"
#include "hylo/model/causal_lm.h"

namespace hylo::engine {

struct EngineOptions {
  int64_t page_size = 64;            // tokens per page of the MLA latent / GQA KV cache
  // Memory for the pools (pages, state slots, snapshots). memory_bytes > 0 wins; otherwise on CUDA the pools get
  // gpu_memory_fraction of the device memory minus what is in use and minus activation_reserve_bytes; on the CPU
  // memory_bytes must be given (the CLI defaults it to 4 GiB).
  int64_t memory_bytes = 0;
  double gpu_memory_fraction = 0.9;
  int64_t activation_reserve_bytes = 0;  // 0: derived from max_step_tokens and the model's widths
  int64_t max_sequences = 64;        // live state slots = the most sequences running at once
  int64_t max_step_tokens = 2048;    // tokens per engine step (decode tokens + prefill chunks)
  int64_t prefill_chunk = 2048;      // most prompt tokens of one sequence per step (rounded down to pages)
  int64_t prefix_snapshots = 0;      // recurrent-state snapshot slots for prefix reuse; 0 disables prefix reuse
  at::ScalarType state_dtype = at::kFloat;  // GDN / Mamba2 recurrent state (conv state keeps the model dtype)
  bool cuda_graphs = true;           // capture decode steps per batch-size bucket (CUDA only)
  bool bucketed_decode_on_cpu = false;  // tests: run the graphs' bucketed decode path (padding rows, scratch
                                        // slot and page, device-only step batch) eagerly on the CPU

  void validate() const;             // throws hylo::Error naming the field
};

// How the pools were sized; available before any request runs.
struct MemoryPlan {
  int64_t budget_bytes = 0;          // what the pools may use
  int64_t bytes_per_page = 0;        // all paged layers, page_size tokens
  int64_t bytes_per_token = 0;       // bytes_per_page / page_size
  int64_t bytes_per_slot = 0;        // all recurrent layers' conv + recurrent state of one sequence
  int64_t num_pages = 0;
  int64_t num_slots = 0;             // live slots (max_sequences) + snapshot slots
  int64_t pool_bytes = 0;            // actually allocated
  int64_t max_tokens_per_sequence = 0;  // the longest context one sequence can hold (all pages); for a model
                                        // without paged layers, unlimited (INT64_MAX)
  std::string describe() const;      // one line for logs and errors
};

enum class FinishReason { kNone, kEos, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);  // "", "eos", "length", "cancelled", "error"

struct Request {
  std::vector<int64_t> prompt;       // token ids, template and BOS already applied; at least one
  SamplingParams sampling;
  int64_t max_new_tokens = 256;
  std::vector<int64_t> stop_ids;     // generation ends after emitting one of these (included in the output)
  int64_t top_logprobs = 0;          // also report the k most likely tokens at each generated position
  bool prompt_logprobs = false;      // report log p(prompt[i] | prompt[<i]) for i >= 1 (perplexity)
  bool keep_logits = false;          // keep the fp32 logits row of every position (tests; memory T x V)
};

using SeqId = int64_t;

struct TokenLogprob {
  int64_t token = 0;
  double logprob = 0.0;
};

// One generated token, or the end of a sequence (token < 0 then, finish != kNone).
struct Event {
  SeqId seq = 0;
  int64_t token = -1;
  double logprob = 0.0;                  // log p of the chosen token under the unprocessed logits
  std::vector<TokenLogprob> top;         // top_logprobs alternatives
  FinishReason finish = FinishReason::kNone;
  std::string error;                     // with kError
};

// Everything known about a finished (or running) sequence.
struct SequenceResult {
  std::vector<int64_t> output;           // generated ids
  std::vector<double> prompt_logprobs;   // prompt.size() - 1 values when requested
  // keep_logits: [n, V] fp32 on the CPU, row p = the logits after tokens[0..p] (prompt then generated), for every
  // position the model ran: all but the last generated token, as a full forward over them would give.
  at::Tensor logits;
  FinishReason finish = FinishReason::kNone;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;      // prompt tokens taken from the prefix cache instead of computed
  int64_t preemptions = 0;
  double time_to_first_token_s = 0.0;
  double decode_seconds = 0.0;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t waiting = 0, running = 0;
  int64_t pages_total = 0, pages_used = 0;    // pages held by live sequences or the prefix cache
  int64_t slots_total = 0, slots_used = 0;
  int64_t snapshots_total = 0, snapshots_used = 0;
  int64_t prefix_lookups = 0, prefix_hits = 0;
  int64_t prefix_tokens_reused = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;
  int64_t cuda_graph_replays = 0;
  double prefix_hit_rate() const { return prefix_lookups ? double(prefix_hits) / double(prefix_lookups) : 0.0; }
};

class Engine {
 public:
  // The model must outlive the engine. Allocates the pools now; throws hylo::Error when not even one page and one
  // slot fit the budget.
  Engine(CausalLM& model, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const MemoryPlan& memory_plan() const;
  const EngineOptions& options() const;
  CausalLM& model();

  // Queues a request. Throws hylo::Error (nothing queued) when the request is malformed (empty prompt, id outside
  // the vocabulary, bad sampling parameters) or can never fit: prompt + max_new_tokens over
  // memory_plan().max_tokens_per_sequence, with both numbers in the message.
  SeqId submit(Request request);
  // Ends a sequence at the next step boundary with kCancelled (its pages and slot are freed). Unknown or finished
  // ids are ignored.
  void cancel(SeqId seq);

  bool has_work() const;  // anything waiting or running
  // One engine step: schedules, runs the model once over the batch, samples. Returns the step's events in order.
  std::vector<Event> step();
  // Runs steps until no work is left; calls on_event (if given) for each event.
  void run_until_done(const std::function<void(const Event&)>& on_event = {});

  // The result of a sequence (running or finished). Finished results are kept until release(seq).
  const SequenceResult& result(SeqId seq) const;
  void release(SeqId seq);

  EngineStats stats() const;

  // Drops every prefix-cache entry (pages and snapshots return to the pools).
  void clear_prefix_cache();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The pool bytes an Engine(model, options) needs so that `sequences` sequences of `tokens_per_sequence` tokens each
// run at once, counting options.prefix_snapshots and what the engine sets aside for itself (the scratch slot and
// page of bucketed decode); options.memory_bytes is ignored. For callers that size the pools to a known workload.
int64_t pool_bytes_needed(const CausalLM& model, EngineOptions options, int64_t tokens_per_sequence, int64_t sequences);

// Convenience for single-sequence callers and tests: runs one request to completion.
SequenceResult run_one(Engine& engine, Request request, const std::function<void(const Event&)>& on_event = {});

}  // namespace hylo::engine
