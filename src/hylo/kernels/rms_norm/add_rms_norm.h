// One CUDA kernel for a residual add followed by RMSNorm, HF's order (ops/rms_norm.h, the ATen reference and the
// CPU path), or the plain RMSNorm when there is no residual:
//   r = h + m                                   (rounded to the activation dtype, as ATen's add)
//   y = w * dtype(r * rsqrt(mean(r^2) + eps))    (mean and rsqrt in fp32, normalised value rounded, then scaled)
// One block per row; replaces the ~9 ATen kernels of `h + m; rms_norm(.)` (add, cast, pow, mean, add eps, rsqrt,
// mul, cast, mul) in the decode step, where every kernel costs ~2-5 us whatever its size. No host sync, no host
// tensors: safe to capture in a CUDA graph. The sum over D runs in another order than ATen's reduction, so y may
// differ from the reference in the last bit (tests/cpp/decode_fuse/add_rms_norm_cuda_test.cpp).
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace hylo::kernels {

// h: [.., D] contiguous fp32 / bf16 / fp16 on CUDA; m: undefined or like h; weight: [D] contiguous, h's dtype.
bool add_rms_norm_cuda_supported(const at::Tensor& h, const at::Tensor& m, const at::Tensor& weight);

// Returns {r, y}: r = h + m (undefined when m is undefined) and y = rmsnorm(r or h) * weight, both like h.
// Throws hylo::Error when add_rms_norm_cuda_supported is false.
std::pair<at::Tensor, at::Tensor> add_rms_norm_cuda(const at::Tensor& h, const at::Tensor& m,
                                                    const at::Tensor& weight, double eps);

}  // namespace hylo::kernels
