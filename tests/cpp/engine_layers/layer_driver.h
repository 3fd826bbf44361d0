// Drives several sequences through one engine layer the way the engine's scheduler would, with a seeded random
// schedule: sequences join at different steps, prompts are prefilled in chunks of random sizes (not aligned to
// pages), then tokens are decoded one per step; each step packs the decode tokens of some sequences with prefill
// chunks of others (decode first, in shuffled order), and sometimes a sequence sits a step out. Pages are handed out
// lazily from a shuffled free list, so page tables are non-contiguous and interleaved between sequences.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "hylo/infer/engine/engine_layer.h"
#include "step_batch_util.h"

namespace hylo::engine::test {

struct DriveResult {
  std::vector<at::Tensor> outputs;          // per sequence [1, total, D]: the layer's output for every token
  std::vector<std::vector<int32_t>> pages;  // per sequence: its page table at the end
  int64_t steps = 0;
  int64_t mixed_steps = 0;                  // steps holding decode tokens and prefill chunks together
  int64_t multi_decode_steps = 0;           // steps with two or more decode tokens
  int64_t unaligned_chunks = 0;             // prefill chunks starting or ending inside a page
  bool noncontiguous_pages = false;         // some sequence's pages are not consecutive ids
};

// xs: per sequence [1, total, D] (the layer's input for each of its tokens); prompts[i] <= total tokens are
// prefilled in chunks of at most max_chunk, the rest decoded. num_pages: the pool the layer's cache was made with.
inline DriveResult drive_layer(EngineLayer& layer, const std::vector<at::Tensor>& xs,
                               const std::vector<int64_t>& prompts, int64_t page_size, int64_t num_pages,
                               int64_t max_chunk, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const size_t n = xs.size();
  std::vector<int32_t> free_pages(static_cast<size_t>(num_pages));
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  std::vector<int64_t> done(n, 0), join(n);
  for (size_t i = 0; i < n; ++i) join[i] = static_cast<int64_t>(rng() % 4);
  DriveResult r;
  r.pages.resize(n);
  for (const at::Tensor& x : xs) r.outputs.push_back(at::zeros_like(x));
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);

  for (int64_t step = 0;; ++step) {
    bool left = false;
    for (size_t i = 0; i < n; ++i) left = left || done[i] < xs[i].size(1);
    if (!left) break;
    if (step > 10000) throw std::runtime_error("drive_layer: schedule does not finish");
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<SeqChunk> decode, prefill;
    std::vector<size_t> decode_ids, prefill_ids;
    for (size_t i : order) {
      const int64_t total = xs[i].size(1);
      if (join[i] > step || done[i] == total || rng() % 5 == 0) continue;
      SeqChunk c;
      c.start = done[i];
      const bool in_prompt = done[i] < prompts[i];
      c.count = in_prompt ? 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(std::min(max_chunk, prompts[i] - done[i]))) : 1;
      c.slot = static_cast<int64_t>(i);
      while (static_cast<int64_t>(r.pages[i].size()) * page_size < c.start + c.count) {
        if (free_pages.empty()) throw std::runtime_error("drive_layer: page pool too small");
        r.pages[i].push_back(free_pages.back());
        free_pages.pop_back();
      }
      c.pages = r.pages[i];
      r.unaligned_chunks += in_prompt && (c.start % page_size != 0 || (c.start + c.count) % page_size != 0);
      (in_prompt ? prefill : decode).push_back(c);
      (in_prompt ? prefill_ids : decode_ids).push_back(i);
    }
    if (decode.empty() && prefill.empty()) continue;
    const int64_t num_decode = static_cast<int64_t>(decode.size());
    r.mixed_steps += !decode.empty() && !prefill.empty();
    r.multi_decode_steps += decode.size() >= 2;
    std::vector<SeqChunk> seqs = decode;
    seqs.insert(seqs.end(), prefill.begin(), prefill.end());
    std::vector<size_t> ids = decode_ids;
    ids.insert(ids.end(), prefill_ids.begin(), prefill_ids.end());
    StepBatch batch = make_step_batch(seqs, num_decode, page_size);

    std::vector<at::Tensor> pieces;
    for (size_t k = 0; k < ids.size(); ++k) pieces.push_back(xs[ids[k]].narrow(1, batch.seqs[k].start, batch.seqs[k].count));
    at::Tensor y = layer.forward(at::cat(pieces, 1), batch);  // [1, N, D]
    for (size_t k = 0; k < ids.size(); ++k) {
      const SeqChunk& c = batch.seqs[k];
      r.outputs[ids[k]].narrow(1, c.start, c.count).copy_(y.narrow(1, c.offset, c.count));
      done[ids[k]] += c.count;
    }
    ++r.steps;
  }
  for (const auto& p : r.pages)
    for (size_t k = 1; k < p.size(); ++k) r.noncontiguous_pages = r.noncontiguous_pages || p[k] != p[k - 1] + 1;
  return r;
}

}  // namespace hylo::engine::test
