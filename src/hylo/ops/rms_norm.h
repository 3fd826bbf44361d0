// RMSNorm as Hugging Face computes it (LlamaRMSNorm and friends): the mean of squares and the rsqrt are taken
// in fp32 (fp64 for an fp64 input), the normalised value is cast back to the input dtype, then scaled by the
// weight. Matching this order is what makes bf16 outputs agree with transformers bit for bit where possible.
// On CUDA in c10::InferenceMode (fp32/bf16/fp16 with a weight of the input's dtype) both ops below run as one kernel
// (kernels/rms_norm/add_rms_norm.h) with the same rounding points; rms_norm_reference / the ATen forms stay the
// reference and the CPU path.
#pragma once

#include <ATen/ATen.h>

namespace hylo::ops {

// x: [..., D] any float dtype; weight: [D]. Returns [..., D] in promote(weight.dtype, x.dtype).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);  // ATen only

// The decoder block's `r = h + m; y = rms_norm(r, weight, eps)`: h, m [..., D]. One kernel on CUDA (see above).
struct AddRmsNorm {
  at::Tensor sum;    // r = h + m [..., D]
  at::Tensor normed; // y [..., D]
};
AddRmsNorm add_rms_norm(const at::Tensor& h, const at::Tensor& m, const at::Tensor& weight, double eps);

// Process-wide switch for the CUDA kernel (on by default): tests and benchmarks compare against the ATen form.
void set_fused_rms_norm(bool on);
bool fused_rms_norm();

}  // namespace hylo::ops
