// Chunked gated delta rule backward on tensor cores. The formulas, written out in ATen and pinned to autograd in
// fp64, are tests/cpp/gdn/gdn_chunk_backward_ref.h; the notation is the forward's (gated_delta_chunk.cu): chunk
// C = 64, in-chunk cumulative log decay gamma, gamma_C its last value, Q' = scale Q, Gamma_ij = e^(gamma_i -
// gamma_j) (j <= i), h the state entering a chunk, dH the gradient of the state leaving it.
//
//   recompute (the forward's prep and states kernels, context parallel as the forward): W, U, gamma, T = (I+A)^-1,
//           h and v_new per chunk (nothing is kept alive between forward and backward).
//   dv_local (chunks x heads): dv_local = (Q' K^T o Gamma o causal)^T dO.
//   dstates (serial over chunks in reverse; heads x 64- or 32-row tiles of dH in parallel, as the forward's walk):
//           dv_new = dv_local + (K o e^(gamma_C - gamma)) dH^T;  dH <- e^gamma_C dH + dO^T (Q' o e^gamma) - dv_new^T W.
//           Stores dH per chunk (bf16) and dv_new (bf16); the last dH is d initial_state.
//   dqk   (chunks x 64-column tiles of Dk x heads; a loop over 64-wide tiles of Dv):
//           dq = scale (e^gamma o dO h + (dO v_new^T o Gamma o causal) K),
//           dk_part = scale (dO v_new^T o Gamma o causal)^T Q + e^(gamma_C - gamma) o v_new dH,  dW = -dv_new h,
//           and this tile's share of d gamma (every term is a sum over the Dk columns, so tiles add).
//   wy    (chunks x heads): the UT transform's backward: dT = (e^gamma_j dW K^T + dv_new V^T) beta_j,
//           dA = -strictly-lower(T^T dT T^T) (fp32), dv = beta o T^T dv_new,
//           dk = dk_part + beta e^gamma o T^T dW + (G + G^T) K with G = dA o beta_i Gamma, dbeta, the rest of
//           d gamma, and dg = the reverse cumulative sum of d gamma within the chunk.
//
// Precision: tensor-core operands bf16 (K, Q, V, dO, W, T, h, dH, v_new, dv_new, the masked C x C products), fp32
// accumulation, dH carried in fp32; the two C x C x C products of dA in fp32 on the CUDA cores.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/gated_delta/chunk_backward_trace.h"
#include "hylo/kernels/gated_delta/chunk_common.cuh"
#include "hylo/kernels/gated_delta/chunk_forward.h"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"

namespace hylo::kernels {

namespace gdn {
namespace {

constexpr int C = kChunk;
constexpr int kTile = 64;                 // column tiles over Dk and Dv in the per-chunk kernels (= C)
constexpr int ld16 = kTile + kPad16;      // bf16 [64][ld16] tiles
constexpr int ld32 = kTile + kPad32;      // fp32 [64][ld32] tiles
constexpr size_t kTile16 = sizeof(bf16) * C * ld16;
constexpr size_t kTile32 = sizeof(float) * C * ld32;
static_assert(C == kTile, "the C x C and C x 64 tiles share their layouts");

constexpr size_t align128(size_t x) { return (x + 127) / 128 * 128; }

// gemm_tiles (chunk_common.cuh) accumulating onto D instead of overwriting it.
template <bool TransA, bool TransB, int M, int N, int K>
__device__ __forceinline__ void gemm_tiles_acc(float* d, int ldd, const bf16* a, int lda, const bf16* b, int ldb) {
  constexpr int tiles_n = N / 16, per_warp = (M / 16) * tiles_n / kWarps;
  static_assert(per_warp * kWarps == (M / 16) * tiles_n, "tiles must split evenly over the warps");
  const int warp = threadIdx.x >> 5;
  FragC acc[per_warp];
#pragma unroll
  for (int t = 0; t < per_warp; ++t) {
    const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
    wmma::load_matrix_sync(acc[t], d + m0 * ldd + n0, ldd, wmma::mem_row_major);
  }
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

// fp32 rows -> shared through cp.async (cols a multiple of 4); rows >= valid_rows are zero-filled.
__device__ __forceinline__ void load_tile_f32_async(float* s, int sstride, const float* g, int64_t gstride, int rows,
                                                    int cols, int valid_rows) {
  const int vec_per_row = cols / 4;
  for (int i = threadIdx.x; i < rows * vec_per_row; i += blockDim.x) {
    const int r = i / vec_per_row, c = (i % vec_per_row) * 4;
    const bool ok = r < valid_rows;
    cp_async16(s + r * sstride + c, ok ? g + r * gstride + c : g, ok);
  }
}

// Sum over the 4 consecutive lanes that share a row (the kernels give each row 4 threads of 16 columns).
__device__ __forceinline__ float quad_sum(float s) {
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 2);
  return s;
}

__device__ __forceinline__ float bf(bf16 x) { return __bfloat162float(x); }

// ---- dv_local = P^T dO with P = Q' K^T o Gamma o causal ------------------------------------------------------
struct DvlArgs {
  const bf16* q;     // [B, T, H, DK]
  const bf16* k;     // [B, T, H, DK]
  const bf16* dout;  // [B, T, H, Dv]
  const float* gam;  // [BH, NC * C]
  float* dvl;        // [BH, NC, C, Dv]
  int64_t T, H, Dv, NC;
  float scale;
};

template <int DK>
struct DvlSmem {
  static constexpr int ldk = DK + kPad16;
  static constexpr size_t q_off = 0;                                            // bf16 [C][ldk]
  static constexpr size_t k_off = align128(q_off + sizeof(bf16) * C * ldk);     // bf16 [C][ldk]
  static constexpr size_t p_off = align128(k_off + sizeof(bf16) * C * ldk);     // fp32 [C][ld32]  Q K^T
  static constexpr size_t pb_off = align128(p_off + kTile32);                   // bf16 [C][ld16]  P
  static constexpr size_t do_off = align128(pb_off + kTile16);                  // bf16 [C][ld16]  dO columns
  static constexpr size_t st_off = align128(do_off + kTile16);                  // fp32 [C][ld32]  staging
  static constexpr size_t g_off = align128(st_off + kTile32);                   // fp32 [C]
  static constexpr size_t bytes = g_off + sizeof(float) * C;
};

template <int DK>
__global__ void __launch_bounds__(kThreads) dvl_kernel(DvlArgs a) {
  using S = DvlSmem<DK>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem + S::q_off);
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  float* ps = reinterpret_cast<float*>(smem + S::p_off);
  bf16* pb = reinterpret_cast<bf16*>(smem + S::pb_off);
  bf16* dos = reinterpret_cast<bf16*>(smem + S::do_off);
  float* st = reinterpret_cast<float*>(smem + S::st_off);
  float* gam = reinterpret_cast<float*>(smem + S::g_off);

