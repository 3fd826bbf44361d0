// Shared pieces of the chunked gated delta kernels (gated_delta_chunk.cu, gated_delta_chunk_bwd.cu): the chunk size,
// a state-walk block's place in its grid, tile copies between global and shared memory, and the bf16 tensor-core tile products (WMMA 16x16x16, fp32 accumulation).
#pragma once

#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

namespace hylo::kernels::gdn {

constexpr int kChunk = 64;    // tokens per chunk (C), as FLA and the ATen reference's default
constexpr int kThreads = 256; // 8 warps in every chunk kernel
constexpr int kWarps = kThreads / 32;
constexpr int kPad16 = 8;     // bf16 row padding (elements): rows stay 16-byte aligned, banks shift by 16 bytes
constexpr int kPad32 = 4;     // fp32 row padding (elements)

using bf16 = __nv_bfloat16;
namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;  // A read transposed
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;  // B read transposed
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// A block of a segmented state walk (the forward's two walks and the backward's reverse walk share this grid:
// x = n_blocks + m_blocks, y = segments P, z = batch x heads). x picks BV value rows r0.. of an N block, or of an M
// block (x >= n_blocks, which walks the identity for the segment's transition); y the segment, chunks
// [n_begin, n_end); z the (batch b, head h). Args: the kernel's arguments (n_blocks, H, NC, chunks_per_seg).
struct WalkBlock {
  bool m_block;
  int64_t r0, seg, P, bh, b, h, n_begin, n_end;
};
template <class Args>
__device__ __forceinline__ WalkBlock walk_block(const Args& a, int BV) {
  WalkBlock w;
  w.m_block = int(blockIdx.x) >= a.n_blocks;
  w.r0 = int64_t(w.m_block ? int(blockIdx.x) - a.n_blocks : int(blockIdx.x)) * BV;
  w.seg = blockIdx.y, w.P = gridDim.y, w.bh = blockIdx.z;
  w.b = w.bh / a.H, w.h = w.bh % a.H;
  w.n_begin = w.seg * a.chunks_per_seg;
  w.n_end = a.NC < w.n_begin + a.chunks_per_seg ? a.NC : w.n_begin + a.chunks_per_seg;
  return w;
}

// Copies `rows` x `cols` bf16 (cols a multiple of 8) from global rows `gstride` apart into shared rows
// `sstride` apart, 16 bytes per thread-iteration; rows >= valid_rows are zero-filled (the padded tail chunk).
__device__ __forceinline__ void load_tile(bf16* __restrict__ s, int sstride, const bf16* __restrict__ g,
                                          int64_t gstride, int rows, int cols, int valid_rows) {
  const int vec_per_row = cols / 8;
  for (int i = threadIdx.x; i < rows * vec_per_row; i += blockDim.x) {
    const int r = i / vec_per_row, c = (i % vec_per_row) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid_rows) val = *reinterpret_cast<const uint4*>(g + r * gstride + c);
    *reinterpret_cast<uint4*>(s + r * sstride + c) = val;
  }
}

// fp32 shared tile -> bf16 global rows (cols a multiple of 8).
__device__ __forceinline__ void store_tile_bf16(bf16* __restrict__ g, int64_t gstride, const float* __restrict__ s,
                                                int sstride, int rows, int cols) {
  const int vec_per_row = cols / 8;
  for (int i = threadIdx.x; i < rows * vec_per_row; i += blockDim.x) {
    const int r = i / vec_per_row, c = (i % vec_per_row) * 8;
    alignas(16) bf16 out[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = __float2bfloat16(s[r * sstride + c + j]);
    *reinterpret_cast<uint4*>(g + r * gstride + c) = *reinterpret_cast<const uint4*>(out);
  }
}

// D[M x N] (fp32, shared, ld dd) = A[M x K] * B[K x N] over 16x16 output tiles; warp w owns tiles w, w + 8, ...
// and keeps them all in flight (independent accumulators, unrolled), so consecutive tensor-core ops of a warp do
// not wait on each other. A is row-major (lda) or, with TransA, stored as A^T row-major; B is row-major (ldb) or,
// with TransB, B^T row-major. All pointers are shared memory; (M/16)(N/16) a multiple of the warp count.
template <bool TransA, bool TransB, int M, int N, int K>
__device__ __forceinline__ void gemm_tiles(float* d, int ldd, const bf16* a, int lda, const bf16* b, int ldb) {
  constexpr int tiles_n = N / 16, per_warp = (M / 16) * tiles_n / kWarps;
  static_assert(per_warp * kWarps == (M / 16) * tiles_n, "tiles must split evenly over the warps");
  const int warp = threadIdx.x >> 5;
  FragC acc[per_warp];
#pragma unroll
  for (int t = 0; t < per_warp; ++t) wmma::fill_fragment(acc[t], 0.0f);
#pragma unroll 2
  for (int k0 = 0; k0 < K; k0 += 16) {
#pragma unroll
    for (int t = 0; t < per_warp; ++t) {
      const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
      typename std::conditional<TransA, FragAT, FragA>::type fa;
      typename std::conditional<TransB, FragBT, FragB>::type fb;
      wmma::load_matrix_sync(fa, TransA ? a + k0 * lda + m0 : a + m0 * lda + k0, lda);
      wmma::load_matrix_sync(fb, TransB ? b + n0 * ldb + k0 : b + k0 * ldb + n0, ldb);
      wmma::mma_sync(acc[t], fa, fb, acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < per_warp; ++t) {
    const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
    wmma::store_matrix_sync(d + m0 * ldd + n0, acc[t], ldd, wmma::mem_row_major);
  }
}

}  // namespace hylo::kernels::gdn

namespace hylo::kernels::gdn {

// Asynchronous 16-byte global -> shared copy (cp.async, bypassing L1); `valid` false writes 16 zero bytes.
__device__ __forceinline__ void cp_async16(void* s, const void* g, bool valid) {
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(s));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

// load_tile through cp.async (the caller commits and waits): rows >= valid_rows are zero-filled.
__device__ __forceinline__ void load_tile_async(bf16* s, int sstride, const bf16* g, int64_t gstride, int rows,
                                                int cols, int valid_rows) {
  const int vec_per_row = cols / 8;
  for (int i = threadIdx.x; i < rows * vec_per_row; i += blockDim.x) {
    const int r = i / vec_per_row, c = (i % vec_per_row) * 8;
    const bool ok = r < valid_rows;
    cp_async16(s + r * sstride + c, ok ? g + r * gstride + c : g, ok);
  }
}

}  // namespace hylo::kernels::gdn
