#include "hylo/ops/packed_linear.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <string>

#include "hylo/core/result.h"

namespace hylo::ops {

namespace {
std::atomic<bool> g_enabled{true};
}  // namespace

void PackedLinear::set_enabled(bool on) { g_enabled = on; }
bool PackedLinear::enabled() { return g_enabled; }

bool PackedLinear::applies(const at::Tensor& x, const std::vector<const at::Tensor*>& weights,
                           const std::vector<const at::Tensor*>& biases) {
  if (!g_enabled || !c10::InferenceMode::is_enabled()) return false;
  if (x.dim() < 1 || x.size(-1) == 0 || x.numel() / x.size(-1) > kMaxRows) return false;
  bool grad = at::GradMode::is_enabled() && x.requires_grad();
  for (const auto* list : {&weights, &biases})
    for (const at::Tensor* t : *list) grad = grad || (t->defined() && t->requires_grad());
  return !grad;
}

PackedLinear::Source PackedLinear::source_of(const at::Tensor* t) {
  Source s;
  if (!t->defined()) return s;
  s.impl = t->unsafeGetTensorImpl();
  s.data = t->data_ptr();
  // Inference tensors (made under c10::InferenceMode) carry no version counter; they can only be written in place
  // inside InferenceMode, which hylo's loaders and trainers never do to parameters.
  s.version = t->is_inference() ? -1 : static_cast<int64_t>(t->_version());
  s.sizes = t->sizes().vec();
  s.dtype = t->scalar_type();
  return s;
}

bool PackedLinear::stale(const std::vector<const at::Tensor*>& all) const {
  if (!weight_.defined() || all.size() != sources_.size()) return true;
  for (size_t i = 0; i < all.size(); ++i) {
    const Source now = source_of(all[i]);
    const Source& was = sources_[i];
    if (now.impl != was.impl || now.data != was.data || now.version != was.version || now.sizes != was.sizes ||
        now.dtype != was.dtype)
      return true;
  }
  return false;
}

void PackedLinear::reset() {
  sources_.clear();
  widths_.clear();
  weight_ = at::Tensor();
  bias_ = at::Tensor();
}

std::vector<at::Tensor> PackedLinear::operator()(const at::Tensor& x, const std::vector<const at::Tensor*>& weights,
                                                 const std::vector<const at::Tensor*>& biases) {
  if (weights.empty()) throw Error("packed_linear: no weights given");
  if (!biases.empty() && biases.size() != weights.size())
    throw Error("packed_linear: " + std::to_string(biases.size()) + " biases for " + std::to_string(weights.size()) +
                " weights (give one per weight, undefined where absent, or none)");
  std::vector<const at::Tensor*> all(weights);
  all.insert(all.end(), biases.begin(), biases.end());
  if (stale(all)) {
    at::NoGradGuard no_grad;  // the copy is a constant of inference, never part of a graph
    const at::Tensor& w0 = *weights[0];
    if (!w0.defined() || w0.dim() != 2)
      throw Error("packed_linear: weight 0 must be [N, D], got " + (w0.defined() ? c10::str(w0.sizes()) : "undefined"));
    std::vector<at::Tensor> ws, bs;
    std::vector<int64_t> widths;
    bool any_bias = false;
    for (const at::Tensor* b : biases) any_bias = any_bias || b->defined();
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor& w = *weights[i];
      if (!w.defined() || w.dim() != 2 || w.size(1) != w0.size(1) || w.scalar_type() != w0.scalar_type() ||
          w.device() != w0.device())
        throw Error("packed_linear: weight " + std::to_string(i) + " must be [N, D=" + std::to_string(w0.size(1)) +
                    "] " + c10::toString(w0.scalar_type()) + " on " + w0.device().str() + " like weight 0, got " +
                    (w.defined() ? c10::str(w.sizes()) + " " + c10::toString(w.scalar_type()) : "undefined"));
      ws.push_back(w.detach());
      widths.push_back(w.size(0));
      if (any_bias) {
        const at::Tensor& b = *biases[i];
        if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0)))
          throw Error("packed_linear: bias " + std::to_string(i) + " must be [" + std::to_string(w.size(0)) +
                      "], got " + c10::str(b.sizes()));
        bs.push_back(b.defined() ? b.detach().to(w0.scalar_type()) : at::zeros({w.size(0)}, w0.options()));
      }
    }
    // A rebuild of the same shape writes into the existing copy instead of allocating a new one, so its address
    // stays valid for a CUDA graph that captured it (a graph replay runs no host code, so it reads the copy as
    // last rebuilt by an eager call; engines assume the model does not change while their graphs live).
    auto store = [](at::Tensor& dst, const std::vector<at::Tensor>& parts) {
      at::Tensor packed = at::cat(parts, 0);                   // [sum N_i, ...]
      // (An inference tensor, made under c10::InferenceMode, can be written in place only inside it.)
      if (dst.defined() && dst.sizes().equals(packed.sizes()) && dst.scalar_type() == packed.scalar_type() &&
          dst.device() == packed.device() && (!dst.is_inference() || c10::InferenceMode::is_enabled()))
        dst.copy_(packed);
      else
        dst = packed.contiguous();
    };
    store(weight_, ws);                                        // [sum N_i, D]
    if (any_bias) store(bias_, bs);                            // [sum N_i]
    else bias_ = at::Tensor();
    widths_ = std::move(widths);
    sources_.clear();
    for (const at::Tensor* t : all) sources_.push_back(source_of(t));
    ++builds_;
  }
  at::Tensor y = at::linear(x, weight_, bias_);                // [..., sum N_i]
  std::vector<at::Tensor> out;
  int64_t off = 0;
  for (int64_t n : widths_) {
    out.push_back(y.narrow(-1, off, n));                       // [..., N_i] a view, row stride sum N_i
    off += n;
  }
  return out;
}

}  // namespace hylo::ops
