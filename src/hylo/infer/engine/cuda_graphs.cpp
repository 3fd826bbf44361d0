// DecodeGraphs (cuda_graphs.h): per-bucket static input buffers, the host packing of a step's rows into them,
// and (CUDA builds) capture with warm-up on a side stream and replay.
#include "hylo/infer/engine/cuda_graphs.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "hylo/core/result.h"

#if HYLO_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace hylo::engine {

namespace {

// Byte layout of one bucket's buffer (host staging and device alike), so one copy moves a whole step:
//   int64 [4, Bk]: ids, positions, slots, write_rows;  int32 [Bk]: lengths;  int32 [Bk, max_pages]: page table.
struct Layout {
  int64_t rows = 0, max_pages = 0;
  int64_t i64_bytes() const { return 4 * rows * 8; }
  int64_t lengths_offset() const { return i64_bytes(); }
  int64_t table_offset() const { return lengths_offset() + rows * 4; }
  int64_t bytes() const { return table_offset() + rows * max_pages * 4; }
};

// A typed view of bytes [offset, offset + count * itemsize) of a uint8 buffer.
at::Tensor typed(const at::Tensor& bytes, int64_t offset, int64_t count, at::ScalarType type) {
  return bytes.narrow(0, offset, count * int64_t(c10::elementSize(type))).view(type);
}

[[noreturn]] void fail(const std::string& what) { throw Error("decode graphs: " + what); }

}  // namespace

struct DecodeGraphs::Bucket {
  int64_t size = 0;
  Layout layout;
  at::Tensor host;    // uint8 [bytes]: staging (pinned on CUDA); the device buffer itself on the CPU
  at::Tensor device;  // uint8 [bytes] on the graphs' device
  DecodeGraphInputs in;
  at::Tensor output;  // the step's result: the graph's static output, or the last eager result
#if HYLO_HAVE_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  at::cuda::CUDAEvent copied;  // the last host-to-device copy from `host`; `host` may be rewritten after it
  bool copy_pending = false;
#endif
};

struct DecodeGraphs::Pool {
#if HYLO_HAVE_CUDA
  c10::MempoolId_t id{0, 0};
#endif
};

StepBatch DecodeGraphInputs::step_batch() const {
  StepBatch b;
  b.seqs.resize(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) {
    b.seqs[static_cast<size_t>(i)].offset = i;
    b.seqs[static_cast<size_t>(i)].count = 1;
  }
  b.num_tokens = batch;
  b.num_decode = batch;
  b.page_size = page_size;
  b.positions = positions;
  b.write_rows = write_rows;
  b.slots = slots;
  b.page_table = page_table;
  b.lengths = lengths;
  b.device_only = true;
  return b;
}

DecodeStepRows DecodeStepRows::from_batch(const StepBatch& batch, const std::vector<int64_t>& ids) {
  if (!batch.decode_only()) fail("from_batch needs a decode-only step (every sequence one new token)");
  if (ids.size() != batch.seqs.size())
    fail("from_batch: " + std::to_string(ids.size()) + " ids for " + std::to_string(batch.seqs.size()) +
         " sequences");
  if (batch.page_size <= 0) fail("from_batch: the step batch has no page size");
  DecodeStepRows rows;
  rows.ids = ids;
  for (const SeqChunk& s : batch.seqs) {
    if (s.count != 1) fail("from_batch: a sequence with " + std::to_string(s.count) + " new tokens");
    rows.positions.push_back(s.start);
    rows.slots.push_back(s.slot);
    rows.lengths.push_back(static_cast<int32_t>(s.start + 1));
    const size_t page = static_cast<size_t>(s.start / batch.page_size);
    if (page >= s.pages.size())
      fail("from_batch: position " + std::to_string(s.start) + " is past the sequence's " +
           std::to_string(s.pages.size()) + " pages");
    rows.write_rows.push_back(cache_row(s.pages, s.start, batch.page_size));
    rows.pages.push_back(s.pages);
  }
  return rows;
}