  const int tid = threadIdx.x;
  const int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / a.H, h = bh % a.H, t0 = n * C;
  const int valid = static_cast<int>(a.T - t0 < C ? a.T - t0 : int64_t(C));
  const int64_t row0 = (b * a.T + t0) * a.H + h;  // token row of (b, t0, h)
  load_tile_async(qs, S::ldk, a.q + row0 * DK, a.H * DK, C, DK, valid);
  load_tile_async(ks, S::ldk, a.k + row0 * DK, a.H * DK, C, DK, valid);
  if (tid < C / 4) cp_async16(gam + tid * 4, a.gam + bh * a.NC * C + n * C + tid * 4, true);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  gemm_tiles<false, true, C, C, DK>(ps, ld32, qs, S::ldk, ks, S::ldk);
  __syncthreads();
  for (int i = tid; i < C * C; i += kThreads) {
    const int r = i / C, c = i % C;
    const float p = c <= r ? ps[r * ld32 + c] * __expf(gam[r] - gam[c]) * a.scale : 0.0f;
    pb[r * ld16 + c] = __float2bfloat16(p);
  }
  float* out = a.dvl + (bh * a.NC + n) * C * a.Dv;
  for (int64_t v0 = 0; v0 < a.Dv; v0 += kTile) {
    load_tile_async(dos, ld16, a.dout + row0 * a.Dv + v0, a.H * a.Dv, C, kTile, valid);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();  // dO landed; P written (first tile); the previous tile's reads of st are done
    gemm_tiles<true, false, C, kTile, C>(st, ld32, pb, ld16, dos, ld16);
    __syncthreads();
    for (int i = tid; i < C * kTile / 4; i += kThreads) {
      const int r = i / (kTile / 4), c = (i % (kTile / 4)) * 4;
      *reinterpret_cast<float4*>(out + r * a.Dv + v0 + c) = *reinterpret_cast<const float4*>(st + r * ld32 + c);
    }
    __syncthreads();  // st and dos are free for the next tile
  }
}

// ---- dstates: the serial reverse walk over chunks ---------------------------------------------------------------
// Context parallel as the forward's walk: the step is affine in dH, dH_in = dH_out M'_n + N'_n with
// M'_n = e^gamma_C I - K_dec^T W (the forward's transfer matrix transposed). A segment's walk from zero gives its
// N' ("N blocks": rows of dH); the same walk on the identity with dv_local = dO = 0 gives its M' ("M blocks": Dk
// rows), both stored at the reversed segment index P-1-s so that the forward's scan (starts[j+1] = starts[j] M[j] +
// N[j], from d final_state) yields each segment's end gradient; the main pass then walks all segments in parallel.
struct DStateArgs {
  const bf16* q;        // [B, T, H, DK]
  const bf16* k;        // [B, T, H, DK]
  const bf16* w;        // [BH, NC, C, DK]
  const float* gam;     // [BH, NC * C]
  const float* dvl;     // [BH, NC, C, Dv]
  const bf16* dout;     // [B, T, H, Dv]
  const float* start;   // N blocks' start: [BH, P, Dv, DK] at index P-1-s (start_seg_stride = Dv*DK) or
                        // [BH, Dv, DK] (stride 0: d final_state, P = 1); null = zero
  bf16* dhs;            // [BH, NC, Dv, DK] gradient of the state leaving each chunk, or null (pre-pass)
  bf16* dvn;            // [BH, NC, C, Dv], or null (pre-pass)
  float* out;           // N blocks' end: [BH, P, Dv, DK] at index P-1-s (out_seg_stride = Dv*DK), or
                        // [BH, Dv, DK] written by segment 0 only (stride 0: d initial_state); or null
  float* m_out;         // M blocks' end: [BH, P, DK, DK] at index P-1-s, or null (no M blocks)
  int64_t T, H, NC, Dv, chunks_per_seg, start_seg_stride, out_seg_stride;
  int n_blocks;         // blocks along x that are N blocks (Dv / BV); the rest are M blocks (DK / BV)
  float scale;
};

// The per-chunk tiles (K, Q, W, dv_local, dO, gamma) are double-buffered where shared memory allows (Dk <= 128):
// the next chunk's loads fly while this one computes. Dk 256 keeps one buffer (two would need 290 KB).
template <int DK, int BV>
struct DStateSmem {
  static constexpr int nbuf = DK <= 128 ? 2 : 1;
  static constexpr int ldk = DK + kPad16, lds = DK + kPad32, ldv32 = BV + kPad32, ldv16 = BV + kPad16;
  static constexpr size_t kt = sizeof(bf16) * C * ldk, dvt = sizeof(float) * C * ldv32, dot = sizeof(bf16) * C * ldv16;
  static constexpr size_t s_off = 0;                                             // fp32 [BV][lds]   dH rows
  static constexpr size_t sb_off = align128(s_off + sizeof(float) * BV * lds);   // bf16 [BV][ldk]   dH in bf16
  static constexpr size_t k_off = align128(sb_off + sizeof(bf16) * BV * ldk);    // bf16 [nbuf][C][ldk]  K, K_dec
  static constexpr size_t q_off = align128(k_off + nbuf * kt);                   // bf16 [nbuf][C][ldk]  Q, Q_dec
  static constexpr size_t w_off = align128(q_off + nbuf * kt);                   // bf16 [nbuf][C][ldk]  W
  static constexpr size_t dv_off = align128(w_off + nbuf * kt);                  // fp32 [nbuf][C][ldv32] dv_local, new
  static constexpr size_t do_off = align128(dv_off + nbuf * dvt);                // bf16 [nbuf][C][ldv16] dO columns
  static constexpr size_t nb_off = align128(do_off + nbuf * dot);                // bf16 [C][ldv16]  -dv_new
  static constexpr size_t g_off = align128(nb_off + dot);                        // fp32 [nbuf][C]
  static constexpr size_t bytes = g_off + sizeof(float) * nbuf * C;
};

template <int DK, int BV>
__global__ void __launch_bounds__(kThreads) dstate_kernel(DStateArgs a) {
  using S = DStateSmem<DK, BV>;
  extern __shared__ __align__(128) unsigned char smem[];
  float* ss = reinterpret_cast<float*>(smem + S::s_off);
  bf16* sb = reinterpret_cast<bf16*>(smem + S::sb_off);
  bf16* nb = reinterpret_cast<bf16*>(smem + S::nb_off);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const auto [m_block, r0, seg, P, bh, b, h, n_begin, n_end] = walk_block(a, BV);
  const int64_t rseg = P - 1 - seg;
  bf16* dhs_out = m_block ? nullptr : a.dhs;
  bf16* dvn_out = m_block ? nullptr : a.dvn;

  // Initial rows of dH: identity rows for M blocks, the given start or zeros for N blocks.
  const float* start = (!m_block && a.start)
                           ? a.start + bh * (a.start_seg_stride ? a.start_seg_stride * P : a.Dv * DK) +
                                 rseg * a.start_seg_stride
                           : nullptr;
  for (int i = tid; i < BV * DK; i += kThreads) {
    const int r = i / DK, c = i % DK;
    const float x = m_block ? ((r0 + r == c) ? 1.0f : 0.0f) : (start ? start[(r0 + r) * DK + c] : 0.0f);
    ss[r * S::lds + c] = x;
    sb[r * S::ldk + c] = __float2bfloat16(x);
  }

  // Chunk n's tiles into buffer buf (one commit group).
  auto issue = [&](int64_t n, int buf) {
    const int64_t t0 = n * C, row0 = (b * a.T + t0) * a.H + h;
    const int valid = static_cast<int>(a.T - t0 < C ? a.T - t0 : int64_t(C));
    load_tile_async(reinterpret_cast<bf16*>(smem + S::k_off + buf * S::kt), S::ldk, a.k + row0 * DK, a.H * DK, C,
                    DK, valid);
    load_tile_async(reinterpret_cast<bf16*>(smem + S::q_off + buf * S::kt), S::ldk, a.q + row0 * DK, a.H * DK, C,
                    DK, valid);
    load_tile_async(reinterpret_cast<bf16*>(smem + S::w_off + buf * S::kt), S::ldk, a.w + (bh * a.NC + n) * C * DK,
                    DK, C, DK, C);
    // M blocks: dv_local = dO = 0 (zero-filled tiles; the row offset r0 of an M block is not a Dv column).
    const float* dvl_src = m_block ? a.dvl : a.dvl + (bh * a.NC + n) * C * a.Dv + r0;
    const bf16* do_src = m_block ? a.dout : a.dout + row0 * a.Dv + r0;
    load_tile_f32_async(reinterpret_cast<float*>(smem + S::dv_off + buf * S::dvt), S::ldv32, dvl_src, a.Dv, C, BV,
                        m_block ? 0 : C);
    load_tile_async(reinterpret_cast<bf16*>(smem + S::do_off + buf * S::dot), S::ldv16, do_src, a.H * a.Dv, C, BV,
                    m_block ? 0 : valid);
    float* g = reinterpret_cast<float*>(smem + S::g_off) + buf * C;
    if (tid < C / 4) cp_async16(g + tid * 4, a.gam + bh * a.NC * C + n * C + tid * 4, true);
    cp_async_commit();
  };
  if (S::nbuf == 2 && n_begin < n_end) issue(n_end - 1, 0);

  for (int64_t n = n_end - 1; n >= n_begin; --n) {
    const int buf = S::nbuf == 2 ? int((n_end - 1 - n) & 1) : 0;
    if (S::nbuf == 1) issue(n, 0);
    cp_async_wait_all();
    __syncthreads();  // chunk n landed for every thread; every read of the other buffer (chunk n + 1) is done
    if (S::nbuf == 2 && n > n_begin) issue(n - 1, buf ^ 1);
    bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off + buf * S::kt);
    bf16* qs = reinterpret_cast<bf16*>(smem + S::q_off + buf * S::kt);
    const bf16* ws = reinterpret_cast<const bf16*>(smem + S::w_off + buf * S::kt);
    float* dvs = reinterpret_cast<float*>(smem + S::dv_off + buf * S::dvt);
    const bf16* dos = reinterpret_cast<const bf16*>(smem + S::do_off + buf * S::dot);
    const float* gam = reinterpret_cast<const float*>(smem + S::g_off) + buf * C;
    const float gC = gam[C - 1];

    // K -> K_dec = K o e^(gamma_C - gamma), Q -> Q_dec = scale Q o e^gamma (bf16, in place); dH out for dqk.
    for (int i = tid; i < C * DK; i += kThreads) {
      const int r = i / DK, c = i % DK;
      ks[r * S::ldk + c] = __float2bfloat16(bf(ks[r * S::ldk + c]) * __expf(gC - gam[r]));
      qs[r * S::ldk + c] = __float2bfloat16(bf(qs[r * S::ldk + c]) * __expf(gam[r]) * a.scale);
    }
    if (dhs_out) {
      bf16* hd = dhs_out + ((bh * a.NC + n) * a.Dv + r0) * DK;
      for (int i = tid; i < BV * DK / 8; i += kThreads) {
        const int r = i / (DK / 8), c = (i % (DK / 8)) * 8;
        *reinterpret_cast<uint4*>(hd + r * DK + c) = *reinterpret_cast<const uint4*>(sb + r * S::ldk + c);
      }
    }
    __syncthreads();

    // dv_new = dv_local + K_dec dH^T ([C x BV], reduction over DK), accumulated onto dv_local; each warp then
    // writes the negated bf16 copy of its own tiles for the dH update.
    constexpr int tiles_v = BV / 16, per_warp1 = (C / 16) * tiles_v / kWarps;
    static_assert(per_warp1 * kWarps == (C / 16) * tiles_v, "dv_new tiles must split evenly over the warps");
    {
      FragC acc[per_warp1];
#pragma unroll
      for (int t = 0; t < per_warp1; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_v) * 16, n0 = (tile % tiles_v) * 16;
        wmma::load_matrix_sync(acc[t], dvs + m0 * S::ldv32 + n0, S::ldv32, wmma::mem_row_major);
      }
#pragma unroll 4
      for (int k0 = 0; k0 < DK; k0 += 16) {
#pragma unroll
        for (int t = 0; t < per_warp1; ++t) {
          const int tile = warp + t * kWarps, m0 = (tile / tiles_v) * 16, n0 = (tile % tiles_v) * 16;
          FragA fa;
          FragBT fb;
          wmma::load_matrix_sync(fa, ks + m0 * S::ldk + k0, S::ldk);
          wmma::load_matrix_sync(fb, sb + n0 * S::ldk + k0, S::ldk);
          wmma::mma_sync(acc[t], fa, fb, acc[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < per_warp1; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_v) * 16, n0 = (tile % tiles_v) * 16;
        wmma::store_matrix_sync(dvs + m0 * S::ldv32 + n0, acc[t], S::ldv32, wmma::mem_row_major);
        __syncwarp();
        const int r = m0 + (lane >> 1), c = n0 + (lane & 1) * 8;
#pragma unroll
        for (int j = 0; j < 8; ++j) nb[r * S::ldv16 + c + j] = __float2bfloat16(-dvs[r * S::ldv32 + c + j]);
      }
    }
    __syncthreads();
    if (dvn_out) store_tile_bf16(dvn_out + (bh * a.NC + n) * C * a.Dv + r0, a.Dv, dvs, S::ldv32, C, BV);

    // dH <- e^gamma_C dH + dO^T Q_dec + (-dv_new)^T W ([BV x DK], reduction over 2C).
    const float decay = __expf(gC);
    constexpr int tiles_n = DK / 16, per_warp2 = (BV / 16) * tiles_n / kWarps;
    static_assert(per_warp2 * kWarps == (BV / 16) * tiles_n, "dH tiles must split evenly over the warps");
    {
      FragC acc[per_warp2];
#pragma unroll
      for (int t = 0; t < per_warp2; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
        wmma::load_matrix_sync(acc[t], ss + m0 * S::lds + n0, S::lds, wmma::mem_row_major);
#pragma unroll
        for (int e = 0; e < acc[t].num_elements; ++e) acc[t].x[e] *= decay;
      }
#pragma unroll 2
      for (int k0 = 0; k0 < C; k0 += 16) {
#pragma unroll
        for (int t = 0; t < per_warp2; ++t) {
          const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
          FragAT fa;
          FragB fb;
          wmma::load_matrix_sync(fa, dos + k0 * S::ldv16 + m0, S::ldv16);
          wmma::load_matrix_sync(fb, qs + k0 * S::ldk + n0, S::ldk);
          wmma::mma_sync(acc[t], fa, fb, acc[t]);
          wmma::load_matrix_sync(fa, nb + k0 * S::ldv16 + m0, S::ldv16);
          wmma::load_matrix_sync(fb, ws + k0 * S::ldk + n0, S::ldk);
          wmma::mma_sync(acc[t], fa, fb, acc[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < per_warp2; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
        wmma::store_matrix_sync(ss + m0 * S::lds + n0, acc[t], S::lds, wmma::mem_row_major);
        __syncwarp();
        const int r = m0 + (lane >> 1), c = n0 + (lane & 1) * 8;
        alignas(16) bf16 o8[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) o8[j] = __float2bfloat16(ss[r * S::lds + c + j]);
        *reinterpret_cast<uint4*>(sb + r * S::ldk + c) = *reinterpret_cast<const uint4*>(o8);
      }
    }
    __syncthreads();  // every read of this chunk's tiles is done before the next chunk's loads land
  }

  __syncthreads();  // (a segment with no chunk still orders the initial rows before the copy out)
  float* out = nullptr;
  if (m_block) {
    if (a.m_out) out = a.m_out + (bh * P + rseg) * DK * DK + r0 * DK;
  } else if (a.out && (a.out_seg_stride || seg == 0)) {
    out = a.out + bh * (a.out_seg_stride ? a.out_seg_stride * P : a.Dv * DK) + rseg * a.out_seg_stride + r0 * DK;
  }
  if (out)
    for (int i = tid; i < BV * DK; i += kThreads) out[(i / DK) * DK + i % DK] = ss[(i / DK) * S::lds + i % DK];
}

// ---- dqk: dq, the chunk-local part of dk, dW, this column tile's share of d gamma --------------------------------
struct DqkArgs {
  const bf16* q;       // [B, T, H, DK]
  const bf16* k;       // [B, T, H, DK]
  const bf16* h;       // [BH, NC, Dv, DK]
  const bf16* vnew;    // [BH, NC, C, Dv]
  const bf16* dhs;     // [BH, NC, Dv, DK]
  const bf16* dvn;     // [BH, NC, C, Dv]
  const bf16* dout;    // [B, T, H, Dv]
  const float* gam;    // [BH, NC * C]
  void* dq;            // [B, T, H, DK] in q's dtype
  ElemType tq;
  float* dk_part;      // [BH, NC, C, DK]
  bf16* dw;            // [BH, NC, C, DK]
  float* dgam_part;    // [BH, NC, DK / 64, C]
  int64_t T, H, NC, Dv, DK;
  float scale;
};

struct DqkSmem {
  static constexpr size_t q_off = 0;                            // bf16 [C][ld16]   Q columns of the tile
  static constexpr size_t k_off = q_off + kTile16;              // bf16 [C][ld16]   K columns
  static constexpr size_t do_off = k_off + kTile16;             // bf16 [C][ld16]   dO, one Dv tile
  static constexpr size_t vn_off = do_off + kTile16;            // bf16 [C][ld16]   v_new
  static constexpr size_t dvn_off = vn_off + kTile16;           // bf16 [C][ld16]   dv_new
  static constexpr size_t h_off = dvn_off + kTile16;            // bf16 [64][ld16]  h [Dv tile x Dk tile]
  static constexpr size_t dh_off = h_off + kTile16;             // bf16 [64][ld16]  dH
  static constexpr size_t pb_off = dh_off + kTile16;            // bf16 [C][ld16]   dP o Gamma o causal
  static constexpr size_t x1_off = pb_off + kTile16;            // fp32 [C][ld32]   dO h
  static constexpr size_t x2_off = x1_off + kTile32;            // fp32 [C][ld32]   dv_new h, later staging
  static constexpr size_t x3_off = x2_off + kTile32;            // fp32 [C][ld32]   v_new dH
  static constexpr size_t dp_off = x3_off + kTile32;            // fp32 [C][ld32]   dO v_new^T, later staging
  static constexpr size_t qk_off = dp_off + kTile32;            // fp32 [C][ld32]   Q K^T (this tile), then E1
  static constexpr size_t v_off = qk_off + kTile32;             // fp32 [4][C]      gamma, d gamma, F, col sums
  static constexpr size_t red_off = v_off + sizeof(float) * 4 * C;  // fp32 [kWarps]
  static constexpr size_t bytes = red_off + sizeof(float) * kWarps;
};

__global__ void __launch_bounds__(kThreads) dqk_kernel(DqkArgs a) {
  using S = DqkSmem;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem + S::q_off);
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  bf16* dos = reinterpret_cast<bf16*>(smem + S::do_off);
  bf16* vns = reinterpret_cast<bf16*>(smem + S::vn_off);
  bf16* dvns = reinterpret_cast<bf16*>(smem + S::dvn_off);
  bf16* hs = reinterpret_cast<bf16*>(smem + S::h_off);
  bf16* dhs = reinterpret_cast<bf16*>(smem + S::dh_off);
  bf16* pb = reinterpret_cast<bf16*>(smem + S::pb_off);
  float* x1 = reinterpret_cast<float*>(smem + S::x1_off);
  float* x2 = reinterpret_cast<float*>(smem + S::x2_off);
  float* x3 = reinterpret_cast<float*>(smem + S::x3_off);
  float* dp = reinterpret_cast<float*>(smem + S::dp_off);
  float* qk = reinterpret_cast<float*>(smem + S::qk_off);
  float* gam = reinterpret_cast<float*>(smem + S::v_off);
  float* dgl = gam + C;
  float* fs = gam + 2 * C;
  float* col = gam + 3 * C;
  float* red = reinterpret_cast<float*>(smem + S::red_off);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t n = blockIdx.x, c0 = int64_t(blockIdx.y) * kTile, bh = blockIdx.z;
  const int64_t b = bh / a.H, h = bh % a.H, t0 = n * C, row0 = (b * a.T + t0) * a.H + h;
  const int64_t DK = a.DK;
  const int valid = static_cast<int>(a.T - t0 < C ? a.T - t0 : int64_t(C));

  load_tile_async(qs, ld16, a.q + row0 * DK + c0, a.H * DK, C, kTile, valid);
  load_tile_async(ks, ld16, a.k + row0 * DK + c0, a.H * DK, C, kTile, valid);
  if (tid < C / 4) cp_async16(gam + tid * 4, a.gam + bh * a.NC * C + n * C + tid * 4, true);

  // X1 = dO h, X2 = dv_new h, X3 = v_new dH ([C x 64] each) and dP = dO v_new^T ([C x C]), over the Dv tiles.
  constexpr int tiles_n = kTile / 16, per_warp = (C / 16) * tiles_n / kWarps;  // 2
  FragC acc1[per_warp], acc2[per_warp], acc3[per_warp], accp[per_warp];
#pragma unroll
  for (int t = 0; t < per_warp; ++t) {
    wmma::fill_fragment(acc1[t], 0.0f);
    wmma::fill_fragment(acc2[t], 0.0f);
    wmma::fill_fragment(acc3[t], 0.0f);
    wmma::fill_fragment(accp[t], 0.0f);
  }
  float hdh = 0.0f;  // this thread's share of <dH, h> over the tile's columns
  const bf16* hbase = a.h + (bh * a.NC + n) * a.Dv * DK + c0;
  const bf16* dhbase = a.dhs + (bh * a.NC + n) * a.Dv * DK + c0;
  for (int64_t v0 = 0; v0 < a.Dv; v0 += kTile) {
    load_tile_async(dos, ld16, a.dout + row0 * a.Dv + v0, a.H * a.Dv, C, kTile, valid);
    load_tile_async(vns, ld16, a.vnew + (bh * a.NC + n) * C * a.Dv + v0, a.Dv, C, kTile, C);
    load_tile_async(dvns, ld16, a.dvn + (bh * a.NC + n) * C * a.Dv + v0, a.Dv, C, kTile, C);
    load_tile_async(hs, ld16, hbase + v0 * DK, DK, kTile, kTile, kTile);
    load_tile_async(dhs, ld16, dhbase + v0 * DK, DK, kTile, kTile, kTile);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
#pragma unroll
    for (int k0 = 0; k0 < kTile; k0 += 16) {
#pragma unroll
      for (int t = 0; t < per_warp; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
        FragA fdo, fdvn, fvn;
        FragB fh, fdh;
        FragBT fvnT;
        wmma::load_matrix_sync(fdo, dos + m0 * ld16 + k0, ld16);
        wmma::load_matrix_sync(fdvn, dvns + m0 * ld16 + k0, ld16);
        wmma::load_matrix_sync(fvn, vns + m0 * ld16 + k0, ld16);
        wmma::load_matrix_sync(fh, hs + k0 * ld16 + n0, ld16);
        wmma::load_matrix_sync(fdh, dhs + k0 * ld16 + n0, ld16);
        wmma::load_matrix_sync(fvnT, vns + n0 * ld16 + k0, ld16);
        wmma::mma_sync(acc1[t], fdo, fh, acc1[t]);
        wmma::mma_sync(acc2[t], fdvn, fh, acc2[t]);
        wmma::mma_sync(acc3[t], fvn, fdh, acc3[t]);
        wmma::mma_sync(accp[t], fdo, fvnT, accp[t]);
      }
    }
    for (int i = tid; i < kTile * kTile; i += kThreads) {
      const int r = i / kTile, c = i % kTile;
      hdh += bf(hs[r * ld16 + c]) * bf(dhs[r * ld16 + c]);
    }
    __syncthreads();  // the tiles are free for the next Dv tile
  }
#pragma unroll
  for (int t = 0; t < per_warp; ++t) {
    const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
    wmma::store_matrix_sync(x1 + m0 * ld32 + n0, acc1[t], ld32, wmma::mem_row_major);
    wmma::store_matrix_sync(x2 + m0 * ld32 + n0, acc2[t], ld32, wmma::mem_row_major);
    wmma::store_matrix_sync(x3 + m0 * ld32 + n0, acc3[t], ld32, wmma::mem_row_major);
    wmma::store_matrix_sync(dp + m0 * ld32 + n0, accp[t], ld32, wmma::mem_row_major);
  }
  for (int off = 16; off > 0; off >>= 1) hdh += __shfl_xor_sync(0xffffffffu, hdh, off);
  if (lane == 0) red[warp] = hdh;
  gemm_tiles<false, true, C, C, kTile>(qk, ld32, qs, ld16, ks, ld16);  // this tile's share of Q K^T
  __syncthreads();

  // dPm = dP o Gamma o causal (bf16 for the products) and E1 = dPm o Q'K^T (the d gamma of P), in place of Q K^T;
  // dW = -X2 out.
  for (int i = tid; i < C * C; i += kThreads) {
    const int r = i / C, c = i % C;
    const float d = c <= r ? dp[r * ld32 + c] * __expf(gam[r] - gam[c]) : 0.0f;
    pb[r * ld16 + c] = __float2bfloat16(d);
    qk[r * ld32 + c] = d * a.scale * qk[r * ld32 + c];
  }
  {
    bf16* dwo = a.dw + (bh * a.NC + n) * C * DK + c0;
    for (int i = tid; i < C * kTile / 8; i += kThreads) {
      const int r = i / (kTile / 8), c = (i % (kTile / 8)) * 8;
      alignas(16) bf16 o8[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) o8[j] = __float2bfloat16(-x2[r * ld32 + c + j]);
      *reinterpret_cast<uint4*>(dwo + r * DK + c) = *reinterpret_cast<const uint4*>(o8);
    }
  }
  __syncthreads();

  // d gamma (this tile's share): scale e^gamma_i sum_b X1 Q + rowsum(E1) - colsum(E1) - F_i, and at the chunk's
  // last position sum_i F_i + e^gamma_C <dH, h>, with F_i = e^(gamma_C - gamma_i) sum_b X3 K.
  const float gC = gam[C - 1];
  if (tid < C) {
    const int r = tid;
    float s1 = 0.0f, s3 = 0.0f, re = 0.0f;
    for (int c = 0; c < kTile; ++c) {
      s1 += x1[r * ld32 + c] * bf(qs[r * ld16 + c]);
      s3 += x3[r * ld32 + c] * bf(ks[r * ld16 + c]);
      re += qk[r * ld32 + c];
    }
    const float f = __expf(gC - gam[r]) * s3;
    fs[r] = f;
    dgl[r] = a.scale * __expf(gam[r]) * s1 + re - f;
  } else if (tid < 2 * C) {
    const int c = tid - C;
    float ce = 0.0f;
    for (int r = 0; r < C; ++r) ce += qk[r * ld32 + c];
    col[c] = ce;
  }
  __syncthreads();
  if (tid < 32) {
    float f = fs[tid] + fs[tid + 32];
    for (int off = 16; off > 0; off >>= 1) f += __shfl_xor_sync(0xffffffffu, f, off);
    if (tid == 0) {
      float hd = 0.0f;
      for (int w = 0; w < kWarps; ++w) hd += red[w];
      dgl[C - 1] += f + __expf(gC) * hd;
    }
  }
  __syncthreads();
  if (tid < C)
    a.dgam_part[((bh * a.NC + n) * (DK / kTile) + blockIdx.y) * C + tid] = dgl[tid] - col[tid];

  // dq = scale (X1 o e^gamma + dPm K);  dk_part = scale dPm^T Q + X3 o e^(gamma_C - gamma).
  gemm_tiles<false, false, C, kTile, C>(dp, ld32, pb, ld16, ks, ld16);
  gemm_tiles<true, false, C, kTile, C>(x2, ld32, pb, ld16, qs, ld16);
  __syncthreads();
  for (int i = tid; i < C * kTile; i += kThreads) {
    const int r = i / kTile, c = i % kTile;
    if (r < valid)
      store_from_float(a.dq, (row0 + int64_t(r) * a.H) * DK + c0 + c, a.tq,
                       a.scale * (x1[r * ld32 + c] * __expf(gam[r]) + dp[r * ld32 + c]));
    a.dk_part[((bh * a.NC + n) * C + r) * DK + c0 + c] = a.scale * x2[r * ld32 + c] + x3[r * ld32 + c] * __expf(gC - gam[r]);
  }
}

// ---- wy: the UT transform's backward, dv, the rest of dk, dbeta, dg ----------------------------------------------
struct WyArgs {
  const bf16* k;            // [B, T, H, DK]
  const bf16* v;            // [B, T, H, Dv]
  const float* beta;        // [B, T, H]
  const float* gam;         // [BH, NC * C]
  const float* t;           // [BH, NC, C, C]
  const bf16* dw;           // [BH, NC, C, DK]
  const bf16* dvn;          // [BH, NC, C, Dv]
  const float* dk_part;     // [BH, NC, C, DK]
  const float* dgam_part;   // [BH, NC, DK / 64, C]
  void* dk;                 // [B, T, H, DK] in k's dtype
  void* dv;                 // [B, T, H, Dv] in v's dtype
  ElemType tk, tv;
  float* dbeta;             // [B, T, H]
  float* dg;                // [B, T, H]
  int64_t T, H, NC, Dv;
};

template <int DK>
struct WySmem {
  static constexpr int ldk = DK + kPad16;
  static constexpr size_t k_off = 0;                                          // bf16 [C][ldk]  K
  static constexpr size_t dw_off = align128(k_off + sizeof(bf16) * C * ldk);  // bf16 [C][ldk]  dW
  static constexpr size_t tf_off = align128(dw_off + sizeof(bf16) * C * ldk); // fp32 [C][ld32] T
  static constexpr size_t tb_off = tf_off + kTile32;                          // bf16 [C][ld16] T
  static constexpr size_t dt_off = tb_off + kTile16;                          // fp32 [C][ld32] dT, dA, staging
  static constexpr size_t kk_off = dt_off + kTile32;                          // fp32 [C][ld32] K K^T, then H
  static constexpr size_t tmp_off = kk_off + kTile32;                         // fp32 [C][ld32] staging, dT T^T
  static constexpr size_t gb_off = tmp_off + kTile32;                         // bf16 [C][ld16] G + G^T
  static constexpr size_t v_off = gb_off + kTile16;                           // bf16 [C][ld16] V, one Dv tile
  static constexpr size_t dvn_off = v_off + kTile16;                          // bf16 [C][ld16] dv_new
  static constexpr size_t vec_off = dvn_off + kTile16;                        // fp32 [6][C]
  static constexpr size_t bytes = vec_off + sizeof(float) * 6 * C;
};

template <int DK>
__global__ void __launch_bounds__(kThreads) wy_kernel(WyArgs a) {
  using S = WySmem<DK>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  bf16* dws = reinterpret_cast<bf16*>(smem + S::dw_off);
  float* tf = reinterpret_cast<float*>(smem + S::tf_off);
  bf16* tb = reinterpret_cast<bf16*>(smem + S::tb_off);
  float* dt = reinterpret_cast<float*>(smem + S::dt_off);
  float* kk = reinterpret_cast<float*>(smem + S::kk_off);
  float* tmp = reinterpret_cast<float*>(smem + S::tmp_off);
  bf16* gb = reinterpret_cast<bf16*>(smem + S::gb_off);
  bf16* vs = reinterpret_cast<bf16*>(smem + S::v_off);
  bf16* dvs = reinterpret_cast<bf16*>(smem + S::dvn_off);
  float* gam = reinterpret_cast<float*>(smem + S::vec_off);
  float* bet = gam + C;
  float* dbeta = gam + 2 * C;
  float* dgam = gam + 3 * C;
  float* col = gam + 4 * C;
  float* srow = gam + 5 * C;

  const int tid = threadIdx.x;
  const int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / a.H, h = bh % a.H, t0 = n * C;
  const int64_t row0 = (b * a.T + t0) * a.H + h;
  const int valid = static_cast<int>(a.T - t0 < C ? a.T - t0 : int64_t(C));
  const int64_t chunk = bh * a.NC + n;

  load_tile_async(ks, S::ldk, a.k + row0 * DK, a.H * DK, C, DK, valid);
  load_tile_async(dws, S::ldk, a.dw + chunk * C * DK, DK, C, DK, C);
  load_tile_f32_async(tf, ld32, a.t + chunk * C * C, C, C, C, C);
  if (tid < C / 4) cp_async16(gam + tid * 4, a.gam + bh * a.NC * C + n * C + tid * 4, true);
  cp_async_commit();
  if (tid < C) {
    bet[tid] = tid < valid ? a.beta[row0 + int64_t(tid) * a.H] : 0.0f;
    dbeta[tid] = 0.0f;
    srow[tid] = 0.0f;
    float d = 0.0f;
    for (int kt = 0; kt < DK / kTile; ++kt) d += a.dgam_part[(chunk * (DK / kTile) + kt) * C + tid];
    dgam[tid] = d;
  }
  cp_async_wait_all();
  __syncthreads();
  for (int i = tid; i < C * C; i += kThreads) tb[(i / C) * ld16 + i % C] = __float2bfloat16(tf[(i / C) * ld32 + i % C]);
  gemm_tiles<false, true, C, C, DK>(kk, ld32, ks, S::ldk, ks, S::ldk);   // K K^T
  gemm_tiles<false, true, C, C, DK>(dt, ld32, dws, S::ldk, ks, S::ldk);  // dW K^T
  __syncthreads();
  for (int i = tid; i < C * C; i += kThreads) dt[(i / C) * ld32 + i % C] *= __expf(gam[i % C]);

  // Over the Dv tiles: dT += dv_new V^T; dv = beta o T^T dv_new; dbeta += rowsum(T^T dv_new o V).
  // 4 threads a row, each every 4th column (c = cq + 4j): a warp reads 8 rows x 4 consecutive columns, no bank
  // conflicts on the fp32 tiles (row stride 68 floats = 4 banks).
  const int r = tid >> 2, cq = tid & 3;
  for (int64_t v0 = 0; v0 < a.Dv; v0 += kTile) {
    load_tile_async(vs, ld16, a.v + row0 * a.Dv + v0, a.H * a.Dv, C, kTile, valid);
    load_tile_async(dvs, ld16, a.dvn + chunk * C * a.Dv + v0, a.Dv, C, kTile, C);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    gemm_tiles_acc<false, true, C, C, kTile>(dt, ld32, dvs, ld16, vs, ld16);
    gemm_tiles<true, false, C, kTile, C>(tmp, ld32, tb, ld16, dvs, ld16);
    __syncthreads();
    float s = 0.0f;
#pragma unroll 4
    for (int j = 0; j < 16; ++j) {
      const int c = cq + 4 * j;
      const float x = tmp[r * ld32 + c];
      s += x * bf(vs[r * ld16 + c]);
      if (r < valid) store_from_float(a.dv, (row0 + int64_t(r) * a.H) * a.Dv + v0 + c, a.tv, bet[r] * x);
    }
    s = quad_sum(s);
    if ((tid & 3) == 0) dbeta[r] += s;
    __syncthreads();  // tmp, vs, dvs free for the next tile
  }
  for (int i = tid; i < C * C; i += kThreads) dt[(i / C) * ld32 + i % C] *= bet[i % C];  // dT
  __syncthreads();

  // dA = -strictly-lower(T^T dT T^T) in fp32: tmp = dT T^T, then dA = -T^T tmp (into dt).
  for (int j = 0; j < 16; ++j) {
    const int c = cq + 4 * j;
    float s = 0.0f;
    for (int m = 0; m < C; ++m) s += dt[r * ld32 + m] * tf[c * ld32 + m];
    tmp[r * ld32 + c] = s;
  }
  __syncthreads();
  for (int j = 0; j < 16; ++j) {
    const int c = cq + 4 * j;
    float s = 0.0f;
    if (c < r)
      for (int m = 0; m < C; ++m) s += tf[m * ld32 + r] * tmp[m * ld32 + c];
    dt[r * ld32 + c] = -s;
  }
  __syncthreads();

  // G = dA o beta_i Gamma (j < i): (G + G^T) in bf16 for dk; H = dA o K K^T o Gamma in place of K K^T:
  // dbeta_i += rowsum(H), d gamma += rowsum(E2) - colsum(E2) with E2 = dA o A = beta_i H.
  for (int i = tid; i < C * C; i += kThreads) {
    const int rr = i / C, cc = i % C;
    float g1 = 0.0f, g2 = 0.0f, hv = 0.0f;
    if (cc < rr) {
      const float gm = __expf(gam[rr] - gam[cc]), da = dt[rr * ld32 + cc];
      g1 = da * bet[rr] * gm;
      hv = da * kk[rr * ld32 + cc] * gm;
    } else if (rr < cc) {
      g2 = dt[cc * ld32 + rr] * bet[cc] * __expf(gam[cc] - gam[rr]);
    }
    gb[rr * ld16 + cc] = __float2bfloat16(g1 + g2);
    kk[rr * ld32 + cc] = hv;
  }
  __syncthreads();
  if (tid < C) {
    float s = 0.0f;
    for (int c = 0; c < C; ++c) s += kk[tid * ld32 + c];
    dbeta[tid] += s;
    dgam[tid] += bet[tid] * s;
  } else if (tid < 2 * C) {
    const int c = tid - C;
    float s = 0.0f;
    for (int rr = 0; rr < C; ++rr) s += bet[rr] * kk[rr * ld32 + c];
    col[c] = s;
  }
  __syncthreads();

  // Over the Dk tiles: dk = dk_part + beta e^gamma o T^T dW + (G + G^T) K; srow = rowsum(T^T dW o K).
  for (int c0 = 0; c0 < DK; c0 += kTile) {
    gemm_tiles<true, false, C, kTile, C>(tmp, ld32, tb, ld16, dws + c0, S::ldk);
    gemm_tiles<false, false, C, kTile, C>(dt, ld32, gb, ld16, ks + c0, S::ldk);
    __syncthreads();
    const float be = bet[r] * __expf(gam[r]);
    float s = 0.0f;
#pragma unroll 4
    for (int j = 0; j < 16; ++j) {
      const int c = cq + 4 * j;
      const float x = tmp[r * ld32 + c];
      s += x * bf(ks[r * S::ldk + c0 + c]);
      if (r < valid)
        store_from_float(a.dk, (row0 + int64_t(r) * a.H) * DK + c0 + c, a.tk,
                         a.dk_part[(chunk * C + r) * DK + c0 + c] + be * x + dt[r * ld32 + c]);
    }
    s = quad_sum(s);
    if ((tid & 3) == 0) srow[r] += s;
    __syncthreads();
  }
  if (tid < C) {
    const float e = __expf(gam[tid]);
    dbeta[tid] += e * srow[tid];
    dgam[tid] += bet[tid] * e * srow[tid] - col[tid];
  }
  __syncthreads();
  if (tid == 0) {  // dg = reverse cumulative sum of d gamma within the chunk
    float acc = 0.0f;
    for (int i = C - 1; i >= 0; --i) acc += dgam[i], dgam[i] = acc;
  }
  __syncthreads();
  if (tid < valid) {
    a.dg[row0 + int64_t(tid) * a.H] = dgam[tid];
    a.dbeta[row0 + int64_t(tid) * a.H] = dbeta[tid];
  }
}

constexpr size_t kMaxSmem = 227 * 1024;  // sm_90's opt-in shared memory per block
static_assert(DvlSmem<256>::bytes <= kMaxSmem && DStateSmem<256, 32>::bytes <= kMaxSmem &&
                  DStateSmem<128, 64>::bytes <= kMaxSmem && DStateSmem<64, 64>::bytes <= kMaxSmem &&
                  DqkSmem::bytes <= kMaxSmem && WySmem<256>::bytes <= kMaxSmem,
              "a backward kernel's shared memory exceeds the per-block limit");

template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes, const char* who) {
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess)
    throw Error(std::string("gated_delta_chunk_backward_cuda ") + who + ": shared memory " + std::to_string(bytes) +
                " bytes refused: " + cudaGetErrorString(e));
}

template <int DK> constexpr int dstate_rows() { return DK <= 128 ? 64 : 32; }

struct BwdIn {  // the kernels' layouts (gated_delta_chunk_backward_cuda converts)
  at::Tensor q, k, v, g, beta, init, dout, dfinal;
};

template <int DK>
GatedDeltaGrads run_backward(const BwdIn& in, double scale, const at::Tensor& q0, const at::Tensor& k0,
                             const at::Tensor& v0, int segments, BackwardTrace* trace) {
  constexpr int BV = dstate_rows<DK>();
  const int64_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), Dv = in.v.size(3), BH = B * H;
  const int64_t NC = (T + C - 1) / C;
  const auto f32 = in.q.options().dtype(at::kFloat), b16 = in.q.options().dtype(at::kBFloat16);
  const cudaStream_t stream = current_stream();
  const float sc = static_cast<float>(scale);
  auto bp = [](const at::Tensor& t) { return reinterpret_cast<const bf16*>(t.data_ptr()); };
  // HYLO_GDN_STAGE_TIMES=1: each stage's time to stderr, as the forward's launcher (diagnosis only).
  static const bool timed = std::getenv("HYLO_GDN_STAGE_TIMES") != nullptr;
  cudaEvent_t ev[6];
  if (timed)
    for (auto& e : ev) cudaEventCreate(&e), cudaEventRecord(e, stream);

