// The SwiGLU MLP of Llama-family blocks: down(silu(gate(x)) * up(x)), with optional biases (Llama mlp_bias).
#pragma once

#include <ATen/ATen.h>

#include "hylo/ops/packed_linear.h"

namespace hylo::ops {

// x: [..., D]; gate_w, up_w: [F, D]; down_w: [D, F]; biases undefined or [F], [F], [D]. Returns [..., D].
at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b = {}, const at::Tensor& up_b = {},
                      const at::Tensor& down_b = {});

// The same MLP with gate and up as ONE GEMM against their packed [gate; up] weights [2F, D] (packed_linear.h) when
// no gradient is needed; swiglu_mlp above (the reference) otherwise. `packed` caches the packed copy per block.
at::Tensor swiglu_mlp(PackedLinear& packed, const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b = {}, const at::Tensor& up_b = {},
                      const at::Tensor& down_b = {});

}  // namespace hylo::ops
