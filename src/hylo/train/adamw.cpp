#include "hylo/train/adamw.h"

#include <c10/core/GradMode.h>
#include <cmath>

#include "hylo/ops/tensor_util.h"

namespace hylo::train {

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions options)
    : params_(std::move(params)), owned_(params_.size(), true), state_(params_.size()), options_(options) {
  for (const auto& p : params_)
    if (p.tensor.scalar_type() != at::kFloat)
      throw Error("AdamW: parameter '" + p.name + "' must be fp32 (the master weight), got " +
                  std::string(c10::toString(p.tensor.scalar_type())));
}

void AdamW::set_owned(const std::vector<bool>& owned) {
  if (owned.size() != params_.size())
    throw Error("AdamW::set_owned: " + std::to_string(owned.size()) + " flags for " + std::to_string(params_.size()) +
                " parameters");
  owned_ = owned;
  for (size_t i = 0; i < state_.size(); ++i)
    if (!owned_[i]) state_[i] = State{};
}

void AdamW::zero_grad() {
  for (auto& p : params_) p.tensor.mutable_grad() = at::Tensor();
}

void AdamW::step(double lr) {
  c10::NoGradGuard no_grad;
  const double b1 = options_.beta1, b2 = options_.beta2;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!owned_[i]) continue;
    at::Tensor& p = params_[i].tensor;  // fp32, shares storage with the model
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    State& s = state_[i];
    if (!s.exp_avg.defined()) {
      s.exp_avg = at::zeros_like(p);
      s.exp_avg_sq = at::zeros_like(p);
    }
    s.step += 1;
    const at::Tensor g32 = g.to(at::kFloat);
    s.exp_avg.mul_(b1).add_(g32, 1.0 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g32, g32, 1.0 - b2);
    if (options_.weight_decay != 0.0 && p.dim() >= 2) p.mul_(1.0 - lr * options_.weight_decay);
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(s.step));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(s.step));
    at::Tensor denom = (s.exp_avg_sq / bc2).sqrt_().add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -lr / bc1);
  }
}

std::map<std::string, at::Tensor> AdamW::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!owned_[i]) continue;
    const State& s = state_[i];
    const std::string& n = params_[i].name;
    const at::Tensor& p = params_[i].tensor;
    // A parameter that never had a gradient still saves zero moments, so every owned name is present.
    out[n + ".exp_avg"] = s.exp_avg.defined() ? s.exp_avg.detach().to(at::kCPU).contiguous()
                                               : at::zeros(p.sizes(), at::kFloat);
    out[n + ".exp_avg_sq"] = s.exp_avg_sq.defined() ? s.exp_avg_sq.detach().to(at::kCPU).contiguous()
                                                     : at::zeros(p.sizes(), at::kFloat);
    out[n + ".step"] = at::scalar_tensor(s.step, at::kLong);
  }
  return out;
}

Status AdamW::load_state_dict(const std::map<std::string, at::Tensor>& state, const std::string& source) {
  std::vector<State> loaded(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!owned_[i]) continue;
    const std::string& n = params_[i].name;
    const at::Tensor& p = params_[i].tensor;
    auto get = [&](const std::string& key) -> Result<at::Tensor> {
      auto it = state.find(key);
      if (it == state.end()) return make_error(source + ": optimizer state '" + key + "' is missing");
      return it->second;
    };
    HYLO_TRY(at::Tensor step, get(n + ".step"));
    HYLO_TRY(at::Tensor m, get(n + ".exp_avg"));
    HYLO_TRY(at::Tensor v, get(n + ".exp_avg_sq"));
    if (step.numel() != 1) return make_error(source + ": optimizer state '" + n + ".step' must be a scalar");
    for (const auto* t : {&m, &v})
      if (t->sizes() != p.sizes())
        return make_error(source + ": optimizer state for '" + n + "' has shape " + shape_str(t->sizes()) +
                          ", the parameter " + shape_str(p.sizes()));
    loaded[i].step = step.to(at::kLong).item<int64_t>();
    if (loaded[i].step > 0) {
      loaded[i].exp_avg = m.to(p.device(), at::kFloat).clone();
      loaded[i].exp_avg_sq = v.to(p.device(), at::kFloat).clone();
    }
  }
  state_ = std::move(loaded);
  return {};
}

}  // namespace hylo::train
