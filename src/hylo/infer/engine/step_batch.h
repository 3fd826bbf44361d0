// What one engine step runs: the new tokens of several sequences packed into one row of N tokens ([1, N, D] for
// the dense parts of every block), and for each sequence where its tokens sit, where its cache is, and how long it
// is. Built once per step by the runner and read by every layer (engine_layer.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace hylo::engine {

struct SeqChunk {
  int64_t offset = 0;   // first row of this sequence's tokens in the packed step
  int64_t count = 0;    // new tokens this step (1 for a decode step, up to the prefill chunk otherwise)
  int64_t start = 0;    // tokens already cached before this step = absolute position of the first new token
  int64_t slot = -1;    // live state slot (recurrent layers)
  std::vector<int32_t> pages;  // page table, covering at least start + count tokens (paged layers)
};

// The flat row (page * page_size + offset in the page) where token `position` of a sequence with page table
// `pages` lives in every paged layer's cache; 0 for a model without paged layers (no pages).
inline int64_t cache_row(const std::vector<int32_t>& pages, int64_t position, int64_t page_size) {
  if (pages.empty()) return 0;
  return int64_t{pages[static_cast<size_t>(position / page_size)]} * page_size + position % page_size;
}

struct StepBatch {
  std::vector<SeqChunk> seqs;  // decode sequences (count 1) first, then prefill chunks
  int64_t num_tokens = 0;      // N = sum of counts
  int64_t num_decode = 0;      // the first num_decode entries of seqs have count == 1
  int64_t page_size = 0;

  // On the model's device, built by the runner for all layers to share:
  at::Tensor positions;    // [N] int64 absolute position of each packed token
  at::Tensor write_rows;   // [N] int64 flat cache row (page * page_size + position % page_size) of each new token
  at::Tensor slots;        // [S] int64 live slot of each sequence, in seqs order
  at::Tensor page_table;   // [S, max_pages] int32, row i = seqs[i].pages padded with 0
  at::Tensor lengths;      // [S] int32 cached tokens after this step (start + count)

  // True in a decode step captured into a CUDA graph (cuda_graphs.h): there seqs[i] hold only offset and count,
  // because start / slot / pages differ on every replay; layers must then read the device tensors alone.
  bool device_only = false;

  bool decode_only() const { return num_decode == static_cast<int64_t>(seqs.size()); }
};

}  // namespace hylo::engine
