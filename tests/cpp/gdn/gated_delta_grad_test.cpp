// Gradients of the gated delta rule: the naive form's autograd gradients match central finite differences in fp64
// on tiny shapes (for q, k, v, g, beta and the initial state), and the chunk and recurrent forms' gradients equal the
// naive form's (the backward of the WY/UT form is right, not only its forward).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "gdn_test_util.h"
#include "hylo/ops/gated_delta.h"

namespace hylo {
namespace {

using gdn_test::DeltaInputs;
using Form = std::function<GatedDeltaOutput(const std::vector<at::Tensor>&)>;

// leaves: q, k, v, g, beta, state. The loss contracts o and the final state with fixed random upstream gradients.
double loss_of(const Form& form, const std::vector<at::Tensor>& leaves, const at::Tensor& up_o, const at::Tensor& up_s) {
  GatedDeltaOutput r = form(leaves);
  return ((r.o * up_o).sum() + (r.final_state * up_s).sum()).item<double>();
}

std::vector<at::Tensor> grads_of(const Form& form, const std::vector<at::Tensor>& values, const at::Tensor& up_o,
                                 const at::Tensor& up_s) {
  std::vector<at::Tensor> leaves;
  for (const auto& v : values) leaves.push_back(v.detach().clone().requires_grad_());
  GatedDeltaOutput r = form(leaves);
  ((r.o * up_o).sum() + (r.final_state * up_s).sum()).backward();
  std::vector<at::Tensor> g;
  for (auto& l : leaves) g.push_back(l.grad());
  return g;
}

const char* kNames[] = {"q", "k", "v", "g", "beta", "initial_state"};

Form naive_form(double scale) {
  return [scale](const std::vector<at::Tensor>& x) { return gated_delta_naive(x[0], x[1], x[2], x[3], x[4], scale, x[5]); };
}
Form chunk_form(double scale, int64_t C) {
  return [scale, C](const std::vector<at::Tensor>& x) {
    return gated_delta_chunk(x[0], x[1], x[2], x[3], x[4], scale, x[5], C);
  };
}
Form recurrent_form(double scale) {
  return [scale](const std::vector<at::Tensor>& x) {
    return gated_delta_recurrent(x[0], x[1], x[2], x[3], x[4], scale, x[5]);
  };
}

TEST(GatedDeltaGrad, NaiveMatchesFiniteDifferencesFp64) {
  DeltaInputs in = gdn_test::random_inputs(1, 5, 2, 3, 2, true, 21);
  std::vector<at::Tensor> values = {in.q, in.k, in.v, in.g, in.beta, in.state};
  at::manual_seed(22);
  at::Tensor up_o = at::randn(in.v.sizes(), at::kDouble);      // [B, T, H, Dv]
  at::Tensor up_s = at::randn(in.state.sizes(), at::kDouble);  // [B, H, Dv, Dk]
  Form form = naive_form(0.7);
  std::vector<at::Tensor> grads = grads_of(form, values, up_o, up_s);
  const double h = 1e-6;
  for (size_t i = 0; i < values.size(); ++i) {
    for (int64_t e = 0; e < values[i].numel(); ++e) {
      std::vector<at::Tensor> plus, minus;
      for (const auto& v : values) {
        plus.push_back(v.clone());
        minus.push_back(v.clone());
      }
      plus[i].view(-1)[e] += h;
      minus[i].view(-1)[e] -= h;
      const double fd = (loss_of(form, plus, up_o, up_s) - loss_of(form, minus, up_o, up_s)) / (2 * h);
      // Central differences: truncation O(h^2 f''') and cancellation O(eps |f| / h), both ~1e-9 here.
      EXPECT_NEAR(grads[i].reshape(-1)[e].item<double>(), fd, 1e-7 * (1.0 + std::abs(fd))) << kNames[i] << "[" << e << "]";
    }
  }
}

TEST(GatedDeltaGrad, ChunkAndRecurrentGradientsEqualNaiveFp64) {
  for (int64_t C : {4, 16, 64}) {
    DeltaInputs in = gdn_test::random_inputs(2, 37, 2, 5, 6, true, 30 + C);
    std::vector<at::Tensor> values = {in.q, in.k, in.v, in.g, in.beta, in.state};
    at::Tensor up_o = at::randn(in.v.sizes(), at::kDouble);
    at::Tensor up_s = at::randn(in.state.sizes(), at::kDouble);
    std::vector<at::Tensor> ref = grads_of(naive_form(0.4), values, up_o, up_s);
    std::vector<at::Tensor> chunk = grads_of(chunk_form(0.4, C), values, up_o, up_s);
    std::vector<at::Tensor> rec = grads_of(recurrent_form(0.4), values, up_o, up_s);
    for (size_t i = 0; i < values.size(); ++i) {
      const double mag = gdn_test::max_abs(ref[i]);
      EXPECT_LT(gdn_test::max_abs_diff(chunk[i], ref[i]) / mag, 1e-10) << "chunk C=" << C << " d" << kNames[i];
      EXPECT_LT(gdn_test::max_abs_diff(rec[i], ref[i]) / mag, 1e-10) << "recurrent d" << kNames[i];
    }
  }
}

}  // namespace
}  // namespace hylo