  ChunkStates st = chunk_states(in.k, in.v, in.g, in.beta, in.init, segments, /*keep_t=*/true);
  st.u.reset();  // (only the forward's walk reads U; the stream-ordered allocator reuses it from here on)
  if (trace) trace->t = st.t, trace->h = st.h, trace->vnew = st.vnew;
  if (timed) cudaEventRecord(ev[1], stream);

  at::Tensor dvl = at::empty({BH, NC, C, Dv}, f32);  // [BH, NC, C, Dv]
  set_smem(dvl_kernel<DK>, DvlSmem<DK>::bytes, "dv_local");
  dvl_kernel<DK><<<dim3(unsigned(NC), unsigned(BH)), kThreads, DvlSmem<DK>::bytes, stream>>>(
      DvlArgs{bp(in.q), bp(in.k), bp(in.dout), st.gam.data_ptr<float>(), dvl.data_ptr<float>(), T, H, Dv, NC, sc});
  check_launch("gated_delta_chunk_backward_cuda dv_local");
  if (timed) cudaEventRecord(ev[2], stream);

  at::Tensor dhs = at::empty({BH, NC, Dv, DK}, b16);  // [BH, NC, Dv, DK]
  at::Tensor dvn = at::empty({BH, NC, C, Dv}, b16);   // [BH, NC, C, Dv]
  at::Tensor dinit = in.init.defined() ? empty_output({B, H, Dv, DK}, f32) : at::Tensor();
  set_smem(dstate_kernel<DK, BV>, DStateSmem<DK, BV>::bytes, "dstates");
  const int n_blocks = static_cast<int>(Dv / BV), m_blocks = DK / BV;
  const int P = choose_segments(NC, BH * n_blocks, segments);
  const int64_t cps = (NC + P - 1) / P;
  const float* dvlp = dvl.data_ptr<float>();
  at::Tensor starts;  // [BH, P, Dv, DK] the gradient at each segment's end, at index P-1-s
  if (P > 1) {
    at::Tensor nn = at::empty({BH, P, Dv, DK}, f32);  // [BH, P, Dv, DK] segment walk from zero (index P-1-s)
    at::Tensor mm = at::empty({BH, P, DK, DK}, f32);  // [BH, P, DK, DK] segment transfer matrix (index P-1-s)
    dstate_kernel<DK, BV><<<dim3(unsigned(n_blocks + m_blocks), unsigned(P), unsigned(BH)), kThreads,
                            DStateSmem<DK, BV>::bytes, stream>>>(
        DStateArgs{bp(in.q), bp(in.k), bp(st.w), st.gam.data_ptr<float>(), dvlp, bp(in.dout), nullptr, nullptr,
                   nullptr, nn.data_ptr<float>(), mm.data_ptr<float>(), T, H, NC, Dv, cps, 0, Dv * DK, n_blocks,
                   sc});
    check_launch("gated_delta_chunk_backward_cuda segment M', N'");
    starts = segment_scan(in.dfinal, mm, nn);
  }
  const float* startp = P > 1 ? starts.data_ptr<float>() : (in.dfinal.defined() ? in.dfinal.data_ptr<float>() : nullptr);
  dstate_kernel<DK, BV><<<dim3(unsigned(n_blocks), unsigned(P), unsigned(BH)), kThreads, DStateSmem<DK, BV>::bytes,
                          stream>>>(
      DStateArgs{bp(in.q), bp(in.k), bp(st.w), st.gam.data_ptr<float>(), dvlp, bp(in.dout), startp,
                 reinterpret_cast<bf16*>(dhs.data_ptr()), reinterpret_cast<bf16*>(dvn.data_ptr()),
                 dinit.defined() ? dinit.data_ptr<float>() : nullptr, nullptr, T, H, NC, Dv, cps,
                 P > 1 ? Dv * DK : 0, 0, n_blocks, sc});
  check_launch("gated_delta_chunk_backward_cuda dstates");
  if (timed) cudaEventRecord(ev[3], stream);
  if (trace) trace->dvl = dvl, trace->dh = dhs, trace->dvnew = dvn;
  dvl.reset();

