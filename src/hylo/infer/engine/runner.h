// Runs one step's plan through the model: packs the scheduled tokens of every sequence into one row [1, N],
// builds the StepBatch every layer reads (positions, cache rows, slots, page tables, lengths), runs embedding,
// the blocks with each mixer in its engine form (engine_layer.h), the final norm, and the LM head on just the rows
// whose logits are wanted.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/cuda_graphs.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/infer/engine/scheduler.h"
#include "hylo/model/causal_lm.h"

namespace hylo::engine {

struct StepOutput {
  at::Tensor logits;  // [R, V] fp32 on the model's device, the wanted rows
  // Per chunk in plan order (decode chunks, then prefill chunks): the row of its first position in `logits` when
  // every position's logits were wanted, else -1; and the row of its last position, or -1 when not wanted.
  std::vector<int64_t> first_row, last_row;
};

class Runner {
 public:
  // With bucketed decode (CUDA graphs on a CUDA device, or options.bucketed_decode_on_cpu) the runner reserves the
  // pools' scratch page and slot for padding rows.
  Runner(CausalLM& model, CachePools& pools, const EngineOptions& options);
  ~Runner();

  // Runs the plan; the caller advances each sequence's num_cached afterwards. A decode-only plan goes through the
  // bucketed decode path (DecodeGraphs: one graph replay per step on CUDA).
  StepOutput run(const StepPlan& plan);
  int64_t graph_replays() const { return graphs_ ? graphs_->replays() : 0; }
  std::pair<int64_t, int32_t> scratch() const { return scratch_; }  // {slot, page} set aside, -1 if none

 private:
  StepBatch build_batch(const StepPlan& plan, std::vector<int64_t>& ids) const;
  at::Tensor forward_logits(const at::Tensor& ids, const StepBatch& batch);  // every row: [N, V]
  StepOutput run_decode_bucketed(const StepPlan& plan);

  CausalLM& model_;
  CachePools& pools_;
  std::vector<std::unique_ptr<EngineLayer>> layers_;
  bool bucketed_ = false;            // decode steps through DecodeGraphs
  bool use_graphs_ = false;          // ... captured as CUDA graphs
  int64_t max_graph_batch_ = 0;
  std::pair<int64_t, int32_t> scratch_{-1, -1};
  std::unique_ptr<DecodeGraphs> graphs_;
  int64_t graph_pages_ = 0;          // page-table width of graphs_ (a power of two, grown on demand)
};

// Whether the chunk's every position needs logits (prompt log-probs or kept logits), and whether its last does
// (the chunk reaches the end of the sequence's tokens, so the next token is chosen from it).
bool wants_all_rows(const ScheduledChunk& chunk);
// Whether decode steps go through DecodeGraphs' buckets: CUDA graphs on a CUDA device, or the eager bucketed path
// that tests ask for on the CPU. The engine sizes its pools (one scratch slot more) by the same answer.
bool uses_bucketed_decode(const CausalLM& model, const EngineOptions& options);
bool wants_last_row(const ScheduledChunk& chunk);

}  // namespace hylo::engine
