#include "hylo/infer/engine/paged_layer_step.h"

#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/paged_decode.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::engine {
namespace {

int64_t pages_for(int64_t tokens, int64_t page_size) { return (tokens + page_size - 1) / page_size; }

}  // namespace

void check_paged_step(const char* who, const at::Tensor& x, const StepBatch& batch, int64_t page_size) {
  auto fail = [&](const std::string& what) { throw Error(std::string(who) + ": " + what); };
  const int64_t n = batch.num_tokens, s = static_cast<int64_t>(batch.seqs.size());
  if (n <= 0) fail("a step needs at least one token, got num_tokens " + std::to_string(n));
  if (x.dim() != 3 || x.size(0) != 1 || x.size(1) != n)
    fail("x must be [1, N = " + std::to_string(n) + ", D], got " + shape_str(x));
  if (batch.page_size != page_size)
    fail("the step's page_size " + std::to_string(batch.page_size) + " differs from the cache's " +
         std::to_string(page_size));
  auto check_vector = [&](const at::Tensor& t, const char* name, at::ScalarType type, int64_t size) {
    if (!t.defined() || t.dim() != 1 || t.size(0) != size || t.scalar_type() != type || t.device() != x.device())
      fail(std::string(name) + " must be [" + std::to_string(size) + "] " + c10::toString(type) + " on " +
           x.device().str() + ", got " + shape_str(t) + (t.defined() ? std::string(" ") + c10::toString(t.scalar_type()) : ""));
  };
  check_vector(batch.positions, "positions", at::kLong, n);
  check_vector(batch.write_rows, "write_rows", at::kLong, n);
  check_vector(batch.lengths, "lengths", at::kInt, s);
  if (batch.num_decode < 0 || batch.num_decode > s)
    fail("num_decode " + std::to_string(batch.num_decode) + " outside [0, " + std::to_string(s) + "]");
  const at::Tensor& table = batch.page_table;
  if (!table.defined() || table.dim() != 2 || table.size(0) != s || table.scalar_type() != at::kInt ||
      table.device() != x.device())
    fail("page_table must be [" + std::to_string(s) + ", max_pages] int32 on " + x.device().str() + ", got " +
         shape_str(table));
  int64_t offset = 0;
  for (int64_t i = 0; i < s; ++i) {
    const SeqChunk& c = batch.seqs[static_cast<size_t>(i)];
    const std::string seq = "seqs[" + std::to_string(i) + "]";
    if (c.offset != offset) fail(seq + ".offset is " + std::to_string(c.offset) + ", expected " +
                                 std::to_string(offset) + " (tokens packed in seqs order)");
    if (c.count <= 0 || c.start < 0) fail(seq + " needs count > 0 and start >= 0");
    if (i < batch.num_decode && c.count != 1)
      fail(seq + " is a decode entry (i < num_decode) with " + std::to_string(c.count) + " tokens instead of 1");
    if (batch.device_only) {  // a captured decode step: no host page tables to check
      offset += c.count;
      continue;
    }
    const int64_t need = pages_for(c.start + c.count, page_size);
    if (static_cast<int64_t>(c.pages.size()) < need || table.size(1) < need)
      fail(seq + " holds " + std::to_string(c.start + c.count) + " tokens = " + std::to_string(need) +
           " pages of " + std::to_string(page_size) + ", but its page table has " + std::to_string(c.pages.size()) +
           " (page_table width " + std::to_string(table.size(1)) + ")");
    offset += c.count;
  }
  if (offset != n) fail("the sequences' counts sum to " + std::to_string(offset) + ", not num_tokens " +
                        std::to_string(n));
}

at::Tensor sequence_rows(const at::Tensor& pages, const StepBatch& batch, size_t i, int64_t n) {
  const int64_t page_size = pages.size(1);
  at::Tensor table = batch.page_table.narrow(0, static_cast<int64_t>(i), 1).narrow(1, 0, pages_for(n, page_size));
  return ops::gather_paged_rows(pages, table).select(0, 0).narrow(0, 0, n);  // [n, ...]
}

void write_new_rows(at::Tensor& pages, const at::Tensor& rows, const StepBatch& batch) {
  std::vector<int64_t> flat = pages.sizes().vec();  // [P * page_size, ...]
  flat.erase(flat.begin());
  flat[0] = -1;
  pages.view(flat).index_copy_(0, batch.write_rows, rows.to(pages.scalar_type()));
}

}  // namespace hylo::engine
