// The two memory-bound CUDA kernels of kl_from_hidden (kl_from_hidden.h), on one vocabulary tile of fp32 logits
// (raw h W^T, before the temperature) for a block of rows:
//   kl_stats_update: folds the tile into per-row online statistics, state [5, N] fp32 rows
//                    (m_s, l_s, m_t, l_t, a): u = z / tau, m = running max of u, l = sum exp(u - m), and
//                    a = sum_v exp(u_t - m_t) (u_t - u_s); finally KL = a / l_t - lse_t + lse_s.
//   kl_grad_tile:    d z_s = coef_n (exp(u_s - lse_s,n) - exp(u_t - lse_t,n)) with coef_n = grad_n / tau, into a
//                    tile of the student's dtype (the A operand of the two backward GEMMs).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hylo::kernels::detail {

// zs, zt: [rows, cols] fp32 with row stride ld (elements); state: [5, N] fp32 contiguous, row0 the first row of
// this block within N. Initial state: m = -inf, l = 0, a = 0.
void kl_stats_update(const at::Tensor& zs, const at::Tensor& zt, at::Tensor& state, int64_t row0, double tau);

// Final per-row values from state [5, N]: kl [N], lse_s [N], lse_t [N] (natural log, of u = z / tau).
void kl_stats_finish(const at::Tensor& state, at::Tensor& kl, at::Tensor& lse_s, at::Tensor& lse_t);

// g: [rows, cols] in the student's dtype (contiguous); zs, zt: [rows, cols] fp32; lse_s, lse_t, coef: [rows] fp32.
void kl_grad_tile(const at::Tensor& zs, const at::Tensor& zt, const at::Tensor& lse_s, const at::Tensor& lse_t,
                  const at::Tensor& coef, double tau, at::Tensor& g);

}  // namespace hylo::kernels::detail
