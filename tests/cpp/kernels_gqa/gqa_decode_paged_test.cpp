// The paged GQA decode kernel (kernels::gqa_decode_paged_cuda) against the ATen reference (ops::gqa_decode_paged on
// the CPU). The fp64 form on the inputs rounded to the test dtype is the truth; the same ATen form in the test dtype
// sets the tolerance: the kernel's relative RMS error <= 2 x the ATen form's own error + a floor, and the same for
// the max abs error. The floor: half a unit roundoff of the output dtype (its final rounding) plus the fp32
// accumulation of a softmax-weighted sum over L tokens, which grows like sqrt(L) fp32 roundoffs (4 u32 sqrt(L)).
//
// Pages are handed out in a shuffled order and interleaved between sequences; rows past a sequence's length in its
// last page, a spare page that every unused page-table entry names, and (with a window) the rows before the window
// hold NaN, so reading anything outside the attended range shows. Outputs and split partials are NaN-filled before
// the kernel runs (kernels::set_poison_outputs), so unwritten outputs and partials the combine should skip show too.
// Also: a CUDA-graph capture replays correctly after the lengths, the table and the pages change in place; the op
// routes supported CUDA operands to the kernel and the rest to the ATen form; an env-gated timing
// (HYLO_GQA_DECODE_BENCH=1).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/paged_decode.h"
#include "hylo/ops/tensor_util.h"
#include "kernels_gdn/cuda_test_util.h"
#if HYLO_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include "hylo/kernels/gqa_decode/gqa_decode.h"
#endif

namespace hylo {
namespace {

#if !HYLO_HAVE_CUDA
TEST(GqaDecodePagedKernel, NeedsCudaBuild) { GTEST_SKIP() << "built without HYLO_CUDA: no kernels to test"; }
#else

using kernels_test::unit_roundoff;

struct Shape {
  int64_t hq, hkv, d;
};

// One paged batch on the CPU: k/v pages [P, page_size, Hkv, D] in the page dtype, q [S, Hq, D] in the query dtype,
// the table [S, max_pages] and lengths [S] int32.
struct PagedBatch {
  Shape shape{};
  int64_t page_size = 0, max_pages = 0, window = 0;
  std::vector<int64_t> lens;
  at::Tensor k_pages, v_pages, q, table, lengths;
  double scale = 0.0;

  int64_t num_seqs() const { return int64_t(lens.size()); }
  std::optional<int64_t> window_opt() const { return window > 0 ? std::optional<int64_t>(window) : std::nullopt; }
};

// Fresh random pages for `lens`: every sequence's pages come from one shuffled list handed out round-robin (so a
// sequence's pages are neither contiguous nor in order); `spare_pages` more exist; the last page is all NaN and
// fills the table's unused entries.
PagedBatch make_batch(Shape sh, std::vector<int64_t> lens, int64_t page_size, at::ScalarType page_type,
                      at::ScalarType q_type, uint64_t seed, int64_t window = 0, int64_t extra_table_pages = 2,
                      int64_t spare_pages = 3) {
  PagedBatch pb;
  pb.shape = sh, pb.page_size = page_size, pb.lens = std::move(lens), pb.window = window;
  pb.scale = 1.0 / std::sqrt(double(sh.d));
  std::vector<int64_t> need;
  int64_t total = 0, most = 0;
  for (int64_t len : pb.lens) {
    need.push_back((len + page_size - 1) / page_size);
    total += need.back(), most = std::max(most, need.back());
  }
  const int64_t num_pages = total + spare_pages + 1;
  const int32_t nan_page = int32_t(num_pages - 1);
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(size_t(num_pages - 1));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<std::vector<int32_t>> table(pb.lens.size());
  size_t next = 0;
  for (int64_t round = 0; round < most; ++round)
    for (size_t i = 0; i < pb.lens.size(); ++i)
      if (round < need[i]) table[i].push_back(ids[next++]);
  pb.max_pages = most + extra_table_pages;
  pb.table = at::full({pb.num_seqs(), pb.max_pages}, nan_page, at::kInt);
  for (int64_t i = 0; i < pb.num_seqs(); ++i)
    for (size_t j = 0; j < table[i].size(); ++j) pb.table[i][int64_t(j)] = table[i][j];
  pb.lengths = at::tensor(std::vector<int>(pb.lens.begin(), pb.lens.end()), at::kInt);

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto rnd = [&](at::IntArrayRef shape) { return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)); };
  at::Tensor k = rnd({num_pages, page_size, sh.hkv, sh.d}), v = rnd({num_pages, page_size, sh.hkv, sh.d});
  // NaN where nothing may be read: the spare page, rows past each length, rows before each window.
  const double nan = std::nan("");
  k[nan_page].fill_(nan), v[nan_page].fill_(nan);
  for (int64_t i = 0; i < pb.num_seqs(); ++i) {
    const int64_t len = pb.lens[i], lo = window > 0 ? std::max<int64_t>(0, len - window) : 0;
    for (int64_t t = 0; t < need[i] * page_size; ++t)
      if (t < lo || t >= len) {
        const int64_t page = table[i][size_t(t / page_size)], row = t % page_size;
        k[page][row].fill_(nan), v[page][row].fill_(nan);
      }
  }
  pb.k_pages = k.to(page_type), pb.v_pages = v.to(page_type);
  pb.q = rnd({pb.num_seqs(), sh.hq, sh.d}).to(q_type);
  return pb;
}

