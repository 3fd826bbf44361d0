// RMSNorm as Hugging Face computes it (LlamaRMSNorm and friends): the mean of squares and the rsqrt are taken
// in fp32 (fp64 for an fp64 input), the normalised value is cast back to the input dtype, then scaled by the
// weight. Matching this order is what makes bf16 outputs agree with transformers bit for bit where possible.
#pragma once

#include <ATen/ATen.h>

namespace hylo::ops {

// x: [..., D] any float dtype; weight: [D]. Returns [..., D] in promote(weight.dtype, x.dtype).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace hylo::ops
