// Builds a StepBatch (infer/engine/step_batch.h) from the sequences' chunks, the way the runner does: tokens packed
// in seqs order (decode entries first), positions, flat cache rows, slots, the padded page table and lengths.
// Shared by the engine-layer tests and any test that drives engine layers directly.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "hylo/infer/engine/step_batch.h"

namespace hylo::engine::test {

// seqs: start, count, slot and pages filled in (offset is computed here); the first num_decode must have count 1.
// The tensors are made on `device`.
inline StepBatch make_step_batch(std::vector<SeqChunk> seqs, int64_t num_decode, int64_t page_size,
                                 at::Device device = at::kCPU) {
  StepBatch b;
  b.num_decode = num_decode;
  b.page_size = page_size;
  std::vector<int64_t> positions, write_rows, slots;
  std::vector<int32_t> lengths;
  size_t max_pages = 1;
  for (SeqChunk& c : seqs) {
    c.offset = b.num_tokens;
    b.num_tokens += c.count;
    if (static_cast<int64_t>(c.pages.size()) * page_size < c.start + c.count)
      throw std::invalid_argument("make_step_batch: " + std::to_string(c.pages.size()) + " pages of " +
                                  std::to_string(page_size) + " cannot hold " + std::to_string(c.start + c.count) +
                                  " tokens");
    for (int64_t p = c.start; p < c.start + c.count; ++p) {
      positions.push_back(p);
      write_rows.push_back(int64_t{c.pages[static_cast<size_t>(p / page_size)]} * page_size + p % page_size);
    }
    slots.push_back(c.slot);
    lengths.push_back(static_cast<int32_t>(c.start + c.count));
    max_pages = std::max(max_pages, c.pages.size());
  }
  std::vector<int32_t> table(seqs.size() * max_pages, 0);  // rows padded with page 0
  for (size_t i = 0; i < seqs.size(); ++i) std::copy(seqs[i].pages.begin(), seqs[i].pages.end(), table.begin() + i * max_pages);
  auto longs = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device);
  };
  auto ints = [&](const std::vector<int32_t>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kInt)).to(device); };
  b.positions = longs(positions);
  b.write_rows = longs(write_rows);
  b.slots = longs(slots);
  b.lengths = ints(lengths);
  b.page_table = ints(table).reshape({static_cast<int64_t>(seqs.size()), static_cast<int64_t>(max_pages)});
  b.seqs = std::move(seqs);
  return b;
}

}  // namespace hylo::engine::test