  at::Tensor dq = empty_output({B, T, H, DK}, q0.options());
  at::Tensor dk_part = at::empty({BH, NC, C, DK}, f32);          // [BH, NC, C, DK]
  at::Tensor dw = at::empty({BH, NC, C, DK}, b16);               // [BH, NC, C, DK]
  at::Tensor dgam_part = at::empty({BH, NC, DK / kTile, C}, f32); // [BH, NC, DK/64, C]
  set_smem(dqk_kernel, DqkSmem::bytes, "dqk");
  dqk_kernel<<<dim3(unsigned(NC), unsigned(DK / kTile), unsigned(BH)), kThreads, DqkSmem::bytes, stream>>>(
      DqkArgs{bp(in.q), bp(in.k), bp(st.h), bp(st.vnew), bp(dhs), bp(dvn), bp(in.dout), st.gam.data_ptr<float>(),
              dq.data_ptr(), elem_type(dq, "gated_delta_chunk_backward_cuda dq"), dk_part.data_ptr<float>(),
              reinterpret_cast<bf16*>(dw.data_ptr()), dgam_part.data_ptr<float>(), T, H, NC, Dv, DK, sc});
  check_launch("gated_delta_chunk_backward_cuda dqk");
  if (timed) cudaEventRecord(ev[4], stream);
  if (trace) trace->dw = dw, trace->dk_part = dk_part, trace->dgam = dgam_part.sum(2);

