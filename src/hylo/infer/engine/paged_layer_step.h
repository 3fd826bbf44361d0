// What the paged engine layers (engine_layer_mla.cpp, engine_layer_gqa.cpp) share: checking a step against the
// layer, and reading one sequence's cached rows back from the pages through its page table.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

#include "hylo/infer/engine/step_batch.h"

namespace hylo::engine {

// Throws hylo::Error naming `who` unless: x is [1, N, D] with N = batch.num_tokens > 0; batch.page_size equals the
// layer's; positions and write_rows are [N] int64; page_table is [S, max_pages] int32 and lengths [S] int32; the
// sequences' tokens are packed in seqs order (offsets 0, count_0, ...), the first num_decode with one token each;
// and every page table covers start + count tokens.
void check_paged_step(const char* who, const at::Tensor& x, const StepBatch& batch, int64_t page_size);

// The first n cached rows of sequence i, in token order: pages [P, page_size, ...] -> [n, ...] (a copy), read
// through row i of batch.page_table.
at::Tensor sequence_rows(const at::Tensor& pages, const StepBatch& batch, size_t i, int64_t n);

// Scatters the new tokens' cache entries, rows [N, ...] (pages' trailing shape), to their flat rows
// batch.write_rows of pages [P, page_size, ...] (contiguous), in the pages' dtype.
void write_new_rows(at::Tensor& pages, const at::Tensor& rows, const StepBatch& batch);

}  // namespace hylo::engine
