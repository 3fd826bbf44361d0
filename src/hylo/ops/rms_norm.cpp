#include "hylo/ops/rms_norm.h"

namespace hylo::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);                              // [..., D] fp32
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);    // [..., 1]
  at::Tensor normed = (x32 * at::rsqrt(variance + eps)).to(x.scalar_type());  // [..., D]
  return weight * normed;
}

}  // namespace hylo::ops
