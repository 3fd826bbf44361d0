// The paged MLA latent decode (kernels::mla_latent_decode_paged) against the ATen reference: ops::mla_attention_absorbed
// per sequence on its rows gathered from the pages, with an identity kv_b_proj ([I; I], one group, Dn = Dv = Rkv) so
// the op's absorbed form is exactly the attention core (q~ = q, out = ctx). The fp64 op on the bf16-rounded inputs is
// the truth; the same op in bf16 (CPU) sets the tolerance as the contiguous kernel's tests do: error <= 2 x the ATen
// form's own bf16 error + 2^-9 (relative RMS), and the same for the max abs error with a 2^-7 floor.
//
// Pages are handed out in a shuffled order and interleaved between sequences; rows past a sequence's length in its
// last page, and a spare page that every unused page-table entry points at, hold NaN, so reading anything past a
// length shows; outputs are NaN before the call and the caching allocator is NaN-filled, so unwritten outputs and
// partials the combine should skip show too. Also: the paged and the contiguous kernel agree bitwise on the same
// rows, and a CUDA-graph capture replays correctly after the lengths, the page table and the pages change in place.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "hylo/ops/mla.h"
#include "hylo/ops/tensor_util.h"
#if HYLO_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include "hylo/kernels/mla_decode/mla_decode.h"
#endif

namespace hylo {
namespace {

#if !HYLO_HAVE_CUDA
TEST(MlaDecodePagedKernel, NeedsCudaBuild) { GTEST_SKIP() << "built without HYLO_CUDA: no kernels to test"; }
#else

#define REQUIRE_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device"

// Fills freed blocks of the caching allocator (large and small pools) with NaN, so buffers the kernel takes from it
// (the split partials) start as NaN.
void poison_allocator() {
  auto o = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  at::Tensor big = at::full({int64_t{1} << 28}, NAN, o);
  std::vector<at::Tensor> small;
  for (int i = 0; i < 64; ++i) small.push_back(at::full({int64_t{1} << 17}, NAN, o));
}

// One paged batch: S sequences with their lengths, pages [P, page_size, C+R] bf16 on the GPU, the table [S, maxp].
struct PagedBatch {
  int64_t h = 0, c = 0, r = 0, page_size = 0, max_pages = 0;
  std::vector<int64_t> lens;
  std::vector<std::vector<int32_t>> table;  // used entries per sequence (ceil(len / page_size))
  int32_t nan_page = 0;                     // every unused table entry
  at::Tensor pages;                         // [P, page_size, C+R] bf16 CUDA
  at::Tensor q_lat, q_pe;                   // [S, H, C], [S, H, R] bf16 CUDA
  double scale = 0.0;

  int64_t num_seqs() const { return int64_t(lens.size()); }

  at::Tensor table_tensor() const {  // [S, max_pages] int32 CUDA
    at::Tensor t = at::full({num_seqs(), max_pages}, nan_page, at::kInt);
    for (int64_t i = 0; i < num_seqs(); ++i)
      for (size_t j = 0; j < table[i].size(); ++j) t[i][int64_t(j)] = table[i][j];
    return t.to(at::kCUDA);
  }
  at::Tensor lengths_tensor() const {
    return at::tensor(std::vector<int>(lens.begin(), lens.end()), at::kInt).to(at::kCUDA);
  }
  // Rows [0, len) of sequence i gathered from the pages: [len, C+R] on the CPU.
  at::Tensor gather(int64_t i) const {
    at::Tensor rows = pages.cpu().reshape({-1, c + r});  // [P * page_size, C+R]
    std::vector<int64_t> idx;
    for (int64_t t = 0; t < lens[i]; ++t) idx.push_back(int64_t(table[i][t / page_size]) * page_size + t % page_size);
    return rows.index_select(0, at::tensor(idx, at::kLong));
  }
};

// Fresh random pages for `lens`; the pages of all sequences are one shuffled list handed out round-robin (so a
// sequence's pages are neither contiguous nor in order); `spare_pages` more pages than needed exist.
PagedBatch make_batch(int64_t h, int64_t c, int64_t r, std::vector<int64_t> lens, int64_t page_size, uint64_t seed,
                      int64_t extra_table_pages = 3, int64_t spare_pages = 5) {
  PagedBatch pb;
  pb.h = h, pb.c = c, pb.r = r, pb.page_size = page_size, pb.lens = std::move(lens);
  pb.scale = 1.0 / std::sqrt(double(c / 4 + r));
  std::vector<int64_t> need;
  int64_t total = 0, most = 0;
  for (int64_t len : pb.lens) {
    need.push_back((len + page_size - 1) / page_size);
    total += need.back(), most = std::max(most, need.back());
  }
  const int64_t num_pages = total + spare_pages + 1;
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(size_t(num_pages - 1));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  pb.nan_page = int32_t(num_pages - 1);
  pb.table.assign(pb.lens.size(), {});
  size_t next = 0;
  for (int64_t round = 0; round < most; ++round)
    for (size_t i = 0; i < pb.lens.size(); ++i)
      if (round < need[i]) pb.table[i].push_back(ids[next++]);
  pb.max_pages = most + extra_table_pages;

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto rnd = [&](at::IntArrayRef shape) { return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)); };
  at::Tensor pages = rnd({num_pages, page_size, c + r}).to(at::kBFloat16);  // [P, page, C+R]
  pages[pb.nan_page].fill_(NAN);
  for (size_t i = 0; i < pb.lens.size(); ++i) {
    const int64_t used = pb.lens[i] % page_size;
    if (used != 0) pages[pb.table[i].back()].narrow(0, used, page_size - used).fill_(NAN);
  }
  pb.pages = pages.to(at::kCUDA);
  pb.q_lat = rnd({pb.num_seqs(), h, c}).to(at::kBFloat16).to(at::kCUDA);
  pb.q_pe = rnd({pb.num_seqs(), h, r}).to(at::kBFloat16).to(at::kCUDA);
  return pb;
}

