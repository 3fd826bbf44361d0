// SSD forms against each other: chunk == naive (fp64 to 1e-10; fp32/bf16 within a tolerance derived from the
// naive form's own error in that dtype), recurrent == naive, chunked prefill split at chunk and non-chunk
// boundaries, gradients of the chunk form == those of the naive form, and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "hylo/ops/ssd.h"
#include "test_util.h"

namespace hylo {
namespace {

using test::make_ssd_inputs;
using test::max_rel_error;

struct Shape {
  int64_t batch, T, H, P, N, G, Gc, Q;
  bool with_state;
};

std::string describe(const Shape& s) {
  return "B=" + std::to_string(s.batch) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
         " P=" + std::to_string(s.P) + " N=" + std::to_string(s.N) + " G=" + std::to_string(s.G) +
         " Gc=" + std::to_string(s.Gc) + " Q=" + std::to_string(s.Q) + (s.with_state ? " +state" : "");
}

TEST(Ssd, ChunkEqualsNaiveFp64) {
  at::NoGradGuard no_grad;
  // (shape, chunk sizes to try on it)
  std::vector<std::pair<Shape, std::vector<int64_t>>> cases;
  // The lengths where chunking breaks (1, Q-1, Q, Q+1, several chunks, many chunks), both chunk sizes, both
  // d_state values of the released models.
  for (int64_t T : {1, 2, 63, 64, 65, 200, 1000})
    for (int64_t N : {64, 128}) cases.push_back({{1, T, 4, 8, N, 2, 4, 0, (T % 2) == 1}, {64, 256}});
  // Head and group layouts: one head, all heads sharing one group, Zebra's (B per kv group, C per head),
  // B and C with different group counts, batch > 1; a chunk of one token.
  for (auto [H, G, Gc] : {std::tuple{1, 1, 1}, {4, 1, 1}, {8, 2, 8}, {6, 3, 2}, {6, 6, 6}})
    cases.push_back({{2, 77, H, 5, 16, G, Gc, 0, true}, {1, 16}});
  uint64_t seed = 1;
  double worst_y = 0, worst_state = 0;
  for (auto& [s, chunk_sizes] : cases) {
    auto in = make_ssd_inputs(s.batch, s.T, s.H, s.P, s.N, s.G, s.Gc, s.with_state, seed++);
    SsdOutput ref = ssd_naive(in.x, in.dt, in.A, in.B, in.C, in.D, in.state);
    for (int64_t Q : chunk_sizes) {
      Shape sq = s;
      sq.Q = Q;
      SsdOutput got = ssd_chunk(in.x, in.dt, in.A, in.B, in.C, in.D, in.state, Q);
      ASSERT_EQ(got.y.sizes(), in.x.sizes()) << describe(sq);
      const double ey = max_rel_error(got.y, ref.y), es = max_rel_error(got.final_state, ref.final_state);
      EXPECT_LE(ey, 1e-10) << describe(sq);
      EXPECT_LE(es, 1e-10) << describe(sq);
      worst_y = std::max(worst_y, ey);
      worst_state = std::max(worst_state, es);
    }
  }
  std::printf("[ssd fp64 chunk vs naive] worst relative error: y %.3g, final state %.3g\n", worst_y, worst_state);
}

TEST(Ssd, EmptySequenceKeepsState) {
  auto in = make_ssd_inputs(2, 0, 2, 3, 4, 1, 2, true, 7);
  for (auto out : {ssd_naive(in.x, in.dt, in.A, in.B, in.C, in.D, in.state),
                   ssd_chunk(in.x, in.dt, in.A, in.B, in.C, in.D, in.state, 8)}) {
    EXPECT_EQ(out.y.sizes(), (std::vector<int64_t>{2, 0, 2, 3}));
    EXPECT_TRUE(at::equal(out.final_state, in.state));
  }
}

// fp32 and bf16: both forms run on the same rounded inputs; the reference is the fp64 naive form on those
// rounded inputs, so only the arithmetic differs. The chunk form may be at most a small multiple of the naive
// form's own error in that dtype, plus a floor of a few units of the output dtype's rounding.
TEST(Ssd, ChunkWithinDerivedToleranceInLowPrecision) {
  at::NoGradGuard no_grad;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (auto [T, Q, N] : {std::tuple{1000, 256, 128}, {65, 64, 64}}) {
      auto in = make_ssd_inputs(1, T, 4, 8, N, 2, 4, true, 100 + T);
      for (at::Tensor* t : in.all()) *t = t->to(dtype).to(at::kDouble);
      SsdOutput ref = ssd_naive(in.x, in.dt, in.A, in.B, in.C, in.D, in.state);
      auto w = [&](const at::Tensor& t) { return t.to(dtype); };
      SsdOutput naive = ssd_naive(w(in.x), w(in.dt), w(in.A), w(in.B), w(in.C), w(in.D), w(in.state));
      SsdOutput chunk = ssd_chunk(w(in.x), w(in.dt), w(in.A), w(in.B), w(in.C), w(in.D), w(in.state), Q);
      const double floor = 4 * test::eps_of(dtype);
      const double e_naive = max_rel_error(naive.y, ref.y);
      const double e_chunk = max_rel_error(chunk.y, ref.y);
      const double s_naive = max_rel_error(naive.final_state, ref.final_state);
      const double s_chunk = max_rel_error(chunk.final_state, ref.final_state);
      EXPECT_LE(e_chunk, 4 * e_naive + floor) << at::toString(dtype) << " T=" << T << " naive err " << e_naive;
      EXPECT_LE(s_chunk, 4 * s_naive + 4 * test::eps_of(at::kFloat))
          << at::toString(dtype) << " T=" << T << " naive state err " << s_naive;
      std::printf("[ssd %s T=%ld Q=%ld] y: naive %.3g chunk %.3g | state: naive %.3g chunk %.3g\n",
                  at::toString(dtype), static_cast<long>(T), static_cast<long>(Q), e_naive, e_chunk, s_naive,
                  s_chunk);
    }
  }
}

TEST(Ssd, RecurrentStepEqualsNaive) {
  at::NoGradGuard no_grad;
  auto in = make_ssd_inputs(3, 5, 6, 4, 8, 3, 6, true, 11);
  SsdOutput ref = ssd_naive(in.x, in.dt, in.A, in.B, in.C, in.D, in.state);
  at::Tensor S = in.state;
  for (int64_t t = 0; t < 5; ++t) {
    SsdOutput step = ssd_recurrent(in.x.select(1, t), in.dt.select(1, t), in.A, in.B.select(1, t),
                                   in.C.select(1, t), in.D, S);
    EXPECT_LE(max_rel_error(step.y, ref.y.select(1, t)), 1e-14) << "t=" << t;
    S = step.final_state;
  }
  EXPECT_LE(max_rel_error(S, ref.final_state), 1e-14);
  // No state means zeros.
  SsdOutput from_zero = ssd_recurrent(in.x.select(1, 0), in.dt.select(1, 0), in.A, in.B.select(1, 0),
                                      in.C.select(1, 0), in.D, at::Tensor());
  SsdOutput from_zero_ref = ssd_naive(in.x.narrow(1, 0, 1), in.dt.narrow(1, 0, 1), in.A, in.B.narrow(1, 0, 1),
                                      in.C.narrow(1, 0, 1), in.D, at::Tensor());
  EXPECT_LE(max_rel_error(from_zero.y, from_zero_ref.y.select(1, 0)), 1e-14);
}

// The decode loop's in-place form: state_out = state is updated to exactly the new state the plain call returns
// (and a separate state_out receives it); calls that need a gradient, or a state_out of the wrong shape or dtype,
// are rejected.
TEST(Ssd, RecurrentStateOutInPlace) {
  auto in = make_ssd_inputs(2, 1, 4, 8, 16, 2, 4, true, 12);
  auto tok = [](const at::Tensor& t) { return t.select(1, 0); };
  {
    at::NoGradGuard no_grad;
    SsdOutput plain = ssd_recurrent(tok(in.x), tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, in.state);
    at::Tensor S = in.state.clone();
    SsdOutput inplace = ssd_recurrent(tok(in.x), tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, S, S);
    EXPECT_TRUE(inplace.final_state.is_same(S));
    EXPECT_TRUE(at::equal(S, plain.final_state));
    EXPECT_TRUE(at::equal(inplace.y, plain.y));
    at::Tensor other = at::zeros_like(in.state);
    ssd_recurrent(tok(in.x), tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, in.state, other);
    EXPECT_TRUE(at::equal(other, plain.final_state));
    EXPECT_THROW(ssd_recurrent(tok(in.x), tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, in.state,
                               at::zeros({2, 4, 8, 15}, in.state.options())),
                 std::exception);
    EXPECT_THROW(ssd_recurrent(tok(in.x), tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, in.state,
                               in.state.to(at::kFloat)),
                 std::exception);  // fp64 inputs compute in fp64
  }
  at::Tensor x = tok(in.x).clone().requires_grad_(true);
  at::Tensor S = in.state.clone();
  EXPECT_THROW(ssd_recurrent(x, tok(in.dt), in.A, tok(in.B), tok(in.C), in.D, S, S), std::exception);
}

TEST(Ssd, ChunkPrefillSplitEqualsOnePass) {
  at::NoGradGuard no_grad;
  auto in = make_ssd_inputs(2, 150, 4, 8, 16, 2, 4, false, 21);
  SsdOutput whole = ssd_chunk(in.x, in.dt, in.A, in.B, in.C, in.D, in.state, 32);
  for (int64_t cut : {1, 31, 32, 33, 100, 149}) {
    auto part = [&](const at::Tensor& t, int64_t s, int64_t n) { return t.narrow(1, s, n); };
    SsdOutput a = ssd_chunk(part(in.x, 0, cut), part(in.dt, 0, cut), in.A, part(in.B, 0, cut), part(in.C, 0, cut),
                            in.D, at::Tensor(), 32);
    const int64_t rest = 150 - cut;
    SsdOutput b = ssd_chunk(part(in.x, cut, rest), part(in.dt, cut, rest), in.A, part(in.B, cut, rest),
                            part(in.C, cut, rest), in.D, a.final_state, 32);
    EXPECT_LE(max_rel_error(at::cat({a.y, b.y}, 1), whole.y), 1e-12) << "cut " << cut;
    EXPECT_LE(max_rel_error(b.final_state, whole.final_state), 1e-12) << "cut " << cut;
  }
}

TEST(Ssd, RejectsMismatchedShapes) {
  auto in = make_ssd_inputs(1, 4, 4, 2, 3, 2, 4, true, 3);
  EXPECT_THROW(ssd_chunk(in.x, in.dt, in.A, in.B.narrow(2, 0, 1).expand({1, 4, 3, 3}), in.C, in.D, in.state),
               std::exception);  // 3 groups do not divide 4 heads
  EXPECT_THROW(ssd_naive(in.x, in.dt, in.A.narrow(0, 0, 3), in.B, in.C, in.D, in.state), std::exception);
  EXPECT_THROW(ssd_chunk(in.x, in.dt, in.A, in.B, in.C, in.D, in.state.narrow(3, 0, 2)), std::exception);
  EXPECT_THROW(ssd_chunk(in.x, in.dt, in.A, in.B, in.C, in.D, in.state, 0), std::exception);
}

// A scalar that reads every output: random projections of y and of the final state.
at::Tensor probe(const SsdOutput& out, const at::Tensor& wy, const at::Tensor& ws) {
  return (out.y.to(at::kDouble) * wy).sum() + (out.final_state * ws).sum();
}

TEST(Ssd, ChunkGradientsEqualNaiveGradients) {
  for (auto [T, Q] : {std::tuple{40, 16}, {33, 64}}) {
    auto in = make_ssd_inputs(2, T, 4, 3, 8, 2, 4, true, 31 + T);
    at::Tensor wy = at::randn({2, T, 4, 3}, at::kDouble), ws = at::randn({2, 4, 3, 8}, at::kDouble);
    std::vector<at::Tensor> grads[2];
    for (int form = 0; form < 2; ++form) {
      std::vector<at::Tensor> leaves;
      for (at::Tensor* t : in.all()) leaves.push_back(t->detach().clone().set_requires_grad(true));
      auto& l = leaves;
      SsdOutput out = form == 0 ? ssd_naive(l[0], l[1], l[2], l[3], l[4], l[5], l[6])
                                : ssd_chunk(l[0], l[1], l[2], l[3], l[4], l[5], l[6], Q);
      probe(out, wy, ws).backward();
      for (auto& t : leaves) grads[form].push_back(t.grad());
    }
    const char* names[] = {"x", "dt", "A", "B", "C", "D", "initial_state"};
    double worst = 0;
    for (size_t i = 0; i < grads[0].size(); ++i) {
      const double e = max_rel_error(grads[1][i], grads[0][i]);
      EXPECT_LE(e, 1e-10) << "d/d" << names[i] << " T=" << T << " Q=" << Q;
      worst = std::max(worst, e);
    }
    std::printf("[ssd fp64 gradients chunk vs naive T=%ld Q=%ld] worst relative error %.3g\n", static_cast<long>(T),
                static_cast<long>(Q), worst);
  }
}

TEST(Ssd, ChunkGradientsMatchFiniteDifferences) {
  auto in = make_ssd_inputs(1, 7, 2, 2, 3, 1, 2, true, 41);
  at::Tensor wy = at::randn({1, 7, 2, 2}, at::kDouble), ws = at::randn({1, 2, 2, 3}, at::kDouble);
  std::vector<at::Tensor> inputs;
  for (at::Tensor* t : in.all()) inputs.push_back(*t);
  test::expect_gradients_match_finite_differences(
      [&](const std::vector<at::Tensor>& v) {
        return probe(ssd_chunk(v[0], v[1], v[2], v[3], v[4], v[5], v[6], 3), wy, ws);
      },
      inputs, {"x", "dt", "A", "B", "C", "D", "initial_state"});
}

}  // namespace
}  // namespace hylo