  at::Tensor dk = empty_output({B, T, H, DK}, k0.options());
  at::Tensor dv = empty_output({B, T, H, Dv}, v0.options());
  at::Tensor dbeta = empty_output({B, T, H}, f32), dg = empty_output({B, T, H}, f32);
  set_smem(wy_kernel<DK>, WySmem<DK>::bytes, "wy");
  wy_kernel<DK><<<dim3(unsigned(NC), unsigned(BH)), kThreads, WySmem<DK>::bytes, stream>>>(
      WyArgs{bp(in.k), bp(in.v), in.beta.data_ptr<float>(), st.gam.data_ptr<float>(), st.t.data_ptr<float>(),
             bp(dw), bp(dvn), dk_part.data_ptr<float>(), dgam_part.data_ptr<float>(), dk.data_ptr(), dv.data_ptr(),
             elem_type(dk, "gated_delta_chunk_backward_cuda dk"), elem_type(dv, "gated_delta_chunk_backward_cuda dv"),
             dbeta.data_ptr<float>(), dg.data_ptr<float>(), T, H, NC, Dv});
  check_launch("gated_delta_chunk_backward_cuda wy");
  if (timed) {
    cudaEventRecord(ev[5], stream);
    cudaEventSynchronize(ev[5]);
    float t[5];
    for (int i = 0; i < 5; ++i) cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]);
    std::fprintf(stderr, "gdn_bwd_stages B %ld T %ld H %ld Dk %d Dv %ld P %d: recompute %.3f ms, dv_local %.3f ms, "
                 "dstates %.3f ms, dqk %.3f ms, wy %.3f ms\n", long(B), long(T), long(H), DK, long(Dv), P, t[0], t[1],
                 t[2], t[3], t[4]);
    for (auto& e : ev) cudaEventDestroy(e);
  }
  return {dq, dk, dv, dg, dbeta, dinit};
}

}  // namespace