// ctx [S, H, C] fp64 on the CPU through ops::mla_attention_absorbed in `dtype` (identity kv_b_proj).
at::Tensor aten_reference(const PagedBatch& pb, at::ScalarType dtype) {
  const at::Tensor eye = at::eye(pb.c, at::TensorOptions().dtype(dtype));
  const at::Tensor w_kvb = at::cat({eye, eye}, 0);  // [2C, C]: W_UK = W_UV = I
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < pb.num_seqs(); ++i) {
    const int64_t n = pb.lens[i];
    if (n == 0) {
      outs.push_back(at::zeros({pb.h, pb.c}, at::kDouble));
      continue;
    }
    at::Tensor rows = pb.gather(i).to(dtype);                                  // [n, C+R]
    at::Tensor c_kv = rows.narrow(1, 0, pb.c).unsqueeze(0);                    // [1, n, C]
    at::Tensor k_pe = rows.narrow(1, pb.c, pb.r).unsqueeze(0);                 // [1, n, R]
    at::Tensor q = pb.q_lat[i].cpu().to(dtype).reshape({1, 1, pb.h, pb.c});    // [1, 1, H, C]
    at::Tensor qp = pb.q_pe[i].cpu().to(dtype).reshape({1, 1, pb.h, pb.r});    // [1, 1, H, R]
    at::Tensor ctx = ops::mla_attention_absorbed(q, qp, c_kv.contiguous(), k_pe.contiguous(), w_kvb, 1, pb.scale,
                                                 n - 1);                        // [1, 1, H, C]
    outs.push_back(ctx.reshape({pb.h, pb.c}).to(at::kDouble));
  }
  return at::stack(outs);  // [S, H, C]
}

struct Errors {
  double rel, rel_ref, max_abs, max_ref;
};

Errors compare(const PagedBatch& pb, const at::Tensor& out) {
  const at::Tensor want = aten_reference(pb, at::kDouble), aten = aten_reference(pb, at::kBFloat16);
  const at::Tensor got = out.cpu().to(at::kDouble);
  return {relative_rms_error(got, want), relative_rms_error(aten, want), (got - want).abs().max().item<double>(),
          (aten - want).abs().max().item<double>()};
}

void expect_close(const PagedBatch& pb, const at::Tensor& out, const char* what, int64_t splits) {
  ASSERT_FALSE(at::isnan(out).any().item<bool>()) << what << ": NaN in the output (unwritten or read past a length)";
  const Errors e = compare(pb, out);
  std::string lens;
  for (int64_t l : pb.lens) lens += std::to_string(l) + " ";
  std::printf("%s H=%ld C+R=%ld+%ld page=%ld splits=%ld lens [%s]: rel rms %.3g (ATen bf16 %.3g), max abs %.3g "
              "(%.3g)\n",
              what, long(pb.h), long(pb.c), long(pb.r), long(pb.page_size), long(splits), lens.c_str(), e.rel,
              e.rel_ref, e.max_abs, e.max_ref);
  EXPECT_LE(e.rel, 2.0 * e.rel_ref + std::ldexp(1.0, -9)) << what;
  EXPECT_LE(e.max_abs, 2.0 * e.max_ref + std::ldexp(1.0, -7)) << what;
}

