#include "hylo/ops/causal_conv1d.h"

#include <ATen/core/grad_mode.h>

#include <string>

#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/causal_conv1d/causal_conv1d_cuda.h"
#endif

namespace hylo {

std::pair<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight,
                                                const at::Tensor& bias, const at::Tensor& conv_state, bool silu) {
  if (x.dim() != 3) throw Error("causal_conv1d: x must be [B, T, C], got " + shape_str(x));
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  if (weight.dim() != 2 || weight.size(0) != C)
    throw Error("causal_conv1d: weight must be [C=" + std::to_string(C) + ", K], got " + shape_str(weight));
  const int64_t K = weight.size(1);
  if (K < 1) throw Error("causal_conv1d: kernel width K must be >= 1, got " + shape_str(weight));
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != C))
    throw Error("causal_conv1d: bias must be [C=" + std::to_string(C) + "], got " + shape_str(bias));
  if (conv_state.defined() &&
      (conv_state.dim() != 3 || conv_state.size(0) != B || conv_state.size(1) != C || conv_state.size(2) != K - 1))
    throw Error("causal_conv1d: conv_state must be [B=" + std::to_string(B) + ", C=" + std::to_string(C) +
                ", K-1=" + std::to_string(K - 1) + "], got " + shape_str(conv_state));

#ifdef HYLO_HAVE_CUDA
  // The fused CUDA kernel has no backward: only when no gradient is needed. Otherwise (and for widths > 8) the
  // ATen form below runs on x's own device.
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()) ||
                     (conv_state.defined() && conv_state.requires_grad()));
  if (!grad && kernels::causal_conv1d_cuda_supports(x, weight))
    return kernels::causal_conv1d_cuda(x, weight, bias, conv_state, silu);
#endif
  const at::ScalarType ct = compute_type(x.scalar_type());
  // Previous inputs in time-major layout so they concatenate with x along T.
  at::Tensor prev = conv_state.defined() ? conv_state.transpose(1, 2).to(x.scalar_type())   // [B, K-1, C]
                                         : at::zeros({B, K - 1, C}, x.options());
  at::Tensor xs = at::cat({prev, x}, 1);                                                     // [B, K-1+T, C]
  at::Tensor xs_c = xs.to(ct);                                                               // [B, K-1+T, C]
  at::Tensor w = weight.to(ct);                                                              // [C, K]

  // Tap k sees the input (K-1-k) steps back: a sum of K shifted, channel-scaled copies.
  at::Tensor y = xs_c.narrow(1, 0, T) * w.select(1, 0);                                      // [B, T, C]
  for (int64_t k = 1; k < K; ++k) y = y + xs_c.narrow(1, k, T) * w.select(1, k);
  if (bias.defined()) y = y + bias.to(ct);
  if (silu) y = at::silu(y);

  at::Tensor new_state = xs.narrow(1, T, K - 1).transpose(1, 2).contiguous();               // [B, C, K-1]
  return {y.to(x.scalar_type()), new_state};
}

}  // namespace hylo