// ops::gqa_decode_paged on the CPU with every operand in `type` (fp64: the truth on the rounded inputs), or with the
// batch's own dtypes when type is undefined (the ATen form's error in the test dtype).
at::Tensor aten_reference(const PagedBatch& pb, std::optional<at::ScalarType> type) {
  auto as = [&](const at::Tensor& t) { return type ? t.to(*type) : t; };
  return ops::gqa_decode_paged_reference(as(pb.q), as(pb.k_pages), as(pb.v_pages), pb.table, pb.lengths, pb.scale,
                                         pb.window_opt());
}

at::Tensor run_kernel(const PagedBatch& pb, int64_t splits) {
  kernels::set_poison_outputs(true);
  const at::Tensor out = kernels::gqa_decode_paged_cuda(pb.q.cuda(), pb.k_pages.cuda(), pb.v_pages.cuda(),
                                                        pb.table.cuda(), pb.lengths.cuda(), pb.scale, pb.window,
                                                        splits);
  return out.cpu();
}

void expect_close(const PagedBatch& pb, const at::Tensor& got, const std::string& what) {
  ASSERT_EQ(got.scalar_type(), pb.q.scalar_type()) << what;
  ASSERT_FALSE(at::isnan(got).any().item<bool>()) << what << ": NaN in the output (unwritten, or read outside a range)";
  const at::Tensor truth = aten_reference(pb, at::kDouble), aten = aten_reference(pb, std::nullopt);
  const double rel = relative_rms_error(got, truth), rel_ref = relative_rms_error(aten, truth);
  const at::Tensor g64 = got.to(at::kDouble), a64 = aten.to(at::kDouble);
  const double max_abs = (g64 - truth).abs().max().item<double>(), max_ref = (a64 - truth).abs().max().item<double>();
  const double scale_abs = std::max(truth.abs().max().item<double>(), 1e-30);
  const int64_t longest = std::max<int64_t>(1, *std::max_element(pb.lens.begin(), pb.lens.end()));
  const double floor = 0.5 * unit_roundoff(pb.q.scalar_type()) +
                       4.0 * unit_roundoff(at::kFloat) * std::sqrt(double(longest));
  std::string lens;
  for (int64_t l : pb.lens) lens += std::to_string(l) + " ";
  std::printf("%s Hq/Hkv/D=%ld/%ld/%ld page=%ld window=%ld %s pages, %s q, lens [%s]: rel rms %.3g (ATen %.3g), "
              "max abs %.3g (%.3g)\n",
              what.c_str(), long(pb.shape.hq), long(pb.shape.hkv), long(pb.shape.d), long(pb.page_size),
              long(pb.window), c10::toString(pb.k_pages.scalar_type()), c10::toString(pb.q.scalar_type()),
              lens.c_str(), rel, rel_ref, max_abs, max_ref);
  EXPECT_LE(rel, 2.0 * rel_ref + floor) << what;
  EXPECT_LE(max_abs, 2.0 * max_ref + floor * scale_abs) << what;
}

