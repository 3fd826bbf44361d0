// What the chunked SSD forward (ssd_chunk.cu) and its backward (ssd_chunk_bwd.cu) share: the chunk size, a
// block's place in the (chunks, B * H) grid, the prologue that stages a chunk's step sizes, the loader of a
// chunk's rows into shared memory, the sum of the rows' outer products, and the recompute of the states entering each chunk (kernels 1 and 2 of the
// forward), which the backward runs again instead of keeping them alive between forward and backward.
#pragma once

#include <ATen/ATen.h>

#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/ssd/ssd_inputs.cuh"

namespace hylo::kernels::ssd {

constexpr int kChunk = 64;  // Q: tokens per chunk, forward and backward

// One chunk's place: batch b, head h, chunk c covering tokens t0 .. t0 + len - 1.
struct ChunkPos {
  int64_t b, h, bh, c, t0;
  int len;
};

__device__ __forceinline__ ChunkPos chunk_pos(const SsdArgs& a) {
  ChunkPos p;
  p.bh = blockIdx.y;
  p.b = p.bh / a.H, p.h = p.bh % a.H;
  p.c = blockIdx.x;
  p.t0 = p.c * kChunk;
  p.len = a.T - p.t0 < kChunk ? int(a.T - p.t0) : kChunk;
  return p;
}

// dt_s and dA_s = dt_s A_h for the chunk's tokens into dts/dAs [kChunk] (zeros past len), then a barrier.
__device__ __forceinline__ void load_steps(const SsdArgs& a, const ChunkPos& p, float* dts, float* dAs) {
  const float A_h = load_as_float(a.A, p.h, a.tA);
  for (int s = threadIdx.x; s < kChunk; s += blockDim.x) {
    const float dt = s < p.len ? load_as_float(a.dt, (p.b * a.T + p.t0 + s) * a.H + p.h, a.tdt) : 0.0f;
    dts[s] = dt;
    dAs[s] = dt * A_h;
  }
  __syncthreads();
}

// Rows s < len of one of the chunk's [len, W] operands (x or dy: W = P, B or C: W = N) into shared rows `ld`
// apart, each value times scale[s] when scale is given. The source is [B, T, groups, W]; the chunk reads `group`.
__device__ __forceinline__ void load_rows(float* dst, int ld, const void* src, ElemType t, const ChunkPos& p,
                                          const SsdArgs& a, int64_t groups, int64_t group, int64_t W,
                                          const float* scale) {
  for (int64_t i = threadIdx.x; i < int64_t(p.len) * W; i += blockDim.x) {
    const int s = int(i / W), w = int(i % W);
    const int64_t bt = p.b * a.T + p.t0 + s;
    const float v = load_as_float(src, (bt * groups + group) * W + w, t);
    dst[s * ld + w] = scale ? v * scale[s] : v;
  }
}

// dst[p][n] = sum over the chunk's rows s < len of L[s][p] R[s][n], for L [kChunk][P] and R [kChunk][N] in shared
// memory (rows P and N apart), dst [P][N] in global memory: the forward's chunk state (x dt with decayed B) and the
// backward's readout gradient (decayed dy with C). A warp spans consecutive n: conflict-free rows of R, one broadcast
// value of L.
__device__ __forceinline__ void sum_row_outer_products(float* dst, const float* L, int64_t P, const float* R,
                                                       int64_t N, int len) {
  for (int64_t o = threadIdx.x; o < P * N; o += blockDim.x) {
    const int64_t pp = o / N, n = o % N;
    float acc = 0.0f;
    for (int s = 0; s < len; ++s) acc += L[s * P + pp] * R[s * N + n];
    dst[o] = acc;
  }
}

// The forward's state recompute: for every (batch, head) and chunk c, the state entering chunk c.
struct ChunkStates {
  at::Tensor states;       // [BH, nc, P, N] fp32: the state entering each chunk
  at::Tensor chunk_decay;  // [BH, nc] fp32: exp(sum of the chunk's dt A)
  at::Tensor final_state;  // [B, H, P, N] fp32
};
// `init`: [B, H, P, N] fp32 contiguous or undefined (zeros). Launches on the current stream; the tensors behind
// `a` must stay alive until the work has run (the caller's SsdInputs).
ChunkStates chunk_states(const SsdArgs& a, const at::Tensor& init, const at::TensorOptions& f32);

}  // namespace hylo::kernels::ssd
