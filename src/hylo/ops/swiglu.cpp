#include "hylo/ops/swiglu.h"

namespace hylo::ops {

at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b, const at::Tensor& up_b,
                      const at::Tensor& down_b) {
  at::Tensor gate = at::linear(x, gate_w, gate_b);   // [..., F]
  at::Tensor up = at::linear(x, up_w, up_b);         // [..., F]
  return at::linear(at::silu(gate) * up, down_w, down_b);  // [..., D]
}

}  // namespace hylo::ops
