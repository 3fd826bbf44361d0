// CUDA graphs for decode steps (ENGINE-NOTES.md section 10; issue 9): a decode step of a 30-layer hybrid is a few
// hundred small kernels, and launching them one by one from the host costs more than running them. DecodeGraphs
// captures the step once per batch-size bucket (1, 2, 4, 8, ..., max_batch) and replays it: per step the host
// packs the step's rows into one pinned buffer, one host-to-device copy fills the bucket's static input buffers
// (rows past the batch are padding), and one graph launch runs the whole step.
//
// What the captured step (the DecodeStepFn) must follow, because a graph replays the exact kernels, pointers and
// shapes recorded at capture and nothing of the host code runs again:
//   - read its per-step inputs only from the DecodeGraphInputs buffers it is given (ids, positions, slots,
//     write_rows, lengths, page_table), and otherwise only from tensors that outlive the graphs at fixed addresses
//     (weights, the cache pools); write its result into one tensor it returns ([Bk, ...]), which becomes the
//     bucket's static output, overwritten by every replay of that bucket;
//   - no host synchronisation and no data from the device on the host: no .item(), no .cpu(), no printing a device
//     tensor, no tensor-to-bool conditions, no at::nonzero / masked_select / unique (their result shape needs a
//     sync);
//   - no host tensors as operands (a CPU scalar tensor copied to the GPU at capture time is frozen into the graph);
//     no shapes, loop counts or branches that depend on the step's data (lengths, positions): they are fixed at
//     capture. Shapes may depend only on Bk and the buffers' fixed sizes (max_pages, page_size);
//   - allocate only through ATen (the caching allocator serves a capture from the graphs' private pool); no
//     cudaMalloc / cudaFree / cudaDeviceSynchronize / cudaStreamSynchronize, no new CUDA streams or events created
//     inside, no cuBLAS/cuDNN handle or plan creation that only happens on first use (the warm-up steps on the
//     capture stream do those first);
//   - work on the current stream only (the capture stream); kernels launched through ATen or hylo::kernels do;
//   - padding rows (length 0, scratch slot, scratch page) must be harmless: they may write the scratch slot and
//     scratch page, and their logits rows are ignored;
//   - random sampling inside the step needs the generator registered with the graph; keep sampling outside.
// The tensors the step reads and writes outside its inputs (pools, weights) must keep their storage for the life
// of the graphs (no reallocation, no resize).
//
// Without CUDA (CPU device, or a build without HYLO_HAVE_CUDA) or with use_graphs = false the same object runs the
// step eagerly on the same bucket buffers, so the packing and padding are the same code on every device.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "hylo/infer/engine/step_batch.h"

namespace hylo::engine {

// The static inputs of one bucket of Bk rows, on the graphs' device. Rows [0, B) are the step's sequences; rows
// [B, Bk) are padding (id 0, position 0, the scratch slot, write row = first row of the scratch page, length 0, every
// table entry the scratch page).
struct DecodeGraphInputs {
  int64_t batch = 0;      // Bk
  int64_t page_size = 0;
  at::Tensor ids;         // [Bk] int64 token ids
  at::Tensor positions;   // [Bk] int64 absolute position of the new token (= tokens cached before it)
  at::Tensor slots;       // [Bk] int64 live state slot
  at::Tensor write_rows;  // [Bk] int64 flat cache row (page * page_size + position % page_size) of the new token
  at::Tensor lengths;     // [Bk] int32 cached tokens after this step (position + 1; 0 for padding)
  at::Tensor page_table;  // [Bk, max_pages] int32

  // A StepBatch over these buffers for the engine layers (engine_layer.h): Bk decode entries with offset i and
  // count 1; its device tensors are the buffers above. Its host fields start / slot / pages are left empty: they
  // differ per replay, so a captured step must not read them.
  StepBatch step_batch() const;
};

// One decode step's rows on the host, B <= max_batch of them.
struct DecodeStepRows {
  std::vector<int64_t> ids, positions, slots, write_rows;
  std::vector<int32_t> lengths;
  std::vector<std::vector<int32_t>> pages;  // per row, its page table (at most max_pages entries)

  int64_t size() const { return static_cast<int64_t>(ids.size()); }
  // The rows of a decode-only StepBatch (every entry count 1): position = start, length = start + 1, write row from
  // the page holding `start`. ids: [B] the token of each sequence, in batch.seqs order.
  static DecodeStepRows from_batch(const StepBatch& batch, const std::vector<int64_t>& ids);
};

struct DecodeGraphOptions {
  at::Device device = at::kCPU;
  int64_t max_batch = 1;      // the largest bucket; buckets are the powers of two below it, and it
  int64_t max_pages = 1;      // page-table width of every bucket (the longest sequence's pages)
  int64_t page_size = 1;
  int64_t scratch_slot = 0;   // state slot that padding rows read and write
  int32_t scratch_page = 0;   // page that padding rows' tables and write rows point at
  int64_t warmup_steps = 3;   // eager runs on the capture stream before capture (handles, workspaces, autotuning)
  bool use_graphs = true;     // false: run the step eagerly on the bucket buffers (also the CPU behaviour)
  void validate() const;      // throws hylo::Error naming the field
};

// Runs one decode step over the bucket's buffers and returns its output, [Bk, ...] (e.g. logits [Bk, V]).
using DecodeStepFn = std::function<at::Tensor(const DecodeGraphInputs&)>;

class DecodeGraphs {
 public:
  // Allocates every bucket's buffers (filled with padding); captures nothing yet.
  DecodeGraphs(const DecodeGraphOptions& options, DecodeStepFn step);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  static std::vector<int64_t> bucket_sizes(int64_t max_batch);  // 1, 2, 4, ..., then max_batch
  int64_t bucket_for(int64_t batch) const;                      // the smallest bucket >= batch
  // Whether steps are replayed from graphs (a CUDA build, a CUDA device and use_graphs).
  bool graphs_enabled() const { return graphs_; }

  // Captures every bucket now, largest first (the buckets share one memory pool, so the smaller ones reuse the
  // largest one's intermediates). Without it each bucket is captured on its first run(). No-op when graphs are off.
  void capture_all();
  bool captured(int64_t bucket) const;

  // One step: packs `rows` (and the padding) into the bucket's buffers with one host-to-device copy, replays the
  // bucket's graph (capturing it first if needed; eagerly when graphs are off) and returns rows [0, B) of the
  // bucket's output. The result is a view of the static output: valid until the next run of the same bucket.
  // Throws hylo::Error when B is 0 or over max_batch, the vectors disagree in length, or a page table is longer
  // than max_pages.
  at::Tensor run(const DecodeStepRows& rows);

  const DecodeGraphInputs& inputs(int64_t bucket) const;  // the bucket's static buffers (tests, debugging)
  int64_t replays() const { return replays_; }            // graph launches so far
  int64_t captures() const { return captures_; }

  struct Bucket;

 private:
  Bucket& bucket(int64_t size);
  void pack(Bucket& b, const DecodeStepRows* rows);  // rows == nullptr: all padding
  void capture(Bucket& b);

  DecodeGraphOptions options_;
  DecodeStepFn step_;
  bool graphs_ = false;
  std::vector<std::unique_ptr<Bucket>> buckets_;  // ascending size
  struct Pool;
  std::unique_ptr<Pool> pool_;                    // the graphs' shared memory pool (CUDA only)
  int64_t replays_ = 0, captures_ = 0;
};

}  // namespace hylo::engine