void check(const PagedBatch& pb, int64_t splits, const std::string& what) {
  ASSERT_TRUE(kernels::gqa_decode_paged_supported(pb.q.cuda(), pb.k_pages.cuda(), pb.v_pages.cuda(), pb.table.cuda(),
                                                  pb.lengths.cuda()))
      << what;
  expect_close(pb, run_kernel(pb, splits), what + " splits=" + std::to_string(splits));
}

// Grouping shapes: SmolLM2 (9/3), Llama-3.2-1B (32/8), MHA (8/8), rep 8 at D 128, rep 12 (two head blocks).
const Shape kShapes[] = {{9, 3, 64}, {32, 8, 64}, {8, 8, 128}, {32, 4, 128}, {24, 2, 64}};
const at::ScalarType kTypes[] = {at::kBFloat16, at::kHalf, at::kFloat};

// Lengths 1, page-1, page, page+1, odd, several pages, ragged in one batch; every shape and page dtype.
TEST(GqaDecodePagedKernel, MatchesAtenAcrossShapesDtypesAndLengths) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 100;
  for (const Shape& sh : kShapes)
    for (at::ScalarType t : kTypes) {
      for (int64_t len : {1, 15, 16, 17}) check(make_batch(sh, {len}, 16, t, t, seed += 7), 0, "single");
      check(make_batch(sh, {1, 15, 16, 17, 33, 777, 2049}, 16, t, t, seed += 7), 0, "ragged");
    }
}

// Page sizes 1 (a table read per token), 16, 48 (not a power of two), 64 (the engine's), 256.
TEST(GqaDecodePagedKernel, PageSizes) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 2000;
  for (int64_t ps : {1, 16, 48, 64, 256})
    for (const Shape& sh : {kShapes[0], kShapes[3]}) {
      std::vector<int64_t> lens = {1, ps + 1, 300, 1025};
      if (ps > 1) lens.push_back(ps - 1);
      check(make_batch(sh, lens, ps, at::kBFloat16, at::kBFloat16, seed += 7), 0, "page size");
    }
}

// Forced split counts (one, odd, more than the tokens), a length-0 sequence (output 0), a long sequence beside short
// ones (their later splits are empty partials the combine must skip), the automatic split path on a long context,
// and a table whose capacity is far beyond the lengths.
TEST(GqaDecodePagedKernel, SplitsEmptySequencesAndLongContext) {
  HYLO_REQUIRE_CUDA();
  const Shape sh = kShapes[1];
  for (int64_t splits : {1, 3, 7, 1000})
    check(make_batch(sh, {5000, 333, 0, 64}, 64, at::kBFloat16, at::kBFloat16, 3000 + splits), splits, "forced");
  check(make_batch(sh, {0}, 64, at::kBFloat16, at::kBFloat16, 3100), 0, "empty");
  check(make_batch(sh, {100003, 5, 64}, 64, at::kBFloat16, at::kBFloat16, 3101), 0, "long");
  check(make_batch(kShapes[3], {65537}, 16, at::kFloat, at::kFloat, 3102), 0, "long fp32");
  check(make_batch(sh, {20001, 1}, 64, at::kHalf, at::kHalf, 3103, 0, /*extra_table_pages=*/1000), 0, "wide table");
}

// Sliding windows: shorter than, equal to and longer than the lengths; the rows before each window are NaN.
TEST(GqaDecodePagedKernel, SlidingWindow) {
  HYLO_REQUIRE_CUDA();
  uint64_t seed = 4000;
  for (int64_t w : {1, 16, 100, 4096})
    for (int64_t splits : {0, 5})
      check(make_batch(kShapes[0], {1, 16, 99, 100, 101, 3000}, 16, at::kBFloat16, at::kBFloat16, seed += 7, w),
            splits, "window " + std::to_string(w));
}

// fp32 queries over bf16 pages (the reference converts both to fp32, as the kernel does); output in q's dtype.
TEST(GqaDecodePagedKernel, MixedQueryAndPageDtypes) {
  HYLO_REQUIRE_CUDA();
  check(make_batch(kShapes[1], {1, 70, 1000}, 64, at::kBFloat16, at::kFloat, 5000), 0, "fp32 q, bf16 pages");
  check(make_batch(kShapes[2], {1, 70, 1000}, 64, at::kFloat, at::kBFloat16, 5001), 0, "bf16 q, fp32 pages");
}

