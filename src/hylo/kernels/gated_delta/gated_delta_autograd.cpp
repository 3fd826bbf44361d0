// gated_delta_chunk_autograd (gated_delta_cuda.h): the chunked CUDA forward and backward as one differentiable op.
// The forward keeps only its inputs (the backward recomputes W, U, T, h and v_new per chunk), so the memory held
// between forward and backward is the inputs' own.
#include <torch/csrc/autograd/custom_function.h>

#include <optional>

#include "hylo/kernels/gated_delta/gated_delta_cuda.h"

namespace hylo::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The initial state is optional: an undefined tensor cannot be an autograd input (apply records its device), so
// it comes as std::optional, which apply treats as a non-variable argument when empty.
struct GatedDeltaChunkFn : public torch::autograd::Function<GatedDeltaChunkFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& g, const at::Tensor& beta, double scale,
                               const std::optional<at::Tensor>& initial_state) {
    const at::Tensor init = initial_state.has_value() ? *initial_state : at::Tensor();
    const GatedDeltaOutput out = gated_delta_chunk_cuda(q, k, v, g, beta, scale, init);
    if (init.defined())
      ctx->save_for_backward({q, k, v, g, beta, init});
    else
      ctx->save_for_backward({q, k, v, g, beta});
    ctx->saved_data["scale"] = scale;
    return {out.o, out.final_state};
  }

  // grads: d o [B, T, H, Dv] and d final_state [B, H, Dv, Dk], either undefined when its output was not used.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor &q = s[0], &k = s[1], &v = s[2], &g = s[3], &beta = s[4];
    const at::Tensor init = s.size() > 5 ? s[5] : at::Tensor();
    const at::Tensor d_o = grads[0].defined() ? grads[0] : at::zeros_like(v);
    const GatedDeltaGrads r = gated_delta_chunk_backward_cuda(q, k, v, g, beta, ctx->saved_data["scale"].toDouble(),
                                                              init, d_o, grads[1]);
    return {r.dq, r.dk, r.dv, r.dg, r.dbeta, at::Tensor(), r.d_initial_state};
  }
};

}  // namespace

GatedDeltaOutput gated_delta_chunk_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& g, const at::Tensor& beta, double scale,
                                            const at::Tensor& initial_state) {
  const std::optional<at::Tensor> init =
      initial_state.defined() ? std::optional<at::Tensor>(initial_state) : std::nullopt;
  const variable_list out = GatedDeltaChunkFn::apply(q, k, v, g, beta, scale, init);
  return {out[0], out[1]};
}

}  // namespace hylo::kernels
