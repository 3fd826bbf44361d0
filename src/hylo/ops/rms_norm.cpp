#include "hylo/ops/rms_norm.h"

namespace hylo::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // fp32 for bf16/fp16/fp32 (HF's order); fp64 stays fp64 so fp64 references and gradient checks are not narrowed.
  const at::ScalarType acc = at::promote_types(at::kFloat, x.scalar_type());
  at::Tensor xa = x.to(acc);                                                  // [..., D]
  at::Tensor variance = xa.pow(2).mean(-1, /*keepdim=*/true);                 // [..., 1]
  at::Tensor normed = (xa * at::rsqrt(variance + eps)).to(x.scalar_type());   // [..., D]
  return weight * normed;
}

}  // namespace hylo::ops
