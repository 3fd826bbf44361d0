// Split-KV absorbed MLA decode and its log-sum-exp combine (mla_decode.h says what is computed; docs/kernels.md
// how). One CTA = one sequence x one split of its context x one block of up to 64 heads (4 warps per 16 heads).
// Per latent tile of TN (128, 64 or 32) tokens, streamed into a shared-memory ring of 2-6 stages by the bulk copy
// engine (one copy per row, an mbarrier per stage):
//   1. scores: warp (m, q) computes heads [16m, 16m+16) x tokens [q*TN/4, (q+1)*TN/4) over all Rkv+Dr dims;
//   2. online softmax (base 2, fp32): tile maxima exchanged through shared memory, probabilities rounded to bf16
//      into shared memory (they are the A operand of the next product, as the ATen form rounds them too);
//   3. ctx: warp (m, q) accumulates heads [16m, 16m+16) x latent dims [q*Rkv/4, (q+1)*Rkv/4) in fp32 registers.
// The latent is memory-bound input read exactly once per head block; everything else stays on chip.
#include "hylo/kernels/mla_decode/mla_decode.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>

namespace hylo::kernels {
namespace {

using bf16 = __nv_bfloat16;

struct SplitParams {
  const bf16* q_lat;  // [B, H, C] contiguous
  const bf16* q_pe;   // [B, H, R] contiguous
  const int* lengths;  // [B] or null (S everywhere)
  int S, H, R, m_tiles, num_splits, stages;
  int min_chunk_tiles;  // a split covers at least this many tiles (fewer, longer splits for short contexts)
  float scale_log2;   // softmax scale * log2(e): scores are kept in base 2
  float* o_part;      // [B, splits, H, C] fp32, normalised per split (not written for an empty split)
  float* lse_part;    // [B, splits, H] fp32, base-2 log-sum-exp of the split's scaled scores (-inf: empty)
};

// Where token t of sequence b sits in memory: the split kernel is one template over these row-address functors,
// so the contiguous and the paged cache share every line of the attention itself.
struct RowSrc {
  const bf16* ckv;  // C latent values
  const bf16* kpe;  // R rope values (== ckv + C when rows are fused)
};

// Contiguous caches: c_kv [B, S, C] and k_pe [B, S, R] with any batch / row strides (elements).
struct StridedRows {
  const bf16* ckv;
  const bf16* kpe;
  int64_t ckv_sb, ckv_ss, kpe_sb, kpe_ss;
  bool fused;  // k_pe columns directly follow c_kv's in memory: one copy per latent row
  static constexpr bool kPrefetch = false;  // addresses are arithmetic: nothing to read ahead
  __device__ __forceinline__ bool fused_rows() const { return fused; }
  __device__ __forceinline__ RowSrc row(int b, int t) const {
    return {ckv + b * ckv_sb + int64_t(t) * ckv_ss, kpe + b * kpe_sb + int64_t(t) * kpe_ss};
  }
};

// Paged cache: pages [P, page_size, C+R] (rows contiguous), token t of sequence b in page table[b, t / page_size]
// at row t % page_size. One page-table read per row; the kernel prefetches it a tile ahead.
struct PagedRows {
  const bf16* pages;
  const int* table;      // [B, table_stride] int32
  int64_t table_stride;  // elements between sequences' rows of the table
  int64_t page_elems;    // page_size * (C + R)
  int page_size, width, c;
  static constexpr bool kPrefetch = true;  // the page-table read is issued a tile ahead
  __device__ __forceinline__ bool fused_rows() const { return true; }
  __device__ __forceinline__ RowSrc row(int b, int t) const {
    const int page = __ldg(table + b * table_stride + t / page_size);
    const bf16* r = pages + int64_t(page) * page_elems + int64_t(t % page_size) * width;
    return {r, r + c};
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The latent tiles arrive by the bulk copy engine (cp.async.bulk, one copy per row and source, issued by one
// warp), each stage of the ring completing an mbarrier with the bytes it carried.
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// D += A (16x16 bf16, row) * B (16x8 bf16, col), fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kMaxStages = 6;

// Shared memory rows are padded by 8 elements (16 bytes): with widths a multiple of 16 elements the row pitch is an
// odd multiple of 16 bytes, so the 8 rows of one ldmatrix land in distinct bank groups.
__host__ __device__ constexpr int padded(int width) { return width + 8; }

// Tokens per latent tile: chosen at launch as the largest of 128, 64, 32 tokens whose ring of >= 2 tiles fits
// twice per SM (the per-tile syncs and softmax cost the same for any width, so narrow latents want more tokens).
__host__ __device__ constexpr int max_tile_tokens(int c) { return c <= 128 ? 128 : c <= 256 ? 64 : 32; }

template <int C, int TN, class Rows>
__global__ void __launch_bounds__(512, 1) mla_decode_split_kernel(const SplitParams p, const Rows rows) {
  static_assert(C % 64 == 0 && (TN == 32 || TN == 64 || TN == 128), "latent width must split into 4 warps x 16 dims");
  // Each thread copies at most one row of a tile: blocks have 128 * m_tiles >= 128 >= TN threads.
  constexpr int NTW = TN / 32;  // score n-tiles (8 tokens) per warp
  constexpr int DW = C / 4;     // latent dims per warp in the ctx product
  constexpr int NACC = DW / 8;  // ctx n-tiles per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int W = C + p.R, lds = padded(W), ldp = padded(TN);
  const int hb_rows = 16 * p.m_tiles;
  bf16* s_q = reinterpret_cast<bf16*>(smem_raw);     // [hb_rows][lds]
  bf16* s_k = s_q + hb_rows * lds;                   // [stages][TN][lds]
  bf16* s_p = s_k + p.stages * TN * lds;             // [hb_rows][ldp]
  float* s_red = reinterpret_cast<float*>(s_p + hb_rows * ldp);  // [m_tiles][4][16]
  __shared__ __align__(8) uint64_t s_bar[kMaxStages];             // one mbarrier per ring stage

  const int b = blockIdx.z, split = blockIdx.y, h0 = blockIdx.x * hb_rows;
  // The split's token range comes from the sequence's length on the device (the grid depends only on the cache's
  // capacity, so one launch serves any lengths, and a CUDA graph can replay it after the lengths change): the
  // length's tiles are spread over num_splits; splits past the end are empty and write LSE -inf only.
  const int len = p.lengths != nullptr ? min(max(p.lengths[b], 0), p.S) : p.S;
  const int len_tiles = (len + TN - 1) / TN;
  const int chunk = max((len_tiles + p.num_splits - 1) / p.num_splits, p.min_chunk_tiles) * TN;
  const int s_begin = int(min(int64_t(split) * chunk, int64_t(len))), s_end = min(len, s_begin + chunk);
  const int ntiles = s_end > s_begin ? (s_end - s_begin + TN - 1) / TN : 0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nthreads = blockDim.x;
  const int mt = warp >> 2, wq = warp & 3, g = lane >> 2, t4 = lane & 3;

  // Queries of this head block, [q~ ; q_pe] per row; rows past H are zero (their results are not stored).
  const int row_chunks = W / 8;
  for (int i = tid; i < hb_rows * row_chunks; i += nthreads) {
    const int row = i / row_chunks, col = (i - row * row_chunks) * 8, h = h0 + row;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (h < p.H) {
      const bf16* src = col < C ? p.q_lat + (int64_t(b) * p.H + h) * C + col
                                : p.q_pe + (int64_t(b) * p.H + h) * p.R + (col - C);
      v = *reinterpret_cast<const uint4*>(src);
    }
    *reinterpret_cast<uint4*>(s_q + row * lds + col) = v;
  }

  // Rows past the split's end are never copied; the ring starts zeroed, so such rows hold zeros or an earlier
  // tile's (finite) latent, and their probabilities are exactly 0.
  for (int i = tid; i < p.stages * TN * lds / 8; i += nthreads) reinterpret_cast<uint4*>(s_k)[i] = make_uint4(0, 0, 0, 0);
  if (tid == 0) {
    for (int s = 0; s < p.stages; ++s) mbar_init(&s_bar[s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the zeros are ordered before the copies
  __syncthreads();
  // Thread r copies row r of a tile (the copy engine's per-copy cost, not the bytes, limits narrow rows, so rows
  // are copied whole when the cache holds [c_kv ; k_pe] side by side). The stage's barrier has one arrival,
  // thread 0's expect_tx; copies completing before it cannot complete the phase. row_of(tile) is this thread's
  // source row of that tile (null past the split's end); it is computed one tile before the copy is issued, so a
  // page-table read overlaps the current tile's math.
  auto row_of = [&](int tile) -> RowSrc {
    const int t = s_begin + tile * TN + tid;
    if (tile >= ntiles || tid >= TN || t >= s_end) return {nullptr, nullptr};
    return rows.row(b, t);
  };
  auto issue_tile = [&](int tile, int stage, const RowSrc& src) {
    const int t0 = s_begin + tile * TN, nrows = min(TN, s_end - t0);
    if (tid == 0) mbar_expect_tx(&s_bar[stage], uint32_t(nrows) * W * 2);
    if (src.ckv == nullptr) return;
    bf16* dst = s_k + (stage * TN + tid) * lds;
    if (rows.fused_rows()) {
      bulk_copy_g2s(dst, src.ckv, W * 2, &s_bar[stage]);
    } else {
      bulk_copy_g2s(dst, src.ckv, C * 2, &s_bar[stage]);
      bulk_copy_g2s(dst + C, src.kpe, p.R * 2, &s_bar[stage]);
    }
  };
  for (int s = 0; s < p.stages - 1 && s < ntiles; ++s) issue_tile(s, s, row_of(s));
  RowSrc pending{nullptr, nullptr};
  if constexpr (Rows::kPrefetch) pending = row_of(p.stages - 1);

  float m_run[2] = {kNegInf, kNegInf};  // running max of rows g, g+8 (base-2 scaled scores), same in all 4 warps
  float l_run[2] = {0.f, 0.f};          // this thread's share of the running sum of probabilities
  float acc[NACC][4];
#pragma unroll
  for (int n = 0; n < NACC; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  const bf16* q_rows = s_q + (mt * 16) * lds;
  const bf16* p_rows = s_p + (mt * 16) * ldp;
  for (int tile = 0; tile < ntiles; ++tile) {
    mbar_wait(&s_bar[tile % p.stages], uint32_t(tile / p.stages) & 1u);
    __syncthreads();  // everyone is done with the stage refilled next (tile - 1's)
    {
      const int next = tile + p.stages - 1;
      if (next < ntiles) {
        if constexpr (Rows::kPrefetch) {
          issue_tile(next, next % p.stages, pending);
          pending = row_of(next + 1);
        } else {
          issue_tile(next, next % p.stages, row_of(next));
        }
      }
    }
    const bf16* k_rows = s_k + (tile % p.stages) * TN * lds;

    // 1. scores of 16 heads x TN/4 tokens over all W dims.
    float sc[NTW][4], sc2[NTW][4];  // two chains over alternating k-steps, so consecutive mma do not wait
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[j][e] = sc2[j][e] = 0.f;
    int k0 = 0;
#pragma unroll 2
    for (; k0 + 32 <= W; k0 += 32) {
      uint32_t a[4], a2[4];
      ldmatrix_x4(a, q_rows + (lane & 15) * lds + k0 + (lane >> 4) * 8);
      ldmatrix_x4(a2, q_rows + (lane & 15) * lds + k0 + 16 + (lane >> 4) * 8);
#pragma unroll
      for (int j = 0; j < NTW; ++j) {
        uint32_t bb[4];  // k-steps k0 and k0 + 16 of one n-tile
        ldmatrix_x4(bb, k_rows + (wq * (TN / 4) + j * 8 + (lane & 7)) * lds + k0 + (lane >> 3) * 8);
        mma_bf16(sc[j], a, bb[0], bb[1]);
        mma_bf16(sc2[j], a2, bb[2], bb[3]);
      }
    }
    if (k0 < W) {
      uint32_t a[4];
      ldmatrix_x4(a, q_rows + (lane & 15) * lds + k0 + (lane >> 4) * 8);
#pragma unroll
      for (int j = 0; j < NTW; ++j) {
        uint32_t bb[2];
        ldmatrix_x2(bb, k_rows + (wq * (TN / 4) + j * 8 + (lane & 7)) * lds + k0 + ((lane >> 3) & 1) * 8);
        mma_bf16(sc[j], a, bb[0], bb[1]);
      }
    }
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[j][e] += sc2[j][e];

    // 2. online softmax. Fragment element e of n-tile j: row g + 8*(e>>1), token 2*t4 + (e&1).
    const int tok0 = s_begin + tile * TN + wq * (TN / 4);
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = tok0 + j * 8 + 2 * t4 + (e & 1);
        const float v = tok < s_end ? sc[j][e] * p.scale_log2 : kNegInf;
        sc[j][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    if (t4 == 0) {
      s_red[(mt * 4 + wq) * 16 + g] = mx[0];
      s_red[(mt * 4 + wq) * 16 + g + 8] = mx[1];
    }
    __syncthreads();
    float m_new[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float tile_max = kNegInf;
#pragma unroll
      for (int q = 0; q < 4; ++q) tile_max = fmaxf(tile_max, s_red[(mt * 4 + q) * 16 + g + 8 * r]);
      m_new[r] = fmaxf(m_run[r], tile_max);
      alpha[r] = m_run[r] == kNegInf ? 0.f : exp2f(m_run[r] - m_new[r]);
      m_run[r] = m_new[r];
    }
    float row_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const bool live = m_new[r] != kNegInf;
        const float p0 = live ? exp2f(sc[j][2 * r] - m_new[r]) : 0.f;
        const float p1 = live ? exp2f(sc[j][2 * r + 1] - m_new[r]) : 0.f;
        const __nv_bfloat162 pk = __floats2bfloat162_rn(p0, p1);
        row_sum[r] += __low2float(pk) + __high2float(pk);
        *reinterpret_cast<__nv_bfloat162*>(s_p + (mt * 16 + g + 8 * r) * ldp + wq * (TN / 4) + j * 8 + 2 * t4) = pk;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * alpha[r] + row_sum[r];
#pragma unroll
    for (int n = 0; n < NACC; ++n) {
      acc[n][0] *= alpha[0];
      acc[n][1] *= alpha[0];
      acc[n][2] *= alpha[1];
      acc[n][3] *= alpha[1];
    }
    __syncthreads();  // probabilities of all TN tokens are in shared memory

    // 3. ctx[16 heads, DW dims] += P[16, TN] * latent[TN, DW].
#pragma unroll
    for (int ks = 0; ks < TN; ks += 16) {
      uint32_t a[4];
      ldmatrix_x4(a, p_rows + (lane & 15) * ldp + ks + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < NACC / 2; ++np) {
        uint32_t bb[4];
        ldmatrix_x4_trans(bb, k_rows + (ks + (lane & 7) + ((lane >> 3) & 1) * 8) * lds + wq * DW + np * 16 +
                                  (lane >> 4) * 8);
        mma_bf16(acc[2 * np], a, bb[0], bb[1]);
        mma_bf16(acc[2 * np + 1], a, bb[2], bb[3]);
      }
    }
  }

  // Row sums: across the quad, then across the 4 warps of the m-tile.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  __syncthreads();
  if (t4 == 0) {
    s_red[(mt * 4 + wq) * 16 + g] = l_run[0];
    s_red[(mt * 4 + wq) * 16 + g + 8] = l_run[1];
  }
  __syncthreads();
  const int64_t part = int64_t(b) * p.num_splits + split;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = h0 + mt * 16 + g + 8 * r;
    if (h >= p.H) continue;
    float l = 0.f;
#pragma unroll
    for (int q = 0; q < 4; ++q) l += s_red[(mt * 4 + q) * 16 + g + 8 * r];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* o = p.o_part + (part * p.H + h) * C + wq * DW + 2 * t4;
    if (ntiles > 0) {  // an empty split's ctx is never read (its weight in the combine is exactly 0)
#pragma unroll
      for (int n = 0; n < NACC; ++n)
        *reinterpret_cast<float2*>(o + n * 8) = make_float2(acc[n][2 * r] * inv, acc[n][2 * r + 1] * inv);
    }
    if (wq == 0 && t4 == 0) p.lse_part[part * p.H + h] = l > 0.f ? m_run[r] + log2f(l) : kNegInf;
  }
}

// out[b, h, :] = sum_s w_s o_part[b, s, h, :] with w_s = 2^(lse_s - max) / sum; one CTA per (head, sequence).
// The weights go to shared memory first; then thread groups of C/4 threads (4 dims each) sum interleaved splits,
// so the many independent loads are in flight together, and the groups' sums are added last.
constexpr int kCombineThreads = 256;
__global__ void __launch_bounds__(kCombineThreads) mla_decode_combine_kernel(const float* __restrict__ o_part,
                                                                            const float* __restrict__ lse_part,
                                                                            bf16* __restrict__ out, int num_splits,
                                                                            int H, int C) {
  extern __shared__ __align__(16) float s_comb[];
  float* w = s_comb;                                  // [splits] weights
  float* part = s_comb + ((num_splits + 3) & ~3);     // [groups][C] group sums
  const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  const float* lse = lse_part + int64_t(b) * num_splits * H + h;
  for (int s = tid; s < num_splits; s += kCombineThreads) w[s] = lse[int64_t(s) * H];
  __syncthreads();
  float mx = kNegInf;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, w[s]);
  __syncthreads();
  for (int s = tid; s < num_splits; s += kCombineThreads) w[s] = mx == kNegInf ? 0.f : exp2f(w[s] - mx);
  __syncthreads();
  float den = 0.f;
  for (int s = 0; s < num_splits; ++s) den += w[s];
  const int dq = C / 4, groups = kCombineThreads / dq, g = tid / dq, d = (tid % dq) * 4;
  if (g < groups) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    const float* o = o_part + (int64_t(b) * num_splits * H + h) * C + d;
#pragma unroll 4
    for (int s = g; s < num_splits; s += groups) {
      const float ws = w[s];
      if (ws == 0.f) continue;  // empty split (LSE -inf): its partial was never written
      const float4 v = *reinterpret_cast<const float4*>(o + int64_t(s) * H * C);
      acc.x += ws * v.x, acc.y += ws * v.y, acc.z += ws * v.z, acc.w += ws * v.w;
    }
    *reinterpret_cast<float4*>(part + g * C + d) = acc;
  }
  __syncthreads();
  if (g == 0) {
    float4 acc = *reinterpret_cast<const float4*>(part + d);
    for (int q = 1; q < groups; ++q) {
      const float4 v = *reinterpret_cast<const float4*>(part + q * C + d);
      acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    }
    const float inv = den > 0.f ? 1.f / den : 0.f;
    bf16* dst = out + (int64_t(b) * H + h) * C + d;
    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
    *reinterpret_cast<__nv_bfloat162*>(dst + 2) = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
  }
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// The latent cache operand: bf16 on the GPU, [B, S, X], last dim contiguous, rows 16-byte aligned.
bool cache_operand_ok(const at::Tensor& t) {
  return t.is_cuda() && t.scalar_type() == at::kBFloat16 && t.dim() == 3 && t.stride(2) == 1 &&
         (t.size(1) <= 1 || t.stride(1) % 8 == 0) && (t.size(0) <= 1 || t.stride(0) % 8 == 0) && aligned16(t);
}

bool widths_ok(int64_t c, int64_t r) { return c % 64 == 0 && c >= 64 && c <= 512 && r % 16 == 0 && r >= 16 && r <= 128; }

// The queries: bf16 CUDA [B, H, C] and [B, H, R] with the same B and H.
bool queries_ok(const at::Tensor& q_lat, const at::Tensor& q_pe) {
  return q_lat.is_cuda() && q_pe.is_cuda() && q_lat.scalar_type() == at::kBFloat16 &&
         q_pe.scalar_type() == at::kBFloat16 && q_lat.dim() == 3 && q_pe.dim() == 3 &&
         q_pe.size(0) == q_lat.size(0) && q_pe.size(1) == q_lat.size(1) && q_lat.size(1) > 0 &&
         q_lat.size(1) < 65536 && q_lat.size(0) < 65536 && widths_ok(q_lat.size(2), q_pe.size(2));
}

// Benchmark override of the key tile and heads per CTA (set_mla_decode_tuning); 0 = automatic.
std::atomic<int> g_tune_tn{0}, g_tune_m_tiles{0};

// Launch shape, from the widths, heads, batch and the cache's capacity S only (never the lengths), so the same
// plan serves every step of a captured decode graph.
struct LaunchPlan {
  int tn = 0, m_tiles = 0, head_blocks = 0, stages = 0, splits = 0, min_chunk_tiles = 1;
  int64_t smem_fixed = 0, smem_stage = 0;
};

// Head blocks of at most 64 heads (4 warps per 16). Two CTAs per SM where a ring of >= 2 tiles fits twice, so one
// CTA's softmax and syncs overlap the other's copies: the largest head block for which that holds, even if it
// takes more head blocks (their CTAs run side by side on the same split, so the latent comes from L2 after the
// first); else one CTA per SM with a deeper ring. Splits: num_splits > 0 as given, else one wave of CTAs over the
// SMs; at most one per tile of the capacity.
LaunchPlan plan_launch(int64_t c, int64_t r, int64_t heads, int64_t batch, int64_t capacity, int64_t num_splits) {
  LaunchPlan pl;
  const int w = int(c + r), lds = padded(w);
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t smem_budget = std::min<int64_t>(prop->sharedMemPerBlockOptin, 200 * 1024);
  int tn = max_tile_tokens(int(c));
  auto smem_fixed_for = [&](int mt) { return int64_t(16 * mt) * (lds + padded(tn)) * 2 + int64_t(mt) * 4 * 16 * 4; };
  while (tn > 32 && (smem_budget / 2 - smem_fixed_for(1)) / (int64_t(tn) * lds * 2) < 2) tn /= 2;
  pl.tn = tn;
  pl.smem_stage = int64_t(tn) * lds * 2;
  pl.m_tiles = int(std::min<int64_t>(4, (heads + 15) / 16));
  int ctas_per_sm = 1;
  for (int mt = pl.m_tiles; mt >= 1; --mt)
    if ((smem_budget / 2 - smem_fixed_for(mt)) / pl.smem_stage >= 2) {
      pl.m_tiles = mt, ctas_per_sm = 2;
      break;
    }
  const int force_tn = g_tune_tn.load(), force_mt = g_tune_m_tiles.load();
  if (force_tn > 0 || force_mt > 0) {  // benchmarks: the forced shape if a ring of 2 tiles fits one CTA
    const int tn2 = force_tn > 0 ? std::min(force_tn, max_tile_tokens(int(c))) : pl.tn;
    const int mt2 = force_mt > 0 ? force_mt : pl.m_tiles;
    const int64_t stage2 = int64_t(tn2) * lds * 2;
    const int64_t fixed2 = int64_t(16 * mt2) * (lds + padded(tn2)) * 2 + int64_t(mt2) * 4 * 16 * 4;
    if ((smem_budget - fixed2) / stage2 >= 2) {
      tn = pl.tn = tn2, pl.m_tiles = mt2, pl.smem_stage = stage2;
      auto fixed_for = [&](int mt) {
        return int64_t(16 * mt) * (lds + padded(tn)) * 2 + int64_t(mt) * 4 * 16 * 4;
      };
      ctas_per_sm = (smem_budget / 2 - fixed_for(mt2)) / stage2 >= 2 ? 2 : 1;
    }
  }
  pl.head_blocks = int((heads + 16 * pl.m_tiles - 1) / (16 * pl.m_tiles));
  pl.smem_fixed = int64_t(16 * pl.m_tiles) * (lds + padded(pl.tn)) * 2 + int64_t(pl.m_tiles) * 4 * 16 * 4;
  pl.stages = int(std::clamp<int64_t>((smem_budget / ctas_per_sm - pl.smem_fixed) / pl.smem_stage, 2, kMaxStages));
  const int64_t tiles = std::max<int64_t>(1, (capacity + tn - 1) / tn);
  int64_t splits = num_splits > 0 ? num_splits
                                   : std::max<int64_t>(1, int64_t(prop->multiProcessorCount) * ctas_per_sm /
                                                              (batch * pl.head_blocks));
  pl.splits = int(std::clamp<int64_t>(splits, 1, std::min<int64_t>(tiles, 4096)));
  // A split's partial (H x C fp32, written then read by the combine) costs 8 H C bytes against 2 (C + R) bytes
  // per latent row it reads: a split covers at least the tokens whose latent matches its partial's traffic, so a
  // short context spread over a full wave of splits moves no more partial bytes than latent bytes.
  const int64_t min_tokens = (4 * heads * c + w - 1) / w;
  pl.min_chunk_tiles = int(std::max<int64_t>(1, (min_tokens + tn - 1) / tn));
  return pl;
}

template <int C, int TN, class Rows>
void launch_tn(const SplitParams& p, const Rows& rows, const LaunchPlan& pl, int batch, cudaStream_t stream) {
  const int threads = 128 * p.m_tiles;
  const int64_t smem = pl.smem_fixed + pl.smem_stage * p.stages;
  auto kernel = mla_decode_split_kernel<C, TN, Rows>;
  static int smem_set = 0;  // the largest dynamic shared memory granted to this instantiation so far
  if (smem > smem_set) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    smem_set = int(smem);
  }
  kernel<<<dim3(pl.head_blocks, p.num_splits, batch), threads, smem, stream>>>(p, rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int C, class Rows>
void launch_c(const SplitParams& p, const Rows& rows, const LaunchPlan& pl, int batch, cudaStream_t stream) {
  if constexpr (max_tile_tokens(C) >= 128)
    if (pl.tn == 128) return launch_tn<C, 128>(p, rows, pl, batch, stream);
  if constexpr (max_tile_tokens(C) >= 64)
    if (pl.tn == 64) return launch_tn<C, 64>(p, rows, pl, batch, stream);
  launch_tn<C, 32>(p, rows, pl, batch, stream);
}

// Splits then combine, for either cache layout: q_lat [B, H, C], q_pe [B, H, R] contiguous; lengths [B] int32
// contiguous or undefined (capacity everywhere); out [B, H, C] bf16 contiguous. The partials come from the caching
// allocator (inside a CUDA graph capture, from the graph's pool).
template <class Rows>
void run_decode(const at::Tensor& q_lat, const at::Tensor& q_pe, const Rows& rows, int64_t capacity,
                const at::Tensor& lengths, double scale, int64_t num_splits, const at::Tensor& out) {
  const int64_t batch = q_lat.size(0), heads = q_lat.size(1), c = q_lat.size(2), r = q_pe.size(2);
  const LaunchPlan pl = plan_launch(c, r, heads, batch, capacity, num_splits);
  at::TensorOptions f32 = q_lat.options().dtype(at::kFloat);
  at::Tensor o_part = at::empty({batch, pl.splits, heads, c}, f32);  // [B, splits, H, Rkv]
  at::Tensor lse_part = at::empty({batch, pl.splits, heads}, f32);   // [B, splits, H]

  SplitParams p{};
  p.q_lat = reinterpret_cast<const bf16*>(q_lat.data_ptr());
  p.q_pe = reinterpret_cast<const bf16*>(q_pe.data_ptr());
  p.lengths = lengths.defined() ? lengths.data_ptr<int>() : nullptr;
  p.S = int(capacity), p.H = int(heads), p.R = int(r), p.m_tiles = pl.m_tiles, p.num_splits = pl.splits;
  p.stages = pl.stages, p.min_chunk_tiles = pl.min_chunk_tiles;
  p.scale_log2 = float(scale * M_LOG2E);
  p.o_part = o_part.data_ptr<float>();
  p.lse_part = lse_part.data_ptr<float>();

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int b = int(batch);
  switch (c) {
    case 64: launch_c<64>(p, rows, pl, b, stream); break;
    case 128: launch_c<128>(p, rows, pl, b, stream); break;
    case 192: launch_c<192>(p, rows, pl, b, stream); break;
    case 256: launch_c<256>(p, rows, pl, b, stream); break;
    case 320: launch_c<320>(p, rows, pl, b, stream); break;
    case 384: launch_c<384>(p, rows, pl, b, stream); break;
    case 448: launch_c<448>(p, rows, pl, b, stream); break;
    case 512: launch_c<512>(p, rows, pl, b, stream); break;
    default: TORCH_CHECK(false, "mla latent decode: latent width ", c, " not instantiated");
  }
  const int64_t comb_smem = (((pl.splits + 3) & ~int64_t{3}) + (kCombineThreads / (c / 4)) * c) * 4;
  mla_decode_combine_kernel<<<dim3(unsigned(heads), unsigned(batch)), kCombineThreads, comb_smem, stream>>>(
      p.o_part, p.lse_part, reinterpret_cast<bf16*>(out.data_ptr()), pl.splits, int(heads), int(c));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor output_for(const at::Tensor& q_lat, const at::Tensor& out_arg, const char* what) {
  const int64_t batch = q_lat.size(0), heads = q_lat.size(1), c = q_lat.size(2);
  if (!out_arg.defined()) return at::empty({batch, heads, c}, q_lat.options());  // [B, H, Rkv]
  TORCH_CHECK(out_arg.is_cuda() && out_arg.scalar_type() == at::kBFloat16 && out_arg.is_contiguous() &&
                  out_arg.sizes() == at::IntArrayRef({batch, heads, c}) && out_arg.device() == q_lat.device(),
              what, ": out must be contiguous bf16 [B, H, Rkv] = ", q_lat.sizes(), " on ", q_lat.device(), ", got ",
              out_arg.sizes());
  return out_arg;
}

}  // namespace

void set_mla_decode_tuning(int tile_tokens, int head_tiles) {
  g_tune_tn.store(tile_tokens == 32 || tile_tokens == 64 || tile_tokens == 128 ? tile_tokens : 0);
  g_tune_m_tiles.store(head_tiles >= 1 && head_tiles <= 4 ? head_tiles : 0);
}

bool mla_latent_decode_supported(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& c_kv,
                                 const at::Tensor& k_pe) {
  if (!queries_ok(q_lat, q_pe) || !cache_operand_ok(c_kv) || !cache_operand_ok(k_pe)) return false;
  return c_kv.size(2) == q_lat.size(2) && k_pe.size(2) == q_pe.size(2) && c_kv.size(0) == q_lat.size(0) &&
         k_pe.size(0) == c_kv.size(0) && k_pe.size(1) == c_kv.size(1) && c_kv.size(1) < (int64_t{1} << 31);
}

at::Tensor mla_latent_decode(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& c_kv,
                             const at::Tensor& k_pe, const at::Tensor& lengths, double scale, int64_t num_splits,
                             const at::Tensor& out_arg) {
  TORCH_CHECK(mla_latent_decode_supported(q_lat, q_pe, c_kv, k_pe),
              "mla_latent_decode: unsupported operands q_lat ", q_lat.sizes(), " q_pe ", q_pe.sizes(), " c_kv ",
              c_kv.sizes(), " k_pe ", k_pe.sizes(), " (bf16 CUDA, Rkv % 64 == 0 in [64, 512], Dr % 16 == 0 in "
              "[16, 128], 16-byte aligned rows with a contiguous last dim)");
  const int64_t batch = q_lat.size(0), c = q_lat.size(2), s = c_kv.size(1);
  if (lengths.defined())
    TORCH_CHECK(lengths.is_cuda() && lengths.scalar_type() == at::kInt && lengths.numel() == batch,
                "mla_latent_decode: lengths must be [B] int32 on the GPU");
  c10::cuda::CUDAGuard guard(q_lat.device());
  at::Tensor out = output_for(q_lat, out_arg, "mla_latent_decode");
  if (batch == 0) return out;
  if (s == 0) return out.zero_();
  StridedRows rows{};
  rows.ckv = reinterpret_cast<const bf16*>(c_kv.data_ptr());
  rows.kpe = reinterpret_cast<const bf16*>(k_pe.data_ptr());
  rows.ckv_sb = c_kv.stride(0), rows.ckv_ss = c_kv.stride(1), rows.kpe_sb = k_pe.stride(0), rows.kpe_ss = k_pe.stride(1);
  rows.fused = k_pe.data_ptr() == static_cast<const void*>(rows.ckv + c) && k_pe.stride(0) == c_kv.stride(0) &&
               k_pe.stride(1) == c_kv.stride(1);
  run_decode(q_lat.contiguous(), q_pe.contiguous(), rows, s, lengths.defined() ? lengths.contiguous() : at::Tensor(),
             scale, num_splits, out);
  return out;
}

bool mla_latent_decode_paged_supported(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& pages,
                                       const at::Tensor& page_table, const at::Tensor& lengths) {
  if (!queries_ok(q_lat, q_pe)) return false;
  const int64_t batch = q_lat.size(0), w = q_lat.size(2) + q_pe.size(2);
  if (!pages.is_cuda() || pages.scalar_type() != at::kBFloat16 || pages.dim() != 3 || pages.size(2) != w ||
      pages.stride(2) != 1 || pages.stride(1) != w || pages.stride(0) % 8 != 0 || !aligned16(pages) ||
      pages.size(1) < 1 || pages.size(0) < 1 || pages.device() != q_lat.device())
    return false;
  if (!page_table.is_cuda() || page_table.scalar_type() != at::kInt || page_table.dim() != 2 ||
      page_table.size(0) != batch || page_table.size(1) < 1 || page_table.stride(1) != 1 ||
      page_table.device() != q_lat.device())
    return false;
  if (!lengths.is_cuda() || lengths.scalar_type() != at::kInt || lengths.numel() != batch ||
      lengths.device() != q_lat.device())
    return false;
  return page_table.size(1) * pages.size(1) < (int64_t{1} << 31) && pages.size(0) < (int64_t{1} << 31);
}

at::Tensor mla_latent_decode_paged(const at::Tensor& q_lat, const at::Tensor& q_pe, const at::Tensor& pages,
                                   const at::Tensor& page_table, const at::Tensor& lengths, double scale,
                                   int64_t num_splits, const at::Tensor& out_arg) {
  TORCH_CHECK(mla_latent_decode_paged_supported(q_lat, q_pe, pages, page_table, lengths),
              "mla_latent_decode_paged: unsupported operands q_lat ", q_lat.sizes(), " q_pe ", q_pe.sizes(),
              " pages ", pages.sizes(), " page_table ", page_table.sizes(), " lengths ", lengths.sizes(),
              " (bf16 CUDA queries [S, H, Rkv] / [S, H, Dr] with Rkv % 64 == 0 in [64, 512], Dr % 16 == 0 in "
              "[16, 128]; pages bf16 [P, page_size, Rkv+Dr] with contiguous rows, 16-byte aligned; page_table "
              "int32 [S, max_pages] with a contiguous last dim; lengths int32 [S]; all on one GPU)");
  c10::cuda::CUDAGuard guard(q_lat.device());
  at::Tensor out = output_for(q_lat, out_arg, "mla_latent_decode_paged");
  if (q_lat.size(0) == 0) return out;
  const int64_t page_size = pages.size(1), w = pages.size(2);
  PagedRows rows{};
  rows.pages = reinterpret_cast<const bf16*>(pages.data_ptr());
  rows.table = page_table.data_ptr<int>();
  rows.table_stride = page_table.size(0) > 1 ? page_table.stride(0) : page_table.size(1);
  rows.page_elems = pages.stride(0);
  rows.page_size = int(page_size), rows.width = int(w), rows.c = int(q_lat.size(2));
  run_decode(q_lat.contiguous(), q_pe.contiguous(), rows, page_table.size(1) * page_size, lengths.contiguous(), scale,
             num_splits, out);
  return out;
}

}  // namespace hylo::kernels