GatedDeltaGrads chunk_backward_traced(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, double scale,
                                      const at::Tensor& initial_state, const at::Tensor& d_o,
                                      const at::Tensor& d_final_state, int segments, BackwardTrace* trace) {
  if (!gated_delta_chunk_cuda_supports(q, v, initial_state))
    throw Error("gated_delta_chunk_backward_cuda: unsupported q " + c10::str(q.sizes()) + " / v " +
                c10::str(v.sizes()) + " (Dk 64, 128 or 256; Dv a multiple of 64 up to 512; CUDA, fp32/bf16/fp16)");
  if (!d_o.sizes().equals(v.sizes()))
    throw Error("gated_delta_chunk_backward_cuda: d_o must be [B, T, H, Dv] = " + c10::str(v.sizes()) + ", got " +
                c10::str(d_o.sizes()));
  const std::vector<int64_t> sshape = {q.size(0), q.size(2), v.size(3), q.size(3)};
  if (d_final_state.defined() && !d_final_state.sizes().equals(sshape))
    throw Error("gated_delta_chunk_backward_cuda: d_final_state must be [B, H, Dv, Dk] = " + c10::str(sshape) +
                ", got " + c10::str(d_final_state.sizes()));
  const c10::cuda::CUDAGuard guard(q.device());
  BwdIn in;
  in.q = q.to(at::kBFloat16).contiguous();
  in.k = k.to(at::kBFloat16).contiguous();
  in.v = v.to(at::kBFloat16).contiguous();
  in.g = g.to(at::kFloat).contiguous();
  in.beta = beta.to(at::kFloat).contiguous();
  in.init = initial_state.defined() ? initial_state.to(at::kFloat).contiguous() : at::Tensor();
  in.dout = d_o.to(at::kBFloat16).contiguous();
  in.dfinal = d_final_state.defined() ? d_final_state.to(at::kFloat).contiguous() : at::Tensor();
  GatedDeltaGrads r;
  switch (q.size(3)) {
    case 64: r = run_backward<64>(in, scale, q, k, v, segments, trace); break;
    case 128: r = run_backward<128>(in, scale, q, k, v, segments, trace); break;
    case 256: r = run_backward<256>(in, scale, q, k, v, segments, trace); break;
    default: throw Error("gated_delta_chunk_backward_cuda: Dk " + std::to_string(q.size(3)) + " unsupported");
  }
  r.dg = r.dg.to(g.scalar_type());
  r.dbeta = r.dbeta.to(beta.scalar_type());
  return r;
}

}  // namespace gdn

GatedDeltaGrads gated_delta_chunk_backward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& g, const at::Tensor& beta, double scale,
                                                const at::Tensor& initial_state, const at::Tensor& d_o,
                                                const at::Tensor& d_final_state, int segments) {
  return gdn::chunk_backward_traced(q, k, v, g, beta, scale, initial_state, d_o, d_final_state, segments, nullptr);
}

}  // namespace hylo::kernels
