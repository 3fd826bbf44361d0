// MLA attention ops: the decompressed form against an explicit per-head loop, the absorbed form against the
// decompressed one (fp64 tight, fp32 with a derived tolerance), and the query offset of cached prefill.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "hylo/core/result.h"
#include "hylo/ops/mla.h"
#include "mla_test_util.h"

namespace hylo {
namespace {

using mla_test::randn;

using AttentionFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, int64_t, double, int64_t, int64_t);
const AttentionFn kForms[] = {&ops::mla_attention_decompressed, &ops::mla_attention_absorbed};

struct Case {
  int64_t b, t, s, h, g, p, r, v, c;
};

struct Inputs {
  at::Tensor q_nope, q_pe, c_kv, k_pe, w;  // [B,T,H,P] [B,T,H,R] [B,S,C] [B,S,R] [G*(P+V),C]
  Inputs to(at::ScalarType t) const { return {q_nope.to(t), q_pe.to(t), c_kv.to(t), k_pe.to(t), w.to(t)}; }
};

Inputs make_inputs(const Case& k, uint64_t seed) {
  return {randn({k.b, k.t, k.h, k.p}, seed), randn({k.b, k.t, k.h, k.r}, seed + 1), randn({k.b, k.s, k.c}, seed + 2),
          randn({k.b, k.s, k.r}, seed + 3), randn({k.g * (k.p + k.v), k.c}, seed + 4) / std::sqrt(double(k.c))};
}

// softmax((q.k) * scale) v written out per batch, head and query, with head h reading kv group h / (H/G)
// (repeat_kv) and query t seeing keys s <= offset + t. fp64.
at::Tensor explicit_reference(const Inputs& in, const Case& k, double scale, int64_t offset) {
  at::Tensor kv = at::matmul(in.c_kv, in.w.t()).reshape({k.b, k.s, k.g, k.p + k.v});  // [B, S, G, P+V]
  at::Tensor out = at::zeros({k.b, k.t, k.h, k.v}, at::TensorOptions().dtype(at::kDouble));
  for (int64_t b = 0; b < k.b; ++b)
    for (int64_t h = 0; h < k.h; ++h) {
      const int64_t g = h / (k.h / k.g);
      for (int64_t t = 0; t < k.t; ++t) {
        const int64_t visible = offset + t + 1;
        at::Tensor q = at::cat({in.q_nope[b][t][h], in.q_pe[b][t][h]});                         // [P+R]
        at::Tensor keys = at::cat({kv[b].narrow(0, 0, visible).select(1, g).narrow(1, 0, k.p),
                                   in.k_pe[b].narrow(0, 0, visible)}, 1);                        // [s, P+R]
        at::Tensor vals = kv[b].narrow(0, 0, visible).select(1, g).narrow(1, k.p, k.v);         // [s, V]
        at::Tensor p = at::softmax(at::mv(keys, q) * scale, 0);                                  // [s]
        out[b][t][h] = at::mv(vals.t(), p);
      }
    }
  return out;
}

const Case kCases[] = {
    {2, 5, 5, 4, 2, 3, 4, 6, 7},    // grouped (HyLo-like), V != P+R
    {1, 3, 8, 4, 4, 2, 2, 3, 5},    // DeepSeek-like (one group per head), cached prefill offset 5
    {2, 1, 9, 6, 1, 2, 4, 2, 3},    // one decode query over 9 keys, a single group
};

TEST(MlaOps, DecompressedMatchesExplicitLoop) {
  for (const Case& k : kCases) {
    Inputs in = make_inputs(k, 100);
    const int64_t offset = k.s - k.t;
    at::Tensor ref = explicit_reference(in, k, 0.37, offset);
    at::Tensor got = ops::mla_attention_decompressed(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, k.g, 0.37, offset);
    ASSERT_EQ(got.sizes(), ref.sizes());
    EXPECT_LT(mla_test::max_abs_diff(got, ref), 1e-13);
  }
}

TEST(MlaOps, AbsorbedEqualsDecompressed) {
  for (const Case& k : kCases) {
    Inputs in = make_inputs(k, 200);
    const int64_t offset = k.s - k.t;
    const double scale = 1.0 / std::sqrt(double(k.p + k.r));
    at::Tensor dec = ops::mla_attention_decompressed(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, k.g, scale, offset);
    at::Tensor abs = ops::mla_attention_absorbed(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, k.g, scale, offset);
    // fp64: the two orders of summation differ by a few ulps of the O(1) outputs.
    EXPECT_LT(mla_test::max_abs_diff(abs, dec), 64 * mla_test::kEps64);
    // fp32: each form's error against the fp64 result; the absorbed one may be at most 4x what the
    // decompressed (reference) form gets in fp32, with a floor of a few fp32 ulps.
    Inputs in32 = in.to(at::kFloat);
    at::Tensor dec32 = ops::mla_attention_decompressed(in32.q_nope, in32.q_pe, in32.c_kv, in32.k_pe, in32.w, k.g,
                                                       scale, offset);
    at::Tensor abs32 = ops::mla_attention_absorbed(in32.q_nope, in32.q_pe, in32.c_kv, in32.k_pe, in32.w, k.g, scale,
                                                   offset);
    EXPECT_EQ(abs32.scalar_type(), at::kFloat);
    const double err_dec = mla_test::rel_rms(dec32, dec), err_abs = mla_test::rel_rms(abs32, dec);
    EXPECT_LE(err_abs, 4.0 * err_dec + 8.0 * mla_test::kEps32) << "dec " << err_dec << " abs " << err_abs;
    const std::string tag = "case_h" + std::to_string(k.h) + "_g" + std::to_string(k.g) + "_t" + std::to_string(k.t);
    RecordProperty(tag + "_fp64_max_abs_diff", mla_test::sci(mla_test::max_abs_diff(abs, dec)));
    RecordProperty(tag + "_fp32_decompressed_rel_rms", mla_test::sci(err_dec));
    RecordProperty(tag + "_fp32_absorbed_rel_rms", mla_test::sci(err_abs));
  }
}

// Cached prefill: queries at offset o over all keys equal rows o.. of the full causal attention.
TEST(MlaOps, QueryOffsetEqualsSliceOfFullAttention) {
  const Case full{2, 9, 9, 4, 2, 3, 2, 4, 5};
  Inputs in = make_inputs(full, 300);
  for (AttentionFn form : kForms) {
    at::Tensor all = form(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, full.g, 0.5, 0, 0);  // [B, 9, H, Dv]
    for (int64_t o : {0, 1, 4, 8}) {
      at::Tensor part = form(in.q_nope.narrow(1, o, 9 - o), in.q_pe.narrow(1, o, 9 - o), in.c_kv, in.k_pe, in.w,
                             full.g, 0.5, o, 0);
      EXPECT_LT(mla_test::max_abs_diff(part, all.narrow(1, o, 9 - o)), 1e-14) << "offset " << o;
    }
  }
}

// Query blocking (a bounded score buffer for long prefill) changes no value: blocks of 1, 2 and 3 query rows
// against one block, with and without a cache offset.
TEST(MlaOps, QueryBlockingChangesNothing) {
  const Case k{2, 10, 10, 4, 2, 3, 2, 4, 5};
  Inputs in = make_inputs(k, 350);
  for (AttentionFn form : kForms)
    for (int64_t offset : {0, 3}) {
      at::Tensor q_nope = in.q_nope.narrow(1, 0, k.s - offset), q_pe = in.q_pe.narrow(1, 0, k.s - offset);
      at::Tensor whole = form(q_nope, q_pe, in.c_kv, in.k_pe, in.w, k.g, 0.4, offset, 0);
      for (int64_t rows : {1, 2, 3}) {
        at::Tensor blocked = form(q_nope, q_pe, in.c_kv, in.k_pe, in.w, k.g, 0.4, offset, rows * k.b * k.h * k.s);
        EXPECT_LT(mla_test::max_abs_diff(blocked, whole), 1e-14) << "rows " << rows << " offset " << offset;
      }
    }
}

// bf16 inputs: fp32 softmax keeps the result within a few bf16 ulps of the fp64 result.
TEST(MlaOps, Bf16UsesFp32Softmax) {
  const Case k{1, 6, 6, 4, 2, 4, 4, 4, 8};
  Inputs in = make_inputs(k, 400);
  Inputs bf = in.to(at::kBFloat16);
  at::Tensor ref = ops::mla_attention_decompressed(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, k.g, 0.35, 0);
  for (AttentionFn form : kForms) {
    at::Tensor got = form(bf.q_nope, bf.q_pe, bf.c_kv, bf.k_pe, bf.w, k.g, 0.35, 0, 0);
    EXPECT_EQ(got.scalar_type(), at::kBFloat16);
    // What rounding the inputs alone costs, evaluated in fp64: the tolerance is a small multiple of it.
    Inputs rounded = bf.to(at::kDouble);
    at::Tensor input_only = ops::mla_attention_decompressed(rounded.q_nope, rounded.q_pe, rounded.c_kv, rounded.k_pe,
                                                            rounded.w, k.g, 0.35, 0);
    const double base = mla_test::rel_rms(input_only, ref);
    EXPECT_LE(mla_test::rel_rms(got, ref), 8.0 * base) << "input rounding alone: " << base;
  }
}

TEST(MlaOps, ShapeErrorsNameTheTensor) {
  const Case k{1, 2, 2, 4, 2, 3, 2, 4, 5};
  Inputs in = make_inputs(k, 500);
  try {
    (void)ops::mla_attention_absorbed(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, 3, 0.5, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_kv_groups"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::mla_attention_decompressed(in.q_nope, in.q_pe, in.c_kv.narrow(2, 0, 4), in.k_pe, in.w, 2, 0.5, 0),
               Error);
  EXPECT_THROW(ops::mla_attention_decompressed(in.q_nope, in.q_pe, in.c_kv, in.k_pe, in.w, 2, 0.5, 1), Error);
}

}  // namespace
}  // namespace hylo