void check_paged(const PagedBatch& pb, int64_t splits) {
  const at::Tensor table = pb.table_tensor(), lengths = pb.lengths_tensor();
  ASSERT_TRUE(kernels::mla_latent_decode_paged_supported(pb.q_lat, pb.q_pe, pb.pages, table, lengths));
  at::Tensor out = at::full({pb.num_seqs(), pb.h, pb.c}, NAN, pb.q_lat.options());
  poison_allocator();
  kernels::mla_latent_decode_paged(pb.q_lat, pb.q_pe, pb.pages, table, lengths, pb.scale, splits, out);
  expect_close(pb, out, "paged", splits);
}

const int64_t kWidths[][2] = {{128, 32}, {256, 64}, {512, 64}};  // 160, 320, 576

// Lengths around a page and a tile (1, 63, 64, 65), odd ones and a few pages, several sequences of different
// lengths in one call, 9 and 32 heads, the three upcycled widths, 64-token pages.
TEST(MlaDecodePagedKernel, MatchesAtenAcrossLengthsWidthsAndHeads) {
  REQUIRE_CUDA();
  uint64_t seed = 1000;
  for (const auto& w : kWidths)
    for (int64_t h : {9, 32}) {
      for (int64_t len : {1, 63, 64, 65}) check_paged(make_batch(h, w[0], w[1], {len}, 64, seed += 7), 0);
      check_paged(make_batch(h, w[0], w[1], {1, 63, 64, 65, 129, 777, 2049}, 64, seed += 7), 0);
    }
}

// Page sizes other than 64, also ones that are not a multiple of the key tile (16, 48) or larger than it.
TEST(MlaDecodePagedKernel, PageSizes) {
  REQUIRE_CUDA();
  uint64_t seed = 2000;
  for (int64_t ps : {1, 16, 48, 128, 256})
    for (const auto& w : kWidths) check_paged(make_batch(9, w[0], w[1], {1, 95, 300, 1025}, ps, seed += 7), 0);
}

// Forced split counts (one, odd, more than the tiles), a length-0 sequence (ctx 0), a long sequence beside short
// ones (the short ones' later splits are empty partials the combine must skip), and the table's capacity far
// beyond the lengths.
TEST(MlaDecodePagedKernel, SplitsEmptySequencesAndLongContext) {
  REQUIRE_CUDA();
  for (int64_t splits : {1, 3, 7, 1000}) check_paged(make_batch(32, 256, 64, {5000, 333, 0, 64}, 64, 3000 + splits), splits);
  check_paged(make_batch(9, 128, 32, {0}, 64, 3100), 0);
  check_paged(make_batch(9, 128, 32, {100003, 5, 64}, 64, 3101), 0);
  check_paged(make_batch(32, 512, 64, {20001, 1}, 64, 3102, /*extra_table_pages=*/4000), 0);
}

// The paged and the contiguous kernel run the same split kernel: with the same capacity and splits they agree
// bitwise on the same rows.
TEST(MlaDecodePagedKernel, EqualsContiguousKernelBitwise) {
  REQUIRE_CUDA();
  for (const auto& w : kWidths) {
    PagedBatch pb = make_batch(32, w[0], w[1], {1000, 64, 3}, 64, 4000 + w[0], /*extra_table_pages=*/0);
    const int64_t cap = pb.max_pages * pb.page_size;
    at::Tensor cache = at::zeros({pb.num_seqs(), cap, w[0] + w[1]}, pb.pages.options());  // [S, cap, C+R]
    for (int64_t i = 0; i < pb.num_seqs(); ++i) cache[i].narrow(0, 0, pb.lens[i]).copy_(pb.gather(i));
    const at::Tensor lengths = pb.lengths_tensor();
    for (int64_t splits : {0, 5}) {
      at::Tensor contiguous = kernels::mla_latent_decode(pb.q_lat, pb.q_pe, cache.narrow(2, 0, w[0]),
                                                         cache.narrow(2, w[0], w[1]), lengths, pb.scale, splits);
      at::Tensor paged = kernels::mla_latent_decode_paged(pb.q_lat, pb.q_pe, pb.pages, pb.table_tensor(), lengths,
                                                          pb.scale, splits);
      EXPECT_TRUE(at::equal(paged, contiguous)) << "C+R " << w[0] << "+" << w[1] << " splits " << splits;
    }
  }
}

