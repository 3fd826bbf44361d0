// `hylo bench`: speed and memory of models on the inference engine (engine/engine.h), a hybrid and its Transformer
// teacher in the same engine and the same run (issue 9, docs/benchmarks.md):
//   - context sweep, batch 1: a random prompt of L tokens is prefilled, then decode_tokens are decoded greedily.
//     prefill = time from submit to the first token; TPOT = the median wall time of the decode steps (medians keep
//     one-off costs such as CUDA-graph capture out); memory = the pool bytes the sequence holds (its pages and its
//     state slot) and, on CUDA, the caching allocator's peak (weights + pools + activations) during the run. The
//     engine of each point gets exactly the pools that point needs, so the peak is what serving that context costs.
//   - batch sweep: B sequences of a random prompt_tokens prompt each, submitted together; aggregate decode tok/s =
//     B / the median time of the steps in which all B sequences decode (no prefill in them).
//   A point whose pools exceed the budget (--gpu-memory / --memory-bytes) is not run: it is reported as not fitting,
//   with the largest context (or batch) that does. Any other failure (e.g. activations out of memory) is recorded
//   on the point and the sweep goes on.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hylo/infer/engine/engine.h"
#include "hylo/model/causal_lm.h"

namespace hylo::bench {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct BenchReport;
struct ModelReport;

struct BenchOptions {
  std::vector<int64_t> contexts;       // prompt lengths of the batch-1 sweep
  int64_t decode_tokens = 64;          // tokens decoded after each prompt (and timed steps per batch size)
  std::vector<int64_t> batches;        // concurrent sequences of the batch sweep (empty: no batch sweep)
  int64_t batch_prompt_tokens = 4096;  // prompt length of every sequence in the batch sweep
  // The teacher's sweeps when they should differ (a Transformer at 1M tokens can take longer than the whole run);
  // unset: the same as the others'.
  std::optional<std::vector<int64_t>> teacher_contexts, teacher_batches;
  engine::EngineOptions engine;        // page size, budget (memory_bytes / gpu_memory_fraction), chunking, graphs
  uint64_t seed = 0;                   // random prompts
  bool progress = true;                // progress bars and one line per point on stderr
  // Before a model's first point, one untimed request (a prompt of min(prefill chunk, smallest context) tokens and
  // a few decode steps) takes the process's one-time costs (kernel module loads, cuBLAS handles and heuristics,
  // first graph captures), which would otherwise land in whichever point comes first.
  bool warmup = true;
  // Called after every point with what is known so far (the CLI rewrites its files, so that a run cut short by a
  // time limit keeps its finished points).
  std::function<void(const BenchReport&)> on_update;
  std::function<void(const ModelReport&)> on_point;  // bench_model's hook (run_bench sets it)
};

// One model to benchmark. make() builds it (weights loaded or drawn) when its turn comes, so that only one model
// occupies the device at a time and each gets the same free memory.
struct BenchModelSource {
  std::string name;                    // e.g. "smollm2-135m-6mla24gdn (random)"
  std::string role;                    // "hybrid", "teacher" or "model"
  std::function<std::unique_ptr<CausalLM>()> make;
};

struct ContextPoint {
  int64_t context = 0;
  bool fits = false;
  int64_t max_context = 0;             // the longest prompt that fits with decode_tokens more (also when it fits)
  double prefill_seconds = kNaN;       // submit -> first token
  double tpot_ms = kNaN;               // median decode step
  double tpot_mean_ms = kNaN;
  int64_t decoded = 0;                 // tokens generated
  int64_t sequence_bytes = 0;          // pool bytes held by the sequence at its end (pages + one state slot)
  int64_t pool_bytes = 0;              // what the point's engine allocated
  double peak_bytes = kNaN;            // CUDA caching allocator peak during the point; NaN on the CPU
  std::string error;                   // non-empty: the point failed (the message)
  double prefill_tokens_per_second() const { return context / prefill_seconds; }
};

struct BatchPoint {
  int64_t batch = 0;
  int64_t prompt_tokens = 0;
  bool fits = false;
  int64_t max_batch = 0;               // most sequences of this size that fit the budget
  int64_t timed_steps = 0;             // steps with every sequence decoding
  double step_ms = kNaN;               // median of those
  double decode_tokens_per_second = kNaN;  // batch / step time
  double peak_bytes = kNaN;
  std::string error;
};

struct ModelReport {
  std::string name, role;
  std::string layers;                  // "4 mla + 12 gdn"
  int64_t parameters = 0;
  int64_t bytes_per_token = 0;         // the engine's pools: all paged layers, one token
  int64_t bytes_per_token_formula = 0; // sum over paged layers of LayerFootprint::kv_elems_per_token x cache dtype
  int64_t bytes_per_slot = 0;          // one sequence's recurrent + conv state, all recurrent layers
  int64_t page_size = 0;
  int64_t budget_bytes = 0;            // pools may use (the same rule for every model)
  int64_t max_context = 0;             // longest single sequence in the budget (INT64_MAX: no paged layers)
  double weight_bytes = kNaN;          // CUDA: allocated after building the model; NaN on the CPU
  int64_t warmup_tokens = 0;           // the warm-up's prompt (0: none ran)
  double warmup_prefill_seconds = kNaN;  // its prefill, cold: the one-time costs plus that prompt's own time
  std::vector<ContextPoint> contexts;
  std::vector<BatchPoint> batches;
};

struct BenchReport {
  std::string device;                  // "cpu" or "cuda:0 NVIDIA H200 (139.7 GiB)"
  std::string dtype;
  std::string command;                 // the command line
  std::string date;                    // UTC, ISO 8601
  BenchOptions options;
  std::vector<ModelReport> models;
};

// Runs every sweep for each model in order. Throws hylo::Error only for bad options (empty contexts and batches,
// decode_tokens < 2, ...); failures of single points are recorded on them.
BenchReport run_bench(const std::vector<BenchModelSource>& models, const BenchOptions& options);

// The sweeps for one model already built (tests and run_bench).
ModelReport bench_model(CausalLM& model, const std::string& name, const std::string& role, const BenchOptions& options);

// "4K,8K,128K,1M,2M" or "4096,8192": K = 1024, M = 1024^2 (G too); every count positive. Errors name `option`.
std::vector<int64_t> parse_count_list(const std::string& text, const std::string& option);
std::string format_count(int64_t n);  // 4096 -> "4K", 1048576 -> "1M", 1000 -> "1000"

}  // namespace hylo::bench
