// Test hook of the chunked backward (gated_delta_chunk_bwd.cu): the same call as gated_delta_chunk_backward_cuda,
// also returning the per-chunk intermediates each stage hands to the next, so a GPU test can compare them stage by
// stage against the hand-written ATen backward (tests/cpp/gdn/gdn_chunk_backward_ref.h) and name the kernel that
// disagrees.
#pragma once

#include <ATen/ATen.h>

#include "hylo/kernels/gated_delta/gated_delta_cuda.h"

namespace hylo::kernels::gdn {

struct BackwardTrace {
  at::Tensor t;        // [BH, NC, C, C] fp32     T = (I + A)^-1 (prep, recomputed)
  at::Tensor h;        // [BH, NC, Dv, Dk] bf16   state entering each chunk (states, recomputed)
  at::Tensor vnew;     // [BH, NC, C, Dv] bf16
  at::Tensor dvl;      // [BH, NC, C, Dv] fp32    dv_local
  at::Tensor dh;       // [BH, NC, Dv, Dk] bf16   gradient of the state leaving each chunk (dstates)
  at::Tensor dvnew;    // [BH, NC, C, Dv] bf16    (dstates)
  at::Tensor dw;       // [BH, NC, C, Dk] bf16    (dqk)
  at::Tensor dk_part;  // [BH, NC, C, Dk] fp32    dk before the UT-transform terms (dqk)
  at::Tensor dgam;     // [BH, NC, C] fp32        d gamma before the UT-transform terms (dqk, summed over Dk tiles)
};

GatedDeltaGrads chunk_backward_traced(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, double scale,
                                      const at::Tensor& initial_state, const at::Tensor& d_o,
                                      const at::Tensor& d_final_state, int segments, BackwardTrace* trace);

}  // namespace hylo::kernels::gdn
