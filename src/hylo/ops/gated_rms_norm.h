// Gated RMS normalisation over groups of the last dimension, in the two orders the hybrid mixers need:
//   norm_before_gate = true : rmsnorm(x) * weight * silu(gate)   -- FLA FusedRMSNormGated, GDN's o_norm (per head)
//   norm_before_gate = false: rmsnorm(x * silu(gate)) * weight   -- Mamba2 RMSNormGated(norm_before_gate=False)
// rmsnorm(u) = u / sqrt(mean_over_group(u^2) + eps), with no mean subtraction.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo {

// x, gate: [..., N], same shape.
// weight:  [G] or [N].
// group_size: the width of each normalisation group; 0 means G = weight.size(0) (GDN: weight [Dv] shared by the
//   heads of x [..., H*Dv] or x [..., Dv]). Mamba2 passes its weight [d_inner] with group_size = d_inner/ngroups.
//   group_size must divide N; weight is [group_size] (shared by all groups) or [N] (one scale per channel).
// Computed in fp32 (fp64 stays fp64) and cast back to x's dtype.
at::Tensor gated_rms_norm(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& weight, double eps,
                          bool norm_before_gate, int64_t group_size = 0);

}  // namespace hylo