// Captured once with fixed buffers; then the lengths, the page table and the pages change in place and the graph
// is replayed: each replay matches the reference for the new contents (the launch shape never depended on them).
TEST(MlaDecodePagedKernel, CudaGraphReplayAfterInPlaceChanges) {
  REQUIRE_CUDA();
  const int64_t h = 9, c = 128, r = 32, ps = 64, max_pages = 40;
  // Every round has 3 sequences whose pages fit max_pages; the static buffers hold the largest page pool.
  const std::vector<std::vector<int64_t>> rounds = {{1, 64, 65}, {2000, 1, 0}, {2500, 700, 63}, {5, 2559, 129}};
  const int64_t num_pages = 3 * max_pages + 6;
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor pages = at::empty({num_pages, ps, c + r}, bf), q_lat = at::empty({3, h, c}, bf);
  at::Tensor q_pe = at::empty({3, h, r}, bf), out = at::empty({3, h, c}, bf);
  at::Tensor table = at::zeros({3, max_pages}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
  at::Tensor lengths = at::zeros({3}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
  auto load = [&](const PagedBatch& pb) {  // contents of pb into the static buffers, in place
    pages.narrow(0, 0, pb.pages.size(0)).copy_(pb.pages);
    table.copy_(pb.table_tensor());
    lengths.copy_(pb.lengths_tensor());
    q_lat.copy_(pb.q_lat), q_pe.copy_(pb.q_pe);
    out.fill_(NAN);
  };
  PagedBatch first = make_batch(h, c, r, rounds[0], ps, 5000, max_pages - 2);
  ASSERT_EQ(first.max_pages, max_pages);
  load(first);
  at::cuda::CUDAGraph graph;
  {
    // Warm-up (the kernel's one-time attribute setting) and capture on a side stream, as PyTorch does.
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    at::cuda::CUDAEvent loaded;
    loaded.record(c10::cuda::getCurrentCUDAStream());
    loaded.block(side);
    c10::cuda::CUDAStreamGuard guard(side);
    kernels::mla_latent_decode_paged(q_lat, q_pe, pages, table, lengths, first.scale, 0, out);
    graph.capture_begin();
    kernels::mla_latent_decode_paged(q_lat, q_pe, pages, table, lengths, first.scale, 0, out);
    graph.capture_end();
    side.synchronize();
  }
  for (size_t k = 0; k < rounds.size(); ++k) {
    PagedBatch pb = make_batch(h, c, r, rounds[k], ps, 5000 + k, 0);
    ASSERT_LE(pb.max_pages, max_pages);
    ASSERT_LE(pb.pages.size(0), num_pages);
    pb.nan_page = int32_t(pb.pages.size(0) - 1);  // unused entries of the wider static table
    pb.max_pages = max_pages;
    load(pb);
    graph.replay();
    expect_close(pb, out, "graph replay", 0);
  }
}

TEST(MlaDecodePagedKernel, SupportPredicate) {
  REQUIRE_CUDA();
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  auto i32 = at::TensorOptions().dtype(at::kInt).device(at::kCUDA);
  at::Tensor q = at::zeros({2, 4, 128}, bf), qp = at::zeros({2, 4, 32}, bf);
  at::Tensor pages = at::zeros({8, 64, 160}, bf), table = at::zeros({2, 4}, i32), lens = at::zeros({2}, i32);
  EXPECT_TRUE(kernels::mla_latent_decode_paged_supported(q, qp, pages, table, lens));
  EXPECT_TRUE(kernels::mla_latent_decode_paged_supported(q, qp, pages, at::zeros({2, 9}, i32).narrow(1, 0, 4), lens));
  EXPECT_FALSE(kernels::mla_latent_decode_paged_supported(q, qp, pages, table.to(at::kLong), lens));
  EXPECT_FALSE(kernels::mla_latent_decode_paged_supported(q, qp, pages, table, lens.cpu()));
  EXPECT_FALSE(kernels::mla_latent_decode_paged_supported(q, qp, at::zeros({8, 64, 192}, bf), table, lens));
  EXPECT_FALSE(kernels::mla_latent_decode_paged_supported(q, qp, pages.to(at::kFloat), table, lens));
  EXPECT_FALSE(kernels::mla_latent_decode_paged_supported(q, qp, at::zeros({8, 64, 168}, bf).narrow(2, 0, 160), table,
                                                          lens));
  EXPECT_FALSE(kernels::mla_latent_decode_paged_supported(q, qp, pages, at::zeros({3, 4}, i32), lens));
}

#endif  // HYLO_HAVE_CUDA

}  // namespace
}  // namespace hylo
