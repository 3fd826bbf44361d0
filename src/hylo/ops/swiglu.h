// The SwiGLU MLP of Llama-family blocks: down(silu(gate(x)) * up(x)), with optional biases (Llama mlp_bias).
#pragma once

#include <ATen/ATen.h>

namespace hylo::ops {

// x: [..., D]; gate_w, up_w: [F, D]; down_w: [D, F]; biases undefined or [F], [F], [D]. Returns [..., D].
at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b = {}, const at::Tensor& up_b = {},
                      const at::Tensor& down_b = {});

}  // namespace hylo::ops
