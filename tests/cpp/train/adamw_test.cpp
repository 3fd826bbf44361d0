// Our AdamW against libtorch's torch::optim::AdamW (the oracle) over several steps, and its state saved by name
// and loaded into a fresh optimizer continuing bit for bit; ownership (ZeRO-1) restricts updates and state.
#include <gtest/gtest.h>

#include <cfloat>

#include <torch/optim/adamw.h>

#include "hylo/train/adamw.h"

namespace hylo::train {
namespace {

std::vector<at::Tensor> grads_for(int step) {
  at::Generator g = at::detail::createCPUGenerator(100 + step);
  return {at::randn({5, 4}, g), at::randn({7}, g)};
}

TEST(AdamW, MatchesTorchOptimAdamW) {
  at::Generator g = at::detail::createCPUGenerator(1);
  at::Tensor w0 = at::randn({5, 4}, g), b0 = at::randn({7}, g);
  // torch applies weight decay to every parameter; ours to matrices only, so the oracle decays only w.
  at::Tensor w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
  at::Tensor tw = w0.clone().requires_grad_(true), tb = b0.clone().requires_grad_(true);
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  AdamW ours({{"w", w}, {"b", b}}, o);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{tw},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(std::vector<at::Tensor>{tb},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW theirs(groups, torch::optim::AdamWOptions(1e-2));
  for (int s = 0; s < 6; ++s) {
    auto gs = grads_for(s);
    w.mutable_grad() = gs[0].clone();
    b.mutable_grad() = gs[1].clone();
    tw.mutable_grad() = gs[0].clone();
    tb.mutable_grad() = gs[1].clone();
    ours.step(1e-2);
    theirs.step();
  }
  // Same update formula in fp32; the two differ only in the order of a few fp32 operations per step.
  EXPECT_LE((w - tw).abs().max().item<double>(), 64 * FLT_EPSILON);
  EXPECT_LE((b - tb).abs().max().item<double>(), 64 * FLT_EPSILON);
  EXPECT_GT((w - w0).abs().max().item<double>(), 1e-3);  // it moved
}

TEST(AdamW, StateRoundTripContinuesBitForBit) {
  at::Generator g = at::detail::createCPUGenerator(2);
  at::Tensor w0 = at::randn({5, 4}, g), b0 = at::randn({7}, g);
  at::Tensor w1 = w0.clone().requires_grad_(true), b1 = b0.clone().requires_grad_(true);
  AdamWOptions o;
  o.weight_decay = 0.01;
  AdamW a({{"w", w1}, {"b", b1}}, o);
  for (int s = 0; s < 3; ++s) {
    auto gs = grads_for(s);
    w1.mutable_grad() = gs[0];
    b1.mutable_grad() = gs[1];
    a.step(1e-2);
  }
  // A fresh optimizer over copies, loaded from a's state.
  at::Tensor w2 = w1.detach().clone().requires_grad_(true), b2 = b1.detach().clone().requires_grad_(true);
  AdamW c({{"w", w2}, {"b", b2}}, o);
  ASSERT_TRUE(c.load_state_dict(a.state_dict(), "test").ok());
  for (int s = 3; s < 6; ++s) {
    auto gs = grads_for(s);
    w1.mutable_grad() = gs[0];
    b1.mutable_grad() = gs[1];
    w2.mutable_grad() = gs[0];
    b2.mutable_grad() = gs[1];
    a.step(1e-2);
    c.step(1e-2);
  }
  EXPECT_TRUE(at::equal(w1, w2));
  EXPECT_TRUE(at::equal(b1, b2));
}

TEST(AdamW, OwnedSubsetOnly) {
  at::Tensor w = at::ones({2, 2}).requires_grad_(true), b = at::ones({3}).requires_grad_(true);
  AdamW a({{"w", w}, {"b", b}}, {});
  a.set_owned({true, false});
  w.mutable_grad() = at::ones({2, 2});
  b.mutable_grad() = at::ones({3});
  a.step(0.1);
  EXPECT_FALSE(at::equal(w, at::ones({2, 2})));
  EXPECT_TRUE(at::equal(b, at::ones({3})));
  auto sd = a.state_dict();
  EXPECT_TRUE(sd.count("w.exp_avg"));
  EXPECT_FALSE(sd.count("b.exp_avg"));
  // Loading needs every owned entry.
  AdamW c({{"w", w}, {"b", b}}, {});
  auto st = c.load_state_dict(sd, "ckpt/optimizer");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().find("ckpt/optimizer"), std::string::npos);
  EXPECT_NE(st.error().find("b.step"), std::string::npos);
}

}  // namespace
}  // namespace hylo::train
