// ssd_chunk_autograd (ssd_cuda.h): the chunked CUDA forward and backward as one differentiable op. The forward
// keeps only its inputs (the backward recomputes the states entering each chunk), so the memory held between
// forward and backward is the inputs' own.
#include <torch/csrc/autograd/custom_function.h>

#include <optional>

#include "hylo/kernels/ssd/ssd_cuda.h"

namespace hylo::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// D and the initial state are optional: an undefined tensor cannot be an autograd input (apply records its
// device), so each comes as std::optional, which apply treats as a non-variable argument when empty.
struct SsdChunkFn : public torch::autograd::Function<SsdChunkFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                               const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                               const std::optional<at::Tensor>& initial_state) {
    const at::Tensor Dt = D.has_value() ? *D : at::Tensor();
    const at::Tensor init = initial_state.has_value() ? *initial_state : at::Tensor();
    const SsdOutput out = ssd_chunk_cuda(x, dt, A, B, C, Dt, init);
    variable_list saved = {x, dt, A, B, C};
    if (Dt.defined()) saved.push_back(Dt);
    if (init.defined()) saved.push_back(init);
    ctx->save_for_backward(saved);
    ctx->saved_data["has_D"] = Dt.defined();
    ctx->saved_data["has_init"] = init.defined();
    return {out.y, out.final_state};
  }

  // grads: dy [B, T, H, P] and d final_state [B, H, P, N], either undefined when its output was not used.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const bool has_D = ctx->saved_data["has_D"].toBool(), has_init = ctx->saved_data["has_init"].toBool();
    const at::Tensor &x = s[0], &dt = s[1], &A = s[2], &B = s[3], &C = s[4];
    const at::Tensor D = has_D ? s[5] : at::Tensor();
    const at::Tensor init = has_init ? s[has_D ? 6 : 5] : at::Tensor();
    const at::Tensor dy = grads[0].defined() ? grads[0] : at::zeros_like(x);
    const SsdGrads r = ssd_chunk_backward_cuda(x, dt, A, B, C, D, init, dy, grads[1]);
    return {r.dx, r.ddt, r.dA, r.dB, r.dC, r.dD, r.d_initial_state};
  }
};

}  // namespace

SsdOutput ssd_chunk_autograd(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const at::Tensor& D, const at::Tensor& state) {
  const auto opt = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  const variable_list out = SsdChunkFn::apply(x, dt, A, B, C, opt(D), opt(state));
  return {out[0], out[1]};
}

}  // namespace hylo::kernels