void DecodeGraphOptions::validate() const {
  if (max_batch < 1) fail("max_batch must be >= 1, got " + std::to_string(max_batch));
  if (max_pages < 1) fail("max_pages must be >= 1, got " + std::to_string(max_pages));
  if (page_size < 1) fail("page_size must be >= 1, got " + std::to_string(page_size));
  if (scratch_slot < 0) fail("scratch_slot must be >= 0, got " + std::to_string(scratch_slot));
  if (scratch_page < 0) fail("scratch_page must be >= 0, got " + std::to_string(scratch_page));
  if (warmup_steps < 0) fail("warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
}

std::vector<int64_t> DecodeGraphs::bucket_sizes(int64_t max_batch) {
  std::vector<int64_t> sizes;
  for (int64_t b = 1; b < max_batch; b *= 2) sizes.push_back(b);
  sizes.push_back(max_batch);
  return sizes;
}

DecodeGraphs::DecodeGraphs(const DecodeGraphOptions& options, DecodeStepFn step)
    : options_(options), step_(std::move(step)), pool_(std::make_unique<Pool>()) {
  options_.validate();
  if (!step_) fail("no step function");
#if HYLO_HAVE_CUDA
  graphs_ = options_.use_graphs && options_.device.is_cuda();
  if (graphs_) pool_->id = at::cuda::graph_pool_handle();
#endif
  for (int64_t size : bucket_sizes(options_.max_batch)) {
    auto b = std::make_unique<Bucket>();
    b->size = size;
    b->layout = Layout{size, options_.max_pages};
    const int64_t bytes = b->layout.bytes();
    at::TensorOptions u8 = at::TensorOptions().dtype(at::kByte);
    if (options_.device.is_cpu()) {
      b->device = at::empty({bytes}, u8);
      b->host = b->device;
    } else {
      b->device = at::empty({bytes}, u8.device(options_.device));
#if HYLO_HAVE_CUDA
      b->host = at::empty({bytes}, u8.pinned_memory(true));
#else
      b->host = at::empty({bytes}, u8);
#endif
    }
    DecodeGraphInputs& in = b->in;
    in.batch = size;
    in.page_size = options_.page_size;
    in.ids = typed(b->device, 0, size, at::kLong);
    in.positions = typed(b->device, size * 8, size, at::kLong);
    in.slots = typed(b->device, 2 * size * 8, size, at::kLong);
    in.write_rows = typed(b->device, 3 * size * 8, size, at::kLong);
    in.lengths = typed(b->device, b->layout.lengths_offset(), size, at::kInt);
    in.page_table = typed(b->device, b->layout.table_offset(), size * options_.max_pages, at::kInt)
                        .view({size, options_.max_pages});
    pack(*b, nullptr);
    buckets_.push_back(std::move(b));
  }
}

DecodeGraphs::~DecodeGraphs() {
#if HYLO_HAVE_CUDA
  // Graphs first (they hold the pool's blocks), then the buffers they read.
  for (auto& b : buckets_) b->graph.reset();
#endif
}

int64_t DecodeGraphs::bucket_for(int64_t batch) const {
  if (batch < 1 || batch > options_.max_batch)
    fail("batch of " + std::to_string(batch) + " sequences outside [1, max_batch = " +
         std::to_string(options_.max_batch) + "]");
  for (const auto& b : buckets_)
    if (b->size >= batch) return b->size;
  return options_.max_batch;  // unreachable: the last bucket is max_batch
}

DecodeGraphs::Bucket& DecodeGraphs::bucket(int64_t size) {
  for (auto& b : buckets_)
    if (b->size == size) return *b;
  fail("no bucket of size " + std::to_string(size));
}

const DecodeGraphInputs& DecodeGraphs::inputs(int64_t bucket_size) const {
  for (const auto& b : buckets_)
    if (b->size == bucket_size) return b->in;
  fail("no bucket of size " + std::to_string(bucket_size));
}

bool DecodeGraphs::captured(int64_t bucket_size) const {
#if HYLO_HAVE_CUDA
  for (const auto& b : buckets_)
    if (b->size == bucket_size) return b->graph != nullptr;
#endif
  (void)bucket_size;
  return false;
}

// Writes the rows (then padding) into the bucket's host buffer and moves it to the device in one copy.
void DecodeGraphs::pack(Bucket& b, const DecodeStepRows* rows) {
  const int64_t n = rows != nullptr ? rows->size() : 0, size = b.size, maxp = options_.max_pages;
#if HYLO_HAVE_CUDA
  if (b.copy_pending) {
    b.copied.synchronize();  // the previous step's copy has read the staging buffer (long done in practice)
    b.copy_pending = false;
  }
#endif
  uint8_t* base = b.host.data_ptr<uint8_t>();
  auto* i64 = reinterpret_cast<int64_t*>(base);  // [4, Bk]
  auto* lengths = reinterpret_cast<int32_t*>(base + b.layout.lengths_offset());
  auto* table = reinterpret_cast<int32_t*>(base + b.layout.table_offset());
  const int64_t pad_row = int64_t(options_.scratch_page) * options_.page_size;
  for (int64_t i = 0; i < size; ++i) {
    const bool real = i < n;
    i64[i] = real ? rows->ids[size_t(i)] : 0;
    i64[size + i] = real ? rows->positions[size_t(i)] : 0;
    i64[2 * size + i] = real ? rows->slots[size_t(i)] : options_.scratch_slot;
    i64[3 * size + i] = real ? rows->write_rows[size_t(i)] : pad_row;
    lengths[i] = real ? rows->lengths[size_t(i)] : 0;
    int32_t* t = table + i * maxp;
    const int64_t used = real ? int64_t(rows->pages[size_t(i)].size()) : 0;
    if (used > 0) std::memcpy(t, rows->pages[size_t(i)].data(), size_t(used) * sizeof(int32_t));
    std::fill(t + used, t + maxp, options_.scratch_page);
  }
  if (b.host.data_ptr() == b.device.data_ptr()) return;  // CPU: packed in place
#if HYLO_HAVE_CUDA
  if (b.device.is_cuda()) {
    c10::cuda::CUDAGuard guard(b.device.device());
    b.device.copy_(b.host, /*non_blocking=*/true);
    b.copied.record(at::cuda::getCurrentCUDAStream());
    b.copy_pending = true;
    return;
  }
#endif
  b.device.copy_(b.host);
}

void DecodeGraphs::capture(Bucket& b) {
#if HYLO_HAVE_CUDA
  c10::cuda::CUDAGuard guard(options_.device);
  pack(b, nullptr);  // warm-up and capture see padding rows only: they touch just the scratch slot and page
  c10::cuda::CUDAStream current = at::cuda::getCurrentCUDAStream();
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, options_.device.index());
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  {
    // As torch.cuda.graph: warm up on the capture stream (lazy handle and workspace creation happens outside the
    // capture), synchronise, then capture on that stream into the shared pool.
    c10::cuda::CUDAStreamGuard stream_guard(side);
    for (int64_t i = 0; i < options_.warmup_steps; ++i) step_(b.in);
    side.synchronize();
    b.graph = std::make_unique<at::cuda::CUDAGraph>();
    b.graph->capture_begin(pool_->id);
    try {
      b.output = step_(b.in);
    } catch (...) {
      try {
        b.graph->capture_end();
      } catch (...) {
      }
      b.graph.reset();
      throw;
    }
    b.graph->capture_end();
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(current);
  ++captures_;
  if (!b.output.defined() || b.output.dim() < 1 || b.output.size(0) != b.size)
    fail("the step returned " + (b.output.defined() ? c10::str(b.output.sizes()) : std::string("nothing")) +
         " for a bucket of " + std::to_string(b.size) + " rows; expected [" + std::to_string(b.size) + ", ...]");
#else
  (void)b;
#endif
}

void DecodeGraphs::capture_all() {
  if (!graphs_) return;
  for (auto it = buckets_.rbegin(); it != buckets_.rend(); ++it)
#if HYLO_HAVE_CUDA
    if ((*it)->graph == nullptr)
#endif
      capture(**it);
}

at::Tensor DecodeGraphs::run(const DecodeStepRows& rows) {
  const int64_t n = rows.size();
  if (rows.positions.size() != size_t(n) || rows.slots.size() != size_t(n) || rows.write_rows.size() != size_t(n) ||
      rows.lengths.size() != size_t(n) || rows.pages.size() != size_t(n))
    fail("step rows disagree in length: ids " + std::to_string(n) + ", positions " +
         std::to_string(rows.positions.size()) + ", slots " + std::to_string(rows.slots.size()) + ", write_rows " +
         std::to_string(rows.write_rows.size()) + ", lengths " + std::to_string(rows.lengths.size()) + ", pages " +
         std::to_string(rows.pages.size()));
  for (int64_t i = 0; i < n; ++i)
    if (int64_t(rows.pages[size_t(i)].size()) > options_.max_pages)
      fail("row " + std::to_string(i) + " has " + std::to_string(rows.pages[size_t(i)].size()) +
           " pages, more than max_pages = " + std::to_string(options_.max_pages));
  Bucket& b = bucket(bucket_for(n));
#if HYLO_HAVE_CUDA
  if (graphs_) {
    if (b.graph == nullptr) capture(b);
    c10::cuda::CUDAGuard guard(options_.device);
    pack(b, &rows);
    b.graph->replay();
    ++replays_;
    return b.output.narrow(0, 0, n);
  }
#endif
  pack(b, &rows);
  b.output = step_(b.in);
  if (!b.output.defined() || b.output.dim() < 1 || b.output.size(0) != b.size)
    fail("the step returned " + (b.output.defined() ? c10::str(b.output.sizes()) : std::string("nothing")) +
         " for a bucket of " + std::to_string(b.size) + " rows");
  return b.output.narrow(0, 0, n);
}

}  // namespace hylo::engine