// A NaN inside an attended row reaches the output of exactly the heads that read it (as in the ATen form), even
// when its split is the only one with tokens: emptiness is the token range's, never the sum's.
TEST(GqaDecodePagedKernel, NanInAttendedRowPropagates) {
  HYLO_REQUIRE_CUDA();
  for (int64_t splits : {0, 1, 4}) {
    PagedBatch pb = make_batch(kShapes[0], {40, 3}, 16, at::kBFloat16, at::kBFloat16, 8000 + splits);
    const int64_t page = pb.table[0][1].item<int64_t>();
    pb.k_pages[page][5][1].fill_(NAN);  // token 21 of sequence 0, KV head 1: query heads 3-5
    const at::Tensor got = run_kernel(pb, splits), want = aten_reference(pb, at::kDouble);
    EXPECT_TRUE(at::equal(at::isnan(got), at::isnan(want))) << "splits " << splits;
    EXPECT_TRUE(at::isnan(got[0][3]).all().item<bool>());
    EXPECT_FALSE(at::isnan(got[1]).any().item<bool>());
  }
}

// Captured once with fixed buffers; then the lengths, the page table and the pages change in place and the graph
// is replayed: each replay matches the reference for the new contents (the launch shape never depended on them).
TEST(GqaDecodePagedKernel, CudaGraphReplayAfterInPlaceChanges) {
  HYLO_REQUIRE_CUDA();
  const Shape sh = kShapes[1];
  const int64_t ps = 64, max_pages = 40;
  const std::vector<std::vector<int64_t>> rounds = {{1, 64, 65}, {2000, 1, 0}, {2500, 700, 63}, {5, 2559, 129}};
  const int64_t num_pages = 3 * max_pages + 6;
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor k_pages = at::empty({num_pages, ps, sh.hkv, sh.d}, bf), v_pages = at::empty_like(k_pages);
  at::Tensor q = at::empty({3, sh.hq, sh.d}, bf);
  at::Tensor table = at::zeros({3, max_pages}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
  at::Tensor lengths = at::zeros({3}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
  auto load = [&](const PagedBatch& pb) {  // contents of pb into the static buffers, in place
    k_pages.narrow(0, 0, pb.k_pages.size(0)).copy_(pb.k_pages);
    v_pages.narrow(0, 0, pb.v_pages.size(0)).copy_(pb.v_pages);
    table.narrow(1, 0, pb.max_pages).copy_(pb.table);
    lengths.copy_(pb.lengths);
    q.copy_(pb.q);
  };
  kernels::set_poison_outputs(false);  // the fill would be captured too; the replays below check every element
  PagedBatch first = make_batch(sh, rounds[0], ps, at::kBFloat16, at::kBFloat16, 6000, 0, max_pages - 2);
  ASSERT_EQ(first.max_pages, max_pages);
  load(first);
  at::cuda::CUDAGraph graph;
  at::Tensor out;
  {
    // Warm-up (the one-time occupancy query) and capture on a side stream, as PyTorch does.
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    at::cuda::CUDAEvent loaded;
    loaded.record(c10::cuda::getCurrentCUDAStream());
    loaded.block(side);
    c10::cuda::CUDAStreamGuard guard(side);
    kernels::gqa_decode_paged_cuda(q, k_pages, v_pages, table, lengths, first.scale);
    graph.capture_begin();
    out = kernels::gqa_decode_paged_cuda(q, k_pages, v_pages, table, lengths, first.scale);
    graph.capture_end();
    side.synchronize();
  }
  for (size_t r = 0; r < rounds.size(); ++r) {
    PagedBatch pb = make_batch(sh, rounds[r], ps, at::kBFloat16, at::kBFloat16, 6100 + r, 0, 0);
    ASSERT_LE(pb.max_pages, max_pages);
    ASSERT_LE(pb.k_pages.size(0), num_pages);
    // The wider static table: its unused entries name the batch's NaN page, as make_batch's own do.
    const int32_t nan_page = int32_t(pb.k_pages.size(0) - 1);
    at::Tensor wide = at::full({3, max_pages}, nan_page, at::kInt);
    wide.narrow(1, 0, pb.max_pages).copy_(pb.table);
    pb.table = wide, pb.max_pages = max_pages;
    load(pb);
    out.fill_(NAN);
    graph.replay();
    expect_close(pb, out.cpu(), "graph replay " + std::to_string(r));
  }
}

// ops::gqa_decode_paged sends supported CUDA operands to the kernel (bitwise the same result) and the rest (fp64,
// head dim 96) to the ATen form on the GPU, which matches the CPU truth.
TEST(GqaDecodePagedKernel, OpRoutesToKernel) {
  HYLO_REQUIRE_CUDA();
  kernels::set_poison_outputs(false);
  PagedBatch pb = make_batch(kShapes[1], {1, 300, 77}, 16, at::kBFloat16, at::kBFloat16, 7000, 50);
  const at::Tensor q = pb.q.cuda(), k = pb.k_pages.cuda(), v = pb.v_pages.cuda();
  const at::Tensor table = pb.table.cuda(), lengths = pb.lengths.cuda();
  const at::Tensor via_op = ops::gqa_decode_paged(q, k, v, table, lengths, pb.scale, pb.window_opt());
  const at::Tensor direct = kernels::gqa_decode_paged_cuda(q, k, v, table, lengths, pb.scale, pb.window);
  EXPECT_TRUE(at::equal(via_op, direct));

  const at::Tensor truth = aten_reference(pb, at::kDouble);
  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(d(q), d(k), d(v), table, lengths));
  const at::Tensor fp64 = ops::gqa_decode_paged(d(q), d(k), d(v), table, lengths, pb.scale, pb.window_opt());
  EXPECT_LT(relative_rms_error(fp64, truth), 1e-12);

  PagedBatch odd = make_batch({8, 2, 96}, {1, 40}, 16, at::kBFloat16, at::kBFloat16, 7001);
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(odd.q.cuda(), odd.k_pages.cuda(), odd.v_pages.cuda(),
                                                   odd.table.cuda(), odd.lengths.cuda()));
  const at::Tensor o96 = ops::gqa_decode_paged(odd.q.cuda(), odd.k_pages.cuda(), odd.v_pages.cuda(),
                                               odd.table.cuda(), odd.lengths.cuda(), odd.scale);
  EXPECT_LT(relative_rms_error(o96, aten_reference(odd, at::kDouble)), std::ldexp(1.0, -7));
}

