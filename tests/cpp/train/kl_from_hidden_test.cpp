// The logit-free KL (train/kl_from_hidden) against the naive full-logit KL: value and gradients, with a
// vocabulary the vocab tile does not divide and a row count the sequence tile does not divide. Tolerances are
// derived: the reference is the naive formula in fp64; the tiled fp32 result may be off by at most a small
// multiple of what the naive formula in fp32 is off by, plus a floor of a few fp32 ulps of the value's scale.
#include <gtest/gtest.h>

#include <cfloat>

#include "hylo/train/kl_from_hidden.h"

namespace hylo::train {
namespace {

struct Inputs {
  at::Tensor hs, ws, ht, wt, weights, targets;  // fp64 masters
};

Inputs make_inputs(int64_t n, int64_t v, int64_t ds, int64_t dt, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  Inputs in;
  in.hs = at::randn({n, ds}, g, f64);
  in.ws = at::randn({v, ds}, g, f64) * 0.7;  // logits of a few units: peaked but not one-hot distributions
  in.ht = at::randn({n, dt}, g, f64);
  in.wt = at::randn({v, dt}, g, f64) * 0.7;
  in.weights = at::rand({n}, g, f64);
  in.weights.narrow(0, 0, 3).zero_();  // masked rows
  in.targets = at::randint(0, v, {n}, g, at::TensorOptions().dtype(at::kLong));
  return in;
}

struct Eval {
  double loss;
  at::Tensor g_hs, g_ws;  // fp64 copies
};

template <class F>
Eval run(F f, const Inputs& in, at::ScalarType dt) {
  at::Tensor hs = in.hs.to(dt).clone().requires_grad_(true), ws = in.ws.to(dt).clone().requires_grad_(true);
  at::Tensor loss = f(hs, ws, in.ht.to(dt), in.wt.to(dt), in.weights.to(dt), in.targets);
  loss.backward();
  return {loss.item<double>(), hs.grad().to(at::kDouble), ws.grad().to(at::kDouble)};
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

void expect_matches_naive(const KlOptions& o, int64_t n, int64_t v) {
  Inputs in = make_inputs(n, v, 16, 24, 7);
  auto tiled = [&](auto... a) { return kd_kl_from_hidden(a..., o); };
  auto naive = [&](auto... a) { return kd_kl_naive(a..., o); };
  const Eval ref = run(naive, in, at::kDouble);
  const Eval naive32 = run(naive, in, at::kFloat);
  const Eval tiled32 = run(tiled, in, at::kFloat);
  const double eps = FLT_EPSILON;
  // value
  const double naive_err = std::fabs(naive32.loss - ref.loss), tiled_err = std::fabs(tiled32.loss - ref.loss);
  EXPECT_LE(tiled_err, 4 * naive_err + 16 * eps * std::fabs(ref.loss)) << "loss " << tiled32.loss << " ref " << ref.loss;
  // gradients
  for (int k = 0; k < 2; ++k) {
    const at::Tensor& r = k == 0 ? ref.g_hs : ref.g_ws;
    const at::Tensor& a = k == 0 ? naive32.g_hs : naive32.g_ws;
    const at::Tensor& b = k == 0 ? tiled32.g_hs : tiled32.g_ws;
    const double ne = max_abs(a - r), te = max_abs(b - r);
    EXPECT_LE(te, 4 * ne + 16 * eps * max_abs(r)) << (k == 0 ? "grad h_student" : "grad w_student");
  }
  EXPECT_GT(ref.loss, 0.1);  // a real distance, not a degenerate case
}

TEST(KlFromHidden, EqualsNaiveKlWithUnevenTiles) {
  KlOptions o;
  o.vocab_tile = 96;  // 1000 = 10 x 96 + 40
  o.seq_tile = 8;     // 37 = 4 x 8 + 5
  expect_matches_naive(o, 37, 1000);
}

TEST(KlFromHidden, EqualsNaiveWithTemperatureAndCrossEntropy) {
  KlOptions o;
  o.temperature = 2.0;
  o.ce_weight = 0.3;
  o.vocab_tile = 128;  // 1001 = 7 x 128 + 105
  o.seq_tile = 16;     // 45 = 2 x 16 + 13
  expect_matches_naive(o, 45, 1001);
}

TEST(KlFromHidden, OneTileCoversAll) {
  KlOptions o;
  o.vocab_tile = 4096;
  o.seq_tile = 4096;
  expect_matches_naive(o, 9, 333);
}

TEST(KlFromHidden, ZeroLossAndGradientWhenStudentIsTeacher) {
  Inputs in = make_inputs(21, 257, 16, 16, 3);
  KlOptions o;
  o.vocab_tile = 50;
  o.seq_tile = 6;
  o.temperature = 1.5;
  at::Tensor hs = in.hs.to(at::kFloat).requires_grad_(true), ws = in.ws.to(at::kFloat).requires_grad_(true);
  at::Tensor loss = kd_kl_from_hidden(hs, ws, hs.detach(), ws.detach(), in.weights.to(at::kFloat), {}, o);
  loss.backward();
  // The same fp32 operations on the same operands on both sides: exactly zero, not approximately.
  EXPECT_EQ(loss.item<float>(), 0.0f);
  EXPECT_EQ(max_abs(hs.grad()), 0.0);
  EXPECT_EQ(max_abs(ws.grad()), 0.0);
}

TEST(KlFromHidden, RejectsMismatchedShapes) {
  Inputs in = make_inputs(5, 50, 8, 8, 1);
  KlOptions o;
  EXPECT_THROW(kd_kl_from_hidden(in.hs, in.ws.narrow(0, 0, 49), in.ht, in.wt, in.weights, {}, o), std::exception);
  o.ce_weight = 1.0;  // needs targets
  EXPECT_THROW(kd_kl_from_hidden(in.hs, in.ws, in.ht, in.wt, in.weights, {}, o), std::exception);
}

}  // namespace
}  // namespace hylo::train
