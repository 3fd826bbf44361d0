// ops::PackedLinear (one GEMM over row-concatenated weights, ops/packed_linear.h) against the separate at::linear
// calls it replaces, and its invalidation: an in-place write, a rebound tensor or a dtype change of any source
// rebuilds the packed copy, and the next call uses the new values.
#include <gtest/gtest.h>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <limits>

#include "hylo/ops/packed_linear.h"

namespace hylo {
namespace {

// A bound on |fl(x.w) - fl'(x.w)| for two fp32 evaluations of the same dot products over D in any summation
// order: each is within gamma_D * sum|x_k w_k| of the exact value (Higham 3.1, gamma_D ~ D u), so their difference
// is within 2 gamma_D |x| @ |W|^T. (In practice the packed rows come out bitwise equal on CPU: the GEMM reduces
// over D the same way whatever the number of output columns; the bound keeps the test honest across BLAS builds.)
at::Tensor dot_bound(const at::Tensor& x, const at::Tensor& w) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  const double gamma = 2.0 * x.size(-1) * u / (1.0 - x.size(-1) * u);
  return gamma * at::linear(x.abs(), w.abs()) + 1e-30;  // [..., N]
}

void expect_within(const at::Tensor& got, const at::Tensor& want, const at::Tensor& bound, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor excess = (got - want).abs() - bound;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what << ": max |diff| " << (got - want).abs().max().item<double>();
}

TEST(PackedLinear, ViewsEqualSeparateLinears) {
  at::manual_seed(1);
  const int64_t D = 96;
  at::Tensor x = at::randn({3, 5, D});                                    // [B, T, D]
  at::Tensor w0 = at::randn({40, D}), w1 = at::randn({40, D}), w2 = at::randn({7, D});
  at::Tensor b0 = at::randn({40}), b2 = at::randn({7}), none;             // w1 has no bias: packed as zeros
  ops::PackedLinear packed;
  for (bool with_bias : {false, true}) {
    std::vector<const at::Tensor*> bs;
    if (with_bias) bs = {&b0, &none, &b2};
    std::vector<at::Tensor> y = packed(x, {&w0, &w1, &w2}, bs);
    ASSERT_EQ(y.size(), 3u);
    expect_within(y[0], at::linear(x, w0, with_bias ? b0 : at::Tensor()), dot_bound(x, w0), "w0");
    expect_within(y[1], at::linear(x, w1), dot_bound(x, w1), "w1");
    expect_within(y[2], at::linear(x, w2, with_bias ? b2 : at::Tensor()), dot_bound(x, w2), "w2");
    EXPECT_EQ(y[1].stride(-2), 87) << "the outputs are column views of one [.., 87] buffer, not copies";
  }
  EXPECT_EQ(packed.builds(), 2) << "adding biases changes the sources: one rebuild";
}

TEST(PackedLinear, BuiltOnceWhileSourcesAreUnchanged) {
  at::Tensor x = at::randn({1, 16}), w0 = at::randn({8, 16}), w1 = at::randn({4, 16});
  ops::PackedLinear packed;
  for (int i = 0; i < 5; ++i) packed(x, {&w0, &w1});
  EXPECT_EQ(packed.builds(), 1);
}

TEST(PackedLinear, InPlaceWriteRebindAndDtypeChangeRebuild) {
  at::manual_seed(2);
  at::Tensor x = at::randn({2, 16}), w0 = at::randn({8, 16}), w1 = at::randn({4, 16});
  ops::PackedLinear packed;
  auto check = [&](const char* what) {
    std::vector<at::Tensor> y = packed(x, {&w0, &w1});
    expect_within(y[0], at::linear(x, w0), dot_bound(x, w0), what);
    expect_within(y[1], at::linear(x, w1), dot_bound(x, w1), what);
  };
  check("first build");
  at::Tensor before = packed(x, {&w0, &w1})[1].clone();
  const void* address = packed.packed_weight().data_ptr();
  {
    at::NoGradGuard no_grad;
    w1.mul_(3.0);  // an optimiser step or a loader's copy_: the same tensor, written in place
  }
  check("after an in-place write");
  EXPECT_FALSE(at::allclose(before, packed(x, {&w0, &w1})[1])) << "the new values must be used";
  EXPECT_EQ(packed.builds(), 2);
  EXPECT_EQ(packed.packed_weight().data_ptr(), address) << "a same-shape rebuild keeps the address (CUDA graphs)";
  w1.detach().add_(1.0);  // a write through a detached alias shares the version counter
  check("after a write through detach()");
  EXPECT_EQ(packed.builds(), 3);
  w0 = at::randn({8, 16});  // a loader assigns a new tensor to the member
  check("after a rebind");
  EXPECT_EQ(packed.builds(), 4);
  at::Tensor xd = x.to(at::kDouble);
  w0 = w0.to(at::kDouble), w1 = w1.to(at::kDouble);  // the model is cast
  std::vector<at::Tensor> y = packed(xd, {&w0, &w1});
  EXPECT_EQ(y[0].scalar_type(), at::kDouble);
  EXPECT_EQ(packed.builds(), 5);
}

TEST(PackedLinear, OnlyInInferenceModeWithoutGradients) {
  at::Tensor x = at::randn({2, 16}), w0 = at::randn({8, 16}), w1 = at::randn({4, 16});
  EXPECT_FALSE(ops::PackedLinear::applies(x, {&w0, &w1})) << "outside InferenceMode (training, no_grad teachers)";
  {
    at::NoGradGuard no_grad;
    EXPECT_FALSE(ops::PackedLinear::applies(x, {&w0, &w1})) << "a no_grad training context keeps the separate GEMMs";
  }
  c10::InferenceMode inference;
  EXPECT_TRUE(ops::PackedLinear::applies(x, {&w0, &w1}));
  w1.requires_grad_(true);
  EXPECT_FALSE(ops::PackedLinear::applies(x, {&w0, &w1})) << "training must reach w1's gradient";
  {
    EXPECT_FALSE(ops::PackedLinear::applies(x, {&w0, &w1})) << "a model in training keeps no second copy";
    w1.requires_grad_(false);
    EXPECT_TRUE(ops::PackedLinear::applies(x, {&w0, &w1})) << "a frozen model packs in inference";
    at::Tensor big = at::randn({ops::PackedLinear::kMaxRows + 1, 16});
    EXPECT_FALSE(ops::PackedLinear::applies(big, {&w0, &w1})) << "a prefill-sized input runs the separate GEMMs";
  }
  ops::PackedLinear::set_enabled(false);
  EXPECT_FALSE(ops::PackedLinear::applies(x, {&w0}));
  ops::PackedLinear::set_enabled(true);
}

TEST(PackedLinear, RejectsMismatchedWeights) {
  at::Tensor x = at::randn({2, 16}), w0 = at::randn({8, 16}), w1 = at::randn({4, 15}), b = at::randn({3});
  ops::PackedLinear packed;
  EXPECT_THROW(packed(x, {&w0, &w1}), std::exception);
  at::Tensor w2 = at::randn({4, 16});
  EXPECT_THROW(packed(x, {&w0, &w2}, {&b}), std::exception);
  at::Tensor none;
  EXPECT_THROW(packed(x, {&w0, &w2}, {&none, &b}), std::exception);  // bias 1 is [3], weight 1 has 4 rows
}

}  // namespace
}  // namespace hylo
