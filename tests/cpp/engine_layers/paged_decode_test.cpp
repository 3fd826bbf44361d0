// The paged decode references (ops/paged_decode.h) against the contiguous ops, one sequence at a time: the MLA op
// against ops::mla_attention_absorbed (and the decompressed form), the GQA op against
// ops::causal_attention_reference, with scattered page tables, lengths 0, 1, page-aligned and full, and NaN in
// every row that is not a sequence's token.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../mla/mla_test_util.h"
#include "hylo/core/result.h"
#include "hylo/ops/attention.h"
#include "hylo/ops/mla.h"
#include "hylo/ops/paged_decode.h"

namespace hylo::ops {
namespace {

using mla_test::randn;

struct Paged {
  at::Tensor pages;        // [P, page_size, ...] NaN outside the sequences' tokens
  at::Tensor page_table;   // [S, max_pages] int32
  at::Tensor lengths;      // [S] int32
  std::vector<at::Tensor> tokens;  // per sequence [len, ...]: its rows in order, as written to the pages
};

// Sequences of the given lengths with random rows, spread over a shuffled pool of pages.
Paged make_paged(const std::vector<int64_t>& lengths, int64_t page_size, at::IntArrayRef row_shape, uint64_t seed,
                 at::ScalarType dtype) {
  std::mt19937_64 rng(seed);
  int64_t max_pages = 1, total_pages = 3;
  for (int64_t l : lengths) {
    max_pages = std::max(max_pages, (l + page_size - 1) / page_size);
    total_pages += (l + page_size - 1) / page_size;
  }
  std::vector<int64_t> shape = {total_pages, page_size};
  shape.insert(shape.end(), row_shape.begin(), row_shape.end());
  Paged p;
  p.pages = at::full(shape, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(dtype));
  std::vector<int32_t> free_pages(static_cast<size_t>(total_pages));
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  std::vector<int32_t> table;
  std::vector<int32_t> lens;
  for (size_t s = 0; s < lengths.size(); ++s) {
    std::vector<int64_t> tshape = {lengths[s]};
    tshape.insert(tshape.end(), row_shape.begin(), row_shape.end());
    at::Tensor tokens = randn(tshape, seed + 100 + s, dtype);
    std::vector<int32_t> row(static_cast<size_t>(max_pages), 0);
    for (int64_t t = 0; t < lengths[s]; ++t) {
      if (t % page_size == 0) {
        row[static_cast<size_t>(t / page_size)] = free_pages.back();
        free_pages.pop_back();
      }
      p.pages[row[static_cast<size_t>(t / page_size)]][t % page_size].copy_(tokens[t]);
    }
    table.insert(table.end(), row.begin(), row.end());
    lens.push_back(static_cast<int32_t>(lengths[s]));
    p.tokens.push_back(tokens);
  }
  const auto i32 = at::TensorOptions().dtype(at::kInt);
  p.page_table = at::tensor(table, i32).reshape({static_cast<int64_t>(lengths.size()), max_pages});
  p.lengths = at::tensor(lens, i32);
  return p;
}

TEST(MlaDecodePaged, EqualsAbsorbedPerSequence) {
  const int64_t h = 4, dn = 3, dr = 4, c = 6, dv = 5;
  const double scale = 0.37;
  for (int64_t g : {1, 2, 4}) {
    for (int64_t page_size : {1, 3, 16}) {
      const std::vector<int64_t> lengths = {0, 1, page_size, 2 * page_size + 1, 29, 48};
      const int64_t s = static_cast<int64_t>(lengths.size());
      Paged p = make_paged(lengths, page_size, {c + dr}, 5 + page_size, at::kDouble);
      at::Tensor q_nope = randn({s, h, dn}, 1), q_pe = randn({s, h, dr}, 2), kv_b = randn({g * (dn + dv), c}, 3);
      at::Tensor out = mla_decode_paged(q_nope, q_pe, p.pages, p.page_table, p.lengths, kv_b, g, scale);
      ASSERT_EQ(out.sizes(), (std::vector<int64_t>{s, h, dv}));
      for (int64_t i = 0; i < s; ++i) {
        const int64_t len = lengths[static_cast<size_t>(i)];
        const std::string what = "groups " + std::to_string(g) + " page_size " + std::to_string(page_size) +
                                 " length " + std::to_string(len);
        if (len == 0) {  // nothing to attend to: output 0, not NaN
          EXPECT_EQ(out[i].abs().max().item<double>(), 0.0) << what;
          continue;
        }
        at::Tensor rows = p.tokens[static_cast<size_t>(i)].unsqueeze(0);  // [1, len, Rkv+Dr]
        at::Tensor qn = q_nope[i].view({1, 1, h, dn}), qp = q_pe[i].view({1, 1, h, dr});
        at::Tensor ck = rows.narrow(2, 0, c), kp = rows.narrow(2, c, dr);
        at::Tensor absorbed = mla_attention_absorbed(qn, qp, ck, kp, kv_b, g, scale, len - 1);        // [1, 1, H, Dv]
        at::Tensor decompressed = mla_attention_decompressed(qn, qp, ck, kp, kv_b, g, scale, len - 1);
        EXPECT_LT(mla_test::max_abs_diff(out[i], absorbed[0][0]), 100 * mla_test::kEps64) << what;
        EXPECT_LT(mla_test::max_abs_diff(out[i], decompressed[0][0]), 1e4 * mla_test::kEps64) << what;
      }
    }
  }
}

TEST(MlaDecodePaged, RejectsBadOperands) {
  Paged p = make_paged({5, 2}, 4, {10}, 1, at::kDouble);
  at::Tensor qn = randn({2, 4, 3}, 1), qp = randn({2, 4, 4}, 2), kv_b = randn({2 * 8, 6}, 3);
  EXPECT_NO_THROW(mla_decode_paged(qn, qp, p.pages, p.page_table, p.lengths, kv_b, 2, 1.0));
  EXPECT_THROW(mla_decode_paged(qn, qp, p.pages, p.page_table.to(at::kLong), p.lengths, kv_b, 2, 1.0), Error);
  EXPECT_THROW(mla_decode_paged(qn, qp, p.pages, p.page_table, p.lengths.narrow(0, 0, 1), kv_b, 2, 1.0), Error);
  EXPECT_THROW(mla_decode_paged(qn, qp, p.pages, p.page_table, p.lengths + 4, kv_b, 2, 1.0), Error);  // > table
  EXPECT_THROW(mla_decode_paged(qn, qp, p.pages, p.page_table + 100, p.lengths, kv_b, 2, 1.0), Error);  // no such page
  EXPECT_THROW(mla_decode_paged(qn, qp, p.pages.narrow(2, 0, 9), p.page_table, p.lengths, kv_b, 2, 1.0), Error);
  EXPECT_THROW(mla_decode_paged(qn, qp, p.pages, p.page_table, p.lengths, kv_b, 3, 1.0), Error);  // 3 does not divide 4
}

// fp32 operands on both sides: the reference computes in fp32 too, so they differ by the order of fp32 sums only;
// outputs are convex combinations of v rows (|v| < 6), so a few hundred ulps of that bounds them.
TEST(GqaDecodePaged, EqualsCausalAttentionPerSequence) {
  const int64_t hq = 6, dh = 8;
  const double scale = 0.35;
  for (int64_t hkv : {1, 2, 6}) {
    for (std::optional<int64_t> window : {std::optional<int64_t>{}, std::optional<int64_t>{1},
                                          std::optional<int64_t>{7}}) {
      for (int64_t page_size : {1, 3, 16}) {
        const std::vector<int64_t> lengths = {0, 1, page_size, 2 * page_size + 1, 29};
        const int64_t s = static_cast<int64_t>(lengths.size());
        Paged k = make_paged(lengths, page_size, {hkv, dh}, 7 + page_size, at::kFloat);
        Paged v = make_paged(lengths, page_size, {hkv, dh}, 7 + page_size, at::kFloat);  // same page tables
        ASSERT_TRUE(at::equal(k.page_table, v.page_table));
        for (auto& t : v.tokens) t.mul_(-0.5);  // values differ from keys
        for (size_t i = 0; i < lengths.size(); ++i)
          for (int64_t t = 0; t < lengths[i]; ++t)
            v.pages[v.page_table[static_cast<int64_t>(i)][t / page_size].item<int64_t>()][t % page_size].copy_(v.tokens[i][t]);
        at::Tensor q = randn({s, hq, dh}, 4, at::kFloat);
        at::Tensor out = gqa_decode_paged(q, k.pages, v.pages, k.page_table, k.lengths, scale, window);
        ASSERT_EQ(out.sizes(), (std::vector<int64_t>{s, hq, dh}));
        for (int64_t i = 0; i < s; ++i) {
          const int64_t len = lengths[static_cast<size_t>(i)];
          const std::string what = "kv heads " + std::to_string(hkv) + " window " +
                                   (window ? std::to_string(*window) : "none") + " page_size " +
                                   std::to_string(page_size) + " length " + std::to_string(len);
          if (len == 0) {
            EXPECT_EQ(out[i].abs().max().item<double>(), 0.0) << what;
            continue;
          }
          at::Tensor kk = k.tokens[static_cast<size_t>(i)].permute({1, 0, 2}).unsqueeze(0);  // [1, Hkv, len, Dh]
          at::Tensor vv = v.tokens[static_cast<size_t>(i)].permute({1, 0, 2}).unsqueeze(0);
          at::Tensor ref = causal_attention_reference(q[i].view({1, hq, 1, dh}), kk, vv, scale, len - 1, window);
          EXPECT_LT(mla_test::max_abs_diff(out[i], ref.view({hq, dh})), 256 * mla_test::kEps32) << what;
        }
      }
    }
  }
}

}  // namespace
}  // namespace hylo::ops
