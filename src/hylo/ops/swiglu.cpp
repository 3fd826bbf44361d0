#include "hylo/ops/swiglu.h"

namespace hylo::ops {

at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b, const at::Tensor& up_b,
                      const at::Tensor& down_b) {
  at::Tensor gate = at::linear(x, gate_w, gate_b);   // [..., F]
  at::Tensor up = at::linear(x, up_w, up_b);         // [..., F]
  return at::linear(at::silu(gate) * up, down_w, down_b);  // [..., D]
}

at::Tensor swiglu_mlp(PackedLinear& packed, const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b, const at::Tensor& up_b,
                      const at::Tensor& down_b) {
  const std::vector<const at::Tensor*> ws{&gate_w, &up_w}, bs{&gate_b, &up_b};
  if (!PackedLinear::applies(x, ws, bs)) return swiglu_mlp(x, gate_w, up_w, down_w, gate_b, up_b, down_b);
  std::vector<at::Tensor> gu = packed(x, ws, bs);             // gate, up: [..., F] views of one [..., 2F] GEMM
  return at::linear(at::silu(gu[0]) * gu[1], down_w, down_b);  // [..., D]
}

}  // namespace hylo::ops