TEST(GqaDecodePagedKernel, SupportPredicate) {
  HYLO_REQUIRE_CUDA();
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  auto i32 = at::TensorOptions().dtype(at::kInt).device(at::kCUDA);
  at::Tensor q = at::zeros({2, 8, 64}, bf), k = at::zeros({8, 16, 2, 64}, bf), v = at::zeros_like(k);
  at::Tensor table = at::zeros({2, 4}, i32), lens = at::zeros({2}, i32);
  EXPECT_TRUE(kernels::gqa_decode_paged_supported(q, k, v, table, lens));
  EXPECT_TRUE(kernels::gqa_decode_paged_supported(q, k, v, at::zeros({2, 9}, i32).narrow(1, 0, 4), lens));
  EXPECT_TRUE(kernels::gqa_decode_paged_supported(q.to(at::kFloat), k, v, table, lens));
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(q, k, v, table.to(at::kLong), lens));
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(q, k, v, table, lens.cpu()));
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(q, k, v.to(at::kHalf), table, lens));  // k and v differ
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(at::zeros({2, 9, 64}, bf), k, v, table, lens));  // 2 does not divide 9
  at::Tensor wide = at::zeros({8, 16, 2, 72}, bf).narrow(3, 0, 64);  // rows not contiguous across heads
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(q, wide, wide, table, lens));
  EXPECT_FALSE(kernels::gqa_decode_paged_supported(q, k, v, at::zeros({3, 4}, i32), lens));
  EXPECT_THROW(kernels::gqa_decode_paged_cuda(q, k, v, table.to(at::kLong), lens, 1.0), Error);
}

