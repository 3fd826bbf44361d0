// The chunked forward's intermediates (gated_delta_chunk.cu), shared with the backward (gated_delta_chunk_bwd.cu),
// which recomputes them instead of keeping them alive between forward and backward (h alone is
// [B*H, T/64, Dv, Dk] bf16: 400 MB at 8 x 2K tokens, 6 heads, Dk 256, Dv 512).
#pragma once

#include <ATen/ATen.h>

namespace hylo::kernels::gdn {

struct ChunkStates {
  at::Tensor w;            // [BH, NC, C, Dk] bf16   W = T diag(beta e^gamma) K
  at::Tensor u;            // [BH, NC, C, Dv] bf16   U = T diag(beta) V
  at::Tensor gam;          // [BH, NC * C] fp32      in-chunk cumulative log decay (padded tokens repeat the last)
  at::Tensor h;            // [BH, NC, Dv, Dk] bf16  the state entering each chunk
  at::Tensor vnew;         // [BH, NC, C, Dv] bf16   v_new = U - W h^T
  at::Tensor t;            // [BH, NC, C, C] fp32    T = (I + A)^-1, only when asked (keep_t)
  at::Tensor final_state;  // [B, H, Dv, Dk] fp32
};

// Inputs already in the kernels' layout: q/k/v bf16 [B, T, H, D] contiguous, g/beta fp32 [B, T, H] contiguous,
// init fp32 [B, H, Dv, Dk] contiguous or undefined; Dk in {64, 128, 256}, Dv a multiple of 64 up to 512.
// segments as gated_delta_chunk_cuda's.
ChunkStates chunk_states(const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
                         const at::Tensor& init, int segments, bool keep_t);

// Context parallel walks (forward states, backward dstates): the number of segments P for a walk over NC chunks
// with `blocks` blocks per segment (requested > 0: that many, clamped to [1, NC]; 0: from the GPU's size), rounded
// so that every segment is non-empty.
int choose_segments(int64_t NC, int64_t blocks, int requested);
// The scan over segments: starts[0] = init (zeros when undefined), starts[s+1] = starts[s] m[s] + nn[s].
// init [BH, Dv, Dk], m [BH, P, Dk, Dk], nn [BH, P, Dv, Dk], all fp32; returns starts [BH, P, Dv, Dk].
at::Tensor segment_scan(const at::Tensor& init, const at::Tensor& m, const at::Tensor& nn);

}  // namespace hylo::kernels::gdn
