// Depthwise causal 1-D convolution over time, as used by the short convolutions of Gated DeltaNet (FLA
// ShortConvolution) and Mamba2 (conv1d over xBC). One readable form serves training (any T, autograd through
// plain ATen ops), chunked prefill and single-token decode, because the caller threads the last K-1 inputs
// through `conv_state`.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace hylo {

// y[b, t, c] = act( bias[c] + sum_{k<K} weight[c, k] * xs[b, t + k, c] ), where xs = [conv_state ; x] along time,
// i.e. weight[c, K-1] multiplies the current token (the cross-correlation layout of torch.nn.Conv1d, whose
// weight [C, 1, K] squeezes to ours).
//   x:          [B, T, C]      any floating dtype; T >= 1
//   weight:     [C, K]
//   bias:       [C] or undefined (no bias)
//   conv_state: [B, C, K-1]    the K-1 inputs before x, oldest first; undefined = zeros (sequence start)
//   silu:       apply SiLU to the output
// Returns {y [B, T, C] in x's dtype, new_state [B, C, K-1] in x's dtype}: the last K-1 inputs of [conv_state ; x],
// so when T < K-1 part of the old state carries over. Products are accumulated in fp32 for bf16/fp16 inputs
// (fp64 inputs stay fp64).
std::pair<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight,
                                                const at::Tensor& bias, const at::Tensor& conv_state, bool silu);

}  // namespace hylo