// Timing (no assertion; numbers for docs/benchmarks.md), only with HYLO_GQA_DECODE_BENCH=1: one layer's decode
// attention, captured in a CUDA graph and replayed, for Llama-3.2-1B's grouping at batch 1 up to 1M tokens and
// SmolLM2-135M's at batch 256; the ATen form, timed eagerly, beside it up to 128K tokens.
TEST(GqaDecodePagedKernel, Bench) {
  HYLO_REQUIRE_CUDA();
  if (!std::getenv("HYLO_GQA_DECODE_BENCH")) GTEST_SKIP() << "set HYLO_GQA_DECODE_BENCH=1";
  kernels::set_poison_outputs(false);
  struct Row {
    const char* name;
    Shape sh;
    int64_t batch, len;
  };
  const Row rows[] = {{"llama-3.2-1b", {32, 8, 64}, 1, 8192},     {"llama-3.2-1b", {32, 8, 64}, 1, 131072},
                      {"llama-3.2-1b", {32, 8, 64}, 1, 1048576},  {"smollm2-135m", {9, 3, 64}, 256, 1024},
                      {"smollm2-135m", {9, 3, 64}, 256, 4096},    {"llama-3.2-1b", {32, 8, 64}, 64, 8192}};
  const int64_t ps = 64;
  for (const Row& r : rows) {
    auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
    const int64_t pages_per_seq = r.len / ps, num_pages = r.batch * pages_per_seq;
    at::Tensor k = at::randn({num_pages, ps, r.sh.hkv, r.sh.d}, bf), v = at::randn_like(k);
    at::Tensor q = at::randn({r.batch, r.sh.hq, r.sh.d}, bf);
    at::Tensor table = at::randperm(num_pages, at::TensorOptions().dtype(at::kLong).device(at::kCUDA))
                           .to(at::kInt)
                           .reshape({r.batch, pages_per_seq});
    at::Tensor lengths = at::full({r.batch}, r.len, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
    const double scale = 1.0 / std::sqrt(double(r.sh.d));
    at::cuda::CUDAGraph graph;
    // The inputs were written on the current stream; the side stream below does not wait for it, so without this
    // the warm-up calls could read a page table randperm has not filled yet (ids past the pool).
    c10::cuda::device_synchronize();
    {
      c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
      c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < 3; ++i) kernels::gqa_decode_paged_cuda(q, k, v, table, lengths, scale);
      graph.capture_begin();
      for (int i = 0; i < 10; ++i) kernels::gqa_decode_paged_cuda(q, k, v, table, lengths, scale);
      graph.capture_end();
      side.synchronize();
    }
    for (int i = 0; i < 3; ++i) graph.replay();
    at::cuda::CUDAEvent t0(cudaEventDefault), t1(cudaEventDefault);
    const int reps = 20;
    t0.record();
    for (int i = 0; i < reps; ++i) graph.replay();
    t1.record();
    t1.synchronize();
    const double us = t0.elapsed_time(t1) * 1000.0 / (reps * 10);
    const double gbs = 2.0 * double(k.numel()) * 2.0 / (us * 1e3);  // K and V bytes read per call
    double aten_us = 0.0;  // the ATen form, eager (its gathers allocate per call), where it fits comfortably
    if (r.len * r.batch <= 131072) {
      for (int i = 0; i < 2; ++i) ops::gqa_decode_paged_reference(q, k, v, table, lengths, scale);
      at::cuda::CUDAEvent a0(cudaEventDefault), a1(cudaEventDefault);
      a0.record();
      for (int i = 0; i < 5; ++i) ops::gqa_decode_paged_reference(q, k, v, table, lengths, scale);
      a1.record();
      a1.synchronize();
      aten_us = a0.elapsed_time(a1) * 1000.0 / 5;
    }
    std::printf("BENCH gqa decode %-14s B=%-4ld len=%-8ld Hq/Hkv/D=%ld/%ld/%ld page=%ld: kernel %.1f us (%.0f GB/s K+V)"
                ", aten %.1f us\n",
                r.name, long(r.batch), long(r.len), long(r.sh.hq), long(r.sh.hkv), long(r.sh.d), long(ps), us, gbs,
                aten_us);
  }
}

#endif  // HYLO_HAVE_CUDA

}  // namespace
}  // namespace hylo
