// DecodeGraphs (infer/engine/cuda_graphs.h): buckets, packing and padding of a step's rows (on the CPU, in CI), and
// on a GPU the captured-and-replayed step against the same step run eagerly: a small decode-shaped ATen step that
// embeds ids, writes a latent row into a paged cache at write_rows, updates a recurrent state slot, attends over
// each row's pages up to its length and returns logits. Steps of changing batch sizes (so buckets and padding
// change) must give the eager logits, and leave the pools (pages, state) as the eager run does.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/infer/engine/cuda_graphs.h"

namespace hylo::engine {
namespace {

TEST(DecodeGraphs, BucketSizes) {
  EXPECT_EQ(DecodeGraphs::bucket_sizes(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(DecodeGraphs::bucket_sizes(8), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(DecodeGraphs::bucket_sizes(6), (std::vector<int64_t>{1, 2, 4, 6}));
  EXPECT_EQ(DecodeGraphs::bucket_sizes(9), (std::vector<int64_t>{1, 2, 4, 8, 9}));
}

// The step echoes its inputs: row i = [id, position, slot, write_row, length, sum of the table row].
at::Tensor echo_step(const DecodeGraphInputs& in) {
  return at::stack({in.ids.to(at::kDouble), in.positions.to(at::kDouble), in.slots.to(at::kDouble),
                    in.write_rows.to(at::kDouble), in.lengths.to(at::kDouble),
                    in.page_table.to(at::kDouble).sum(1)},
                   1);  // [Bk, 6]
}

TEST(DecodeGraphs, PacksRowsAndPadsOnTheCpu) {
  DecodeGraphOptions o;
  o.max_batch = 8, o.max_pages = 4, o.page_size = 16, o.scratch_slot = 99, o.scratch_page = 7;
  DecodeGraphs graphs(o, echo_step);
  EXPECT_FALSE(graphs.graphs_enabled());
  EXPECT_EQ(graphs.bucket_for(1), 1);
  EXPECT_EQ(graphs.bucket_for(3), 4);
  EXPECT_EQ(graphs.bucket_for(8), 8);
  EXPECT_THROW(graphs.bucket_for(0), Error);
  EXPECT_THROW(graphs.bucket_for(9), Error);

  DecodeStepRows rows;
  rows.ids = {5, 6, 7};
  rows.positions = {0, 20, 33};
  rows.slots = {0, 1, 2};
  rows.write_rows = {3 * 16, 16 + 4, 2 * 16 + 1};
  rows.lengths = {1, 21, 34};
  rows.pages = {{3}, {4, 1}, {0, 5, 2}};
  at::Tensor out = graphs.run(rows);  // [3, 6]
  ASSERT_EQ(out.sizes(), at::IntArrayRef({3, 6}));
  for (int64_t i = 0; i < 3; ++i) {
    const auto& p = rows.pages[size_t(i)];
    double table_sum = 0;
    for (int32_t v : p) table_sum += v;
    table_sum += double(o.max_pages - int64_t(p.size())) * o.scratch_page;  // unused entries: the scratch page
    EXPECT_EQ(out[i][0].item<double>(), double(rows.ids[size_t(i)]));
    EXPECT_EQ(out[i][1].item<double>(), double(rows.positions[size_t(i)]));
    EXPECT_EQ(out[i][2].item<double>(), double(rows.slots[size_t(i)]));
    EXPECT_EQ(out[i][3].item<double>(), double(rows.write_rows[size_t(i)]));
    EXPECT_EQ(out[i][4].item<double>(), double(rows.lengths[size_t(i)]));
    EXPECT_EQ(out[i][5].item<double>(), table_sum);
  }
  // The padding row of bucket 4: scratch slot, scratch page, length 0.
  const DecodeGraphInputs& in = graphs.inputs(4);
  EXPECT_EQ(in.ids[3].item<int64_t>(), 0);
  EXPECT_EQ(in.slots[3].item<int64_t>(), 99);
  EXPECT_EQ(in.write_rows[3].item<int64_t>(), 7 * 16);
  EXPECT_EQ(in.lengths[3].item<int32_t>(), 0);
  EXPECT_TRUE(at::equal(in.page_table[3], at::full({4}, 7, at::kInt)));
  // A full step of 4 rows, then the 3-row step again in the same bucket: row 3 is padding again.
  DecodeStepRows four = rows;
  four.ids.push_back(8), four.positions.push_back(2), four.slots.push_back(3), four.write_rows.push_back(6 * 16 + 2);
  four.lengths.push_back(3), four.pages.push_back({6});
  ASSERT_EQ(graphs.run(four).size(0), 4);
  EXPECT_EQ(in.slots[3].item<int64_t>(), 3);
  ASSERT_EQ(graphs.run(rows).size(0), 3);
  EXPECT_EQ(in.slots[3].item<int64_t>(), 99);
  EXPECT_EQ(in.lengths[3].item<int32_t>(), 0);
  EXPECT_EQ(in.write_rows[3].item<int64_t>(), 7 * 16);

  StepBatch sb = in.step_batch();
  EXPECT_EQ(sb.num_decode, 4);
  EXPECT_TRUE(sb.decode_only());
  EXPECT_EQ(sb.seqs[3].offset, 3);
  EXPECT_TRUE(sb.page_table.is_same(in.page_table));
}

TEST(DecodeGraphs, RejectsBadRows) {
  DecodeGraphOptions o;
  o.max_batch = 2, o.max_pages = 2, o.page_size = 4;
  DecodeGraphs graphs(o, echo_step);
  DecodeStepRows rows;
  rows.ids = {1}, rows.positions = {0}, rows.slots = {0}, rows.write_rows = {0}, rows.lengths = {1};
  rows.pages = {{0, 1, 2}};
  EXPECT_THROW(graphs.run(rows), Error);  // more pages than max_pages
  rows.pages = {{0}};
  rows.lengths = {};
  EXPECT_THROW(graphs.run(rows), Error);  // lengths disagree
  EXPECT_THROW(graphs.run(DecodeStepRows{}), Error);  // empty step
  DecodeGraphOptions bad = o;
  bad.max_batch = 0;
  EXPECT_THROW((void)DecodeGraphs(bad, echo_step), Error);
  EXPECT_THROW((void)DecodeGraphs(o, DecodeStepFn{}), Error);
}

TEST(DecodeGraphs, RowsFromADecodeStepBatch) {
  StepBatch b;
  b.page_size = 16;
  b.seqs.resize(2);
  b.seqs[0].count = 1, b.seqs[0].start = 17, b.seqs[0].slot = 3, b.seqs[0].pages = {9, 4};
  b.seqs[1].offset = 1, b.seqs[1].count = 1, b.seqs[1].start = 0, b.seqs[1].slot = 0, b.seqs[1].pages = {2};
  b.num_tokens = 2, b.num_decode = 2;
  DecodeStepRows r = DecodeStepRows::from_batch(b, {11, 12});
  EXPECT_EQ(r.positions, (std::vector<int64_t>{17, 0}));
  EXPECT_EQ(r.lengths, (std::vector<int32_t>{18, 1}));
  EXPECT_EQ(r.write_rows, (std::vector<int64_t>{4 * 16 + 1, 2 * 16}));
  EXPECT_EQ(r.slots, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(r.ids, (std::vector<int64_t>{11, 12}));
  b.seqs[0].pages = {9};  // position 17 needs a second page
  EXPECT_THROW(DecodeStepRows::from_batch(b, {11, 12}), Error);
}

// A decode-shaped toy model over its own pools; every op is capture-safe (no sync, no data-dependent shapes).
struct Toy {
  static constexpr int64_t kVocab = 50, kDim = 32, kWidth = 24;
  int64_t page_size, max_pages, num_pages, num_slots;
  at::Tensor emb, w_lat, w_back, w_out;  // [V, D], [D, W], [W, D], [D, V]
  at::Tensor pages;                      // [P, page_size, W] fp32
  at::Tensor state;                      // [slots, D] fp32

  Toy(at::Device device, int64_t page_size_, int64_t max_pages_, int64_t num_pages_, int64_t num_slots_, uint64_t seed)
      : page_size(page_size_), max_pages(max_pages_), num_pages(num_pages_), num_slots(num_slots_) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto rnd = [&](at::IntArrayRef s, double sd) { return (at::randn(s, gen) * sd).to(device); };
    emb = rnd({kVocab, kDim}, 1.0), w_lat = rnd({kDim, kWidth}, 0.2), w_back = rnd({kWidth, kDim}, 0.2);
    w_out = rnd({kDim, kVocab}, 0.2);
    pages = rnd({num_pages, page_size, kWidth}, 1.0);
    state = rnd({num_slots, kDim}, 1.0);
  }

  at::Tensor step(const DecodeGraphInputs& in) {
    const int64_t bk = in.batch, span = max_pages * page_size;
    at::Tensor x = emb.index_select(0, in.ids) + at::sin(in.positions.to(at::kFloat)).unsqueeze(1);  // [Bk, D]
    at::Tensor lat = at::matmul(x, w_lat);                                                          // [Bk, W]
    pages.view({-1, kWidth}).index_copy_(0, in.write_rows, lat);
    at::Tensor st = state.index_select(0, in.slots) * 0.5 + x;                                      // [Bk, D]
    state.index_copy_(0, in.slots, st);
    at::Tensor rows = pages.index_select(0, in.page_table.reshape({-1}).to(at::kLong))
                          .view({bk, span, kWidth});                                                // [Bk, L, W]
    at::Tensor scores = at::matmul(rows, lat.unsqueeze(2)).squeeze(2) / std::sqrt(double(kWidth));   // [Bk, L]
    at::Tensor live = at::arange(span, in.lengths.options().dtype(at::kLong)).unsqueeze(0) <
                      in.lengths.to(at::kLong).unsqueeze(1);                                        // [Bk, L]
    at::Tensor p = at::softmax(scores.masked_fill(live.logical_not(), -1e30), 1) * live;            // [Bk, L]
    at::Tensor ctx = at::matmul(p.unsqueeze(1), rows).squeeze(1);                                   // [Bk, W]
    return at::matmul(st + at::matmul(ctx, w_back), w_out);                                        // [Bk, V]
  }
};

// Sequences with their own slot, pages and length, decoded in steps over changing subsets.
struct Seqs {
  int64_t page_size;
  std::vector<int64_t> lengths, slots;
  std::vector<std::vector<int32_t>> pages;
  int32_t next_page = 0;

  DecodeStepRows step(const std::vector<int64_t>& which, std::mt19937_64& rng) {
    DecodeStepRows r;
    for (int64_t s : which) {
      const int64_t pos = lengths[size_t(s)];
      auto& pg = pages[size_t(s)];
      if (pos / page_size >= int64_t(pg.size())) pg.push_back(next_page++);
      r.ids.push_back(int64_t(rng() % Toy::kVocab));
      r.positions.push_back(pos);
      r.slots.push_back(slots[size_t(s)]);
      r.write_rows.push_back(int64_t(pg[size_t(pos / page_size)]) * page_size + pos % page_size);
      r.lengths.push_back(int32_t(pos + 1));
      r.pages.push_back(pg);
      lengths[size_t(s)] = pos + 1;
    }
    return r;
  }
};

TEST(DecodeGraphs, ReplayMatchesEagerOnTheGpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !HYLO_HAVE_CUDA
  GTEST_SKIP() << "built without HYLO_CUDA: graphs are off";
#else
  const at::Device dev(at::kCUDA, 0);
  const int64_t ps = 16, max_pages = 12, num_pages = 200, num_slots = 9, nseq = 8;
  Toy graphed(dev, ps, max_pages, num_pages, num_slots, 7), eager(dev, ps, max_pages, num_pages, num_slots, 7);
  DecodeGraphOptions o;
  o.device = dev, o.max_batch = 8, o.max_pages = max_pages, o.page_size = ps;
  o.scratch_slot = num_slots - 1, o.scratch_page = int32_t(num_pages - 1);
  DecodeGraphs graphs(o, [&](const DecodeGraphInputs& in) { return graphed.step(in); });
  o.use_graphs = false;
  DecodeGraphs plain(o, [&](const DecodeGraphInputs& in) { return eager.step(in); });
  ASSERT_TRUE(graphs.graphs_enabled());
  ASSERT_FALSE(plain.graphs_enabled());

  // Eight sequences with prompts of 0-90 tokens already cached (pages handed out in order; scratch page last).
  std::mt19937_64 rng(11);
  Seqs seqs{ps, {}, {}, {}, 0};
  for (int64_t s = 0; s < nseq; ++s) {
    const int64_t len = int64_t(rng() % 91);
    seqs.lengths.push_back(len);
    seqs.slots.push_back(s);
    seqs.pages.emplace_back();
    for (int64_t t = 0; t < len; t += ps) seqs.pages.back().push_back(seqs.next_page++);
  }
  const std::vector<std::vector<int64_t>> steps = {{0, 1, 2}, {5}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4, 5, 6, 7},
                                                   {6, 2}, {7, 3, 1}, {4}, {0, 1, 2, 3, 4, 5, 6, 7}, {5, 6, 7}};
  double worst = 0.0;
  for (size_t k = 0; k < steps.size(); ++k) {
    std::mt19937_64 r1(100 + k);
    const DecodeStepRows rows = seqs.step(steps[k], r1);
    at::Tensor got = graphs.run(rows).clone();   // [B, V]
    at::Tensor want = plain.run(rows);           // [B, V]
    ASSERT_EQ(got.sizes(), want.sizes());
    ASSERT_TRUE(at::isfinite(got).all().item<bool>());
    const double diff = (got - want).abs().max().item<double>(), scale = want.abs().max().item<double>();
    worst = std::max(worst, diff / scale);
    EXPECT_LE(diff, 1e-5 * scale) << "step " << k << " batch " << rows.size();
  }
  // The pools of the real sequences and slots end up the same (the scratch page / slot may differ).
  const int64_t used_pages = seqs.next_page;
  EXPECT_TRUE(at::allclose(graphed.pages.narrow(0, 0, used_pages), eager.pages.narrow(0, 0, used_pages), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(graphed.state.narrow(0, 0, nseq), eager.state.narrow(0, 0, nseq), 1e-5, 1e-5));
  EXPECT_EQ(graphs.replays(), int64_t(steps.size()));
  EXPECT_EQ(graphs.captures(), 4);  // buckets 4, 1, 8, 2 were all used
  for (int64_t b : {1, 2, 4, 8}) EXPECT_TRUE(graphs.captured(b));
  std::printf("decode graphs: %zu steps replayed, max |graph - eager| / max |eager| = %.3g\n", steps.size(), worst);
  graphs.capture_all();  // every bucket is captured already: nothing new
  EXPECT_EQ(graphs.captures(), 4);
#endif
}

// capture_all captures every bucket up front (largest first, one shared pool) and the replays then match eager.
TEST(DecodeGraphs, CaptureAllThenReplay) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !HYLO_HAVE_CUDA
  GTEST_SKIP() << "built without HYLO_CUDA: graphs are off";
#else
  const at::Device dev(at::kCUDA, 0);
  const int64_t ps = 8, max_pages = 6, num_pages = 64, num_slots = 7;
  Toy graphed(dev, ps, max_pages, num_pages, num_slots, 3), eager(dev, ps, max_pages, num_pages, num_slots, 3);
  DecodeGraphOptions o;
  o.device = dev, o.max_batch = 6, o.max_pages = max_pages, o.page_size = ps;
  o.scratch_slot = num_slots - 1, o.scratch_page = int32_t(num_pages - 1);
  DecodeGraphs graphs(o, [&](const DecodeGraphInputs& in) { return graphed.step(in); });
  graphs.capture_all();
  EXPECT_EQ(graphs.captures(), 4);  // 1, 2, 4, 6
  std::mt19937_64 rng(5);
  Seqs seqs{ps, {3, 0, 17, 40, 9, 1}, {0, 1, 2, 3, 4, 5}, {}, 0};
  for (int64_t len : seqs.lengths) {
    seqs.pages.emplace_back();
    for (int64_t t = 0; t < len; t += ps) seqs.pages.back().push_back(seqs.next_page++);
  }
  for (const std::vector<int64_t>& which : {std::vector<int64_t>{0, 1, 2, 3, 4, 5}, {2}, {1, 3}, {0, 4, 5}}) {
    const DecodeStepRows rows = seqs.step(which, rng);
    at::Tensor got = graphs.run(rows).clone();
    // The unpadded eager step on exactly these rows: a bucket of B rows with nothing to pad.
    DecodeGraphOptions e = o;
    e.use_graphs = false, e.max_batch = rows.size();
    DecodeGraphs exact(e, [&](const DecodeGraphInputs& in) { return eager.step(in); });
    at::Tensor want = exact.run(rows);
    const double diff = (got - want).abs().max().item<double>(), scale = want.abs().max().item<double>();
    EXPECT_LE(diff, 1e-5 * scale) << "batch " << rows.size();
  }
  EXPECT_EQ(graphs.captures(), 4);
  EXPECT_EQ(graphs.replays(), 4);
#endif
}

}  // namespace
}  // namespace hylo::engine
