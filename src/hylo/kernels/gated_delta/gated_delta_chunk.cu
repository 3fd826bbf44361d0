// Chunked gated delta rule forward on tensor cores (the ATen reference is gated_delta_chunk in ops/; the
// algorithm is ENGINE-NOTES 6.3). Per head, with chunk C = 64, in-chunk cumulative log-decay gamma and
// gamma_C = gamma at the chunk's last token:
//
//   prep    (parallel over chunks x heads)
//           A = strictly-lower(beta_i (K K^T)_ij exp(gamma_i - gamma_j));  T = (I + A)^-1 (forward substitution,
//           one column per thread); W = T diag(beta e^gamma) K,  U = T diag(beta) V.
//   states  (serial over the chunks of a segment; parallel over heads x value-row tiles x segments)
//           v_new = U - W S^T;  S <- e^gamma_C S + (v_new o e^(gamma_C - gamma))^T K.
//           Each block of rows of S (value channels) evolves on its own given K, W, so rows are tiled across
//           blocks. The state before each chunk (h, bf16) and v_new (bf16) are stored for the output pass.
//   output  (parallel over chunks x heads x value tiles)
//           O = scale (e^gamma o Q) h^T + (scale Q K^T o Gamma o causal) v_new.
//
// Context parallel (batch 1, few heads, long prompts): the state recursion is affine in the incoming state,
// S_end = S_start M + N with M = prod_n (e^gamma_C I - W_n^T (K_n o e^(gamma_C - gamma))). The sequence is cut
// into P segments; one launch of the state kernel computes every segment's N (zero start) and M (the same
// recursion run on the identity, with U = 0 and Dk rows instead of Dv); a small scan gives the true start state
// of each segment; the main state pass then runs all segments in parallel from those starts.
//
// Precision: the state S, M, N and all accumulations are fp32; tensor-core operands (K, Q, V, T, W, U, h,
// v_new) are bf16, as in FLA's kernels.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/gated_delta/chunk_common.cuh"
#include "hylo/kernels/gated_delta/chunk_forward.h"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"

namespace hylo::kernels {

namespace gdn {
namespace {

constexpr int C = kChunk;

// ---- prep: W, U and gamma per chunk ------------------------------------------------------------------------
struct PrepArgs {
  const bf16* k;      // [B, T, H, DK]
  const bf16* v;      // [B, T, H, Dv]
  const float* g;     // [B, T, H]
  const float* beta;  // [B, T, H]
  bf16* w;            // [BH, NC, C, DK]
  bf16* u;            // [BH, NC, C, Dv]
  float* gam;         // [BH, NC * C]   in-chunk cumulative log decay; padded tokens repeat the last value
  int64_t T, H, Dv, NC;
  float* t_out;       // [BH, NC, C, C] T = (I + A)^-1 in fp32 for the backward, or null
};

template <int DK>
struct PrepSmem {
  static constexpr int ldk = DK + kPad16, ldc32 = C + kPad32, ldc16 = C + kPad16;
  static constexpr int ldst = 64 + kPad32;
  static constexpr size_t k_off = 0;                                   // bf16 [C][ldk]  K
  static constexpr size_t a_off = k_off + sizeof(bf16) * C * ldk;      // fp32 [C][ldc32] K K^T, then A
  static constexpr size_t t_off = a_off + sizeof(float) * C * ldc32;   // fp32 [C][ldc32] T = (I + A)^-1
  static constexpr size_t tw_off = t_off + sizeof(float) * C * ldc32;  // bf16 [C][ldc16] T diag(beta e^gamma)
  static constexpr size_t tu_off = tw_off + sizeof(bf16) * C * ldc16;  // bf16 [C][ldc16] T diag(beta)
  static constexpr size_t st_off = a_off;  // fp32 [C][ldst] output staging, over A (dead once T is formed)
  static_assert(ldst <= ldc32, "the staging tile must fit in A's space");
  static constexpr size_t g_off = tu_off + sizeof(bf16) * C * ldc16;   // fp32 [C] gamma, [C] beta
  static constexpr size_t vs_off = g_off + sizeof(float) * 2 * C;      // bf16 [C][Dv + 8] V (run-time width)
  static size_t bytes(int64_t Dv) { return vs_off + sizeof(bf16) * C * (Dv + kPad16); }
};

template <int DK>
__global__ void __launch_bounds__(kThreads) prep_kernel(PrepArgs a) {
  using S = PrepSmem<DK>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  float* am = reinterpret_cast<float*>(smem + S::a_off);
  float* tm = reinterpret_cast<float*>(smem + S::t_off);
  bf16* tw = reinterpret_cast<bf16*>(smem + S::tw_off);
  bf16* tu = reinterpret_cast<bf16*>(smem + S::tu_off);
  float* st = reinterpret_cast<float*>(smem + S::st_off);
  float* gam = reinterpret_cast<float*>(smem + S::g_off);
  float* bet = gam + C;
  bf16* vs = reinterpret_cast<bf16*>(smem + S::vs_off);

  const int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int64_t t0 = n * C;
  const int valid = static_cast<int>((a.T - t0 < C ? a.T - t0 : int64_t(C)));
  const int64_t row_stride_k = a.H * DK, row_stride_v = a.H * a.Dv;

  // K and all of V in flight at once (cp.async); V lands while K K^T and the inverse are computed.
  const int ldv = static_cast<int>(a.Dv) + kPad16;
  load_tile_async(ks, S::ldk, a.k + ((b * a.T + t0) * a.H + h) * DK, row_stride_k, C, DK, valid);
  cp_async_commit();
  load_tile_async(vs, ldv, a.v + ((b * a.T + t0) * a.H + h) * a.Dv, row_stride_v, C, static_cast<int>(a.Dv), valid);
  cp_async_commit();
  const int tid = threadIdx.x;
  if (tid < C) {
    const bool ok = tid < valid;
    gam[tid] = ok ? a.g[(b * a.T + t0 + tid) * a.H + h] : 0.0f;
    bet[tid] = ok ? a.beta[(b * a.T + t0 + tid) * a.H + h] : 0.0f;
  }
  __syncthreads();
  asm volatile("cp.async.wait_group 1;\n" ::);  // K (the older group) has landed for this thread
  __syncthreads();
  if (tid == 0)
    for (int i = 1; i < C; ++i) gam[i] += gam[i - 1];  // padded tokens add g = 0
  // K K^T (tensor cores) while thread 0 scans.
  gemm_tiles<false, true, C, C, DK>(am, S::ldc32, ks, S::ldk, ks, S::ldk);
  __syncthreads();

  // A_ij = beta_i (K K^T)_ij exp(gamma_i - gamma_j) for j < i, else 0. gamma is non-increasing, so the exponent is
  // <= 0 below the diagonal and cannot overflow.
  for (int i = tid; i < C * C; i += kThreads) {
    const int r = i / C, c = i % C;
    am[r * S::ldc32 + c] = c < r ? bet[r] * am[r * S::ldc32 + c] * __expf(gam[r] - gam[c]) : 0.0f;
    tm[r * S::ldc32 + c] = 0.0f;
  }
  __syncthreads();

  // T = (I + A)^-1 by forward substitution, one column per thread (columns are independent):
  //   T_ij = delta_ij - sum_{m < i} A_im T_mj.
  // All 64 threads walk the same (i, m) sequence, so the A_im reads are float4 broadcasts; four partial sums
  // shorten the dependent chain. Rows of T not yet computed are zero and A_im = 0 for m >= i, so the
  // rounding of the m loop up to a multiple of 4 adds exact zeros.
  if (tid < C) {
    const int j = tid;
#pragma unroll
    for (int i = 0; i < C; ++i) {
      float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
      const float* arow = am + i * S::ldc32;
#pragma unroll
      for (int m = 0; m < i; m += 4) {
        const float4 av = *reinterpret_cast<const float4*>(arow + m);
        s0 += av.x * tm[m * S::ldc32 + j];
        s1 += av.y * tm[(m + 1) * S::ldc32 + j];
        s2 += av.z * tm[(m + 2) * S::ldc32 + j];
        s3 += av.w * tm[(m + 3) * S::ldc32 + j];
      }
      tm[i * S::ldc32 + j] = (i == j ? 1.0f : 0.0f) - ((s0 + s1) + (s2 + s3));
    }
  }
  __syncthreads();
  if (a.t_out) {
    float* td = a.t_out + (bh * a.NC + n) * C * C;
    for (int i = tid; i < C * C; i += kThreads) td[i] = tm[(i / C) * S::ldc32 + i % C];
  }
  for (int i = tid; i < C * C; i += kThreads) {
    const int r = i / C, c = i % C;
    const float t = tm[r * S::ldc32 + c];
    tw[r * S::ldc16 + c] = __float2bfloat16(t * bet[c] * __expf(gam[c]));
    tu[r * S::ldc16 + c] = __float2bfloat16(t * bet[c]);
  }
  __syncthreads();

  // W = Tw K, in 64-column blocks through the fp32 staging tile.
  bf16* wout = a.w + (bh * a.NC + n) * C * DK;
  for (int c0 = 0; c0 < DK; c0 += 64) {
    gemm_tiles<false, false, C, 64, C>(st, S::ldst, tw, S::ldc16, ks + c0, S::ldk);
    __syncthreads();
    store_tile_bf16(wout + c0, DK, st, S::ldst, C, 64);
    __syncthreads();
  }
  // U = Tu V, in 64-column blocks.
  cp_async_wait_all();
  __syncthreads();
  bf16* uout = a.u + (bh * a.NC + n) * C * a.Dv;
  for (int c0 = 0; c0 < a.Dv; c0 += 64) {
    gemm_tiles<false, false, C, 64, C>(st, S::ldst, tu, S::ldc16, vs + c0, ldv);
    __syncthreads();
    store_tile_bf16(uout + c0, a.Dv, st, S::ldst, C, 64);
    __syncthreads();
  }
  if (tid < C) a.gam[bh * a.NC * C + n * C + tid] = gam[tid];
}

// ---- states: the serial walk over chunks ---------------------------------------------------------------------
// One launch serves both the N blocks (rows of S = value channels, U given, start given or zero) and, in the
// context-parallel pre-pass, the M blocks (rows = Dk, U = 0, start = identity rows): blockIdx.x >= n_blocks
// selects M. The next chunk's W, K, U and gamma are prefetched with cp.async into the other half of a double
// buffer while the current chunk computes; each warp finishes its own output tiles (v_new and the decay, the
// bf16 copy of S) right after its tensor-core products, so a chunk costs two block-wide barriers.
enum class Init : int { kZero = 0, kGiven = 2 };

struct StateArgs {
  const bf16* k;        // [B, T, H, DK]
  const bf16* w;        // [BH, NC, C, DK]
  const bf16* u;        // [BH, NC, C, Dv]
  const float* gam;     // [BH, NC * C]
  const float* init;    // Init::kGiven: [BH, P, Dv, DK] (init_seg_stride = Dv*DK) or [BH, Dv, DK] (stride 0)
  float* out;           // end state of N blocks: [BH, P, Dv, DK] (out_seg_stride = Dv*DK) or [BH, Dv, DK] (0)
  float* m_out;         // end state of M blocks: [BH, P, DK, DK], or null (no M blocks)
  bf16* h;              // [BH, NC, Dv, DK] state before each chunk, or null
  bf16* vnew;           // [BH, NC, C, Dv] or null
  int64_t T, H, NC, Dv, chunks_per_seg;
  int64_t init_seg_stride, out_seg_stride;
  int n_blocks;         // blocks along x that are N blocks (Dv / BV); the rest are M blocks
  Init init_kind;
  bool out_last_segment_only;  // the main pass writes only the final state
};

template <int DK, int BV>
struct StateSmem {
  static constexpr int ldk = DK + kPad16, lds = DK + kPad32, ldv32 = BV + kPad32, ldv16 = BV + kPad16;
  static constexpr size_t s_off = 0;                                      // fp32 [BV][lds]    S rows
  static constexpr size_t sb_off = s_off + sizeof(float) * BV * lds;      // bf16 [BV][ldk]    S in bf16
  static constexpr size_t w_off = sb_off + sizeof(bf16) * BV * ldk;       // bf16 [2][C][ldk]  W (double buffer)
  static constexpr size_t k_off = w_off + sizeof(bf16) * 2 * C * ldk;     // bf16 [2][C][ldk]  K
  static constexpr size_t u_off = k_off + sizeof(bf16) * 2 * C * ldk;     // bf16 [2][C][ldv16] U columns
  static constexpr size_t p_off = u_off + sizeof(bf16) * 2 * C * ldv16;   // fp32 [C][ldv32]   v_new
  static constexpr size_t vb_off = p_off + sizeof(float) * C * ldv32;     // bf16 [C][ldv16]   decayed v_new
  static constexpr size_t g_off = vb_off + sizeof(bf16) * C * ldv16;      // fp32 [2][C]       gamma
  static constexpr size_t bytes = g_off + sizeof(float) * 2 * C;
};

template <int DK, int BV>
__global__ void __launch_bounds__(kThreads) state_kernel(StateArgs a) {
  using S = StateSmem<DK, BV>;
  extern __shared__ __align__(128) unsigned char smem[];
  float* ss = reinterpret_cast<float*>(smem + S::s_off);
  bf16* sb = reinterpret_cast<bf16*>(smem + S::sb_off);
  bf16* ws = reinterpret_cast<bf16*>(smem + S::w_off);
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  bf16* us = reinterpret_cast<bf16*>(smem + S::u_off);
  float* ps = reinterpret_cast<float*>(smem + S::p_off);
  bf16* vb = reinterpret_cast<bf16*>(smem + S::vb_off);
  float* gam = reinterpret_cast<float*>(smem + S::g_off);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const auto [m_block, r0, seg, P, bh, b, h, n_begin, n_end] = walk_block(a, BV);
  const bf16* u = m_block ? nullptr : a.u;
  bf16* hout = m_block ? nullptr : a.h;
  bf16* vnout = m_block ? nullptr : a.vnew;

  // Initial rows of S: identity rows for M blocks, the given start or zeros for N blocks.
  const float* init = (!m_block && a.init_kind == Init::kGiven)
                          ? a.init + bh * (a.init_seg_stride ? a.init_seg_stride * P : a.Dv * DK) +
                                seg * a.init_seg_stride
                          : nullptr;
  for (int i = tid; i < BV * DK; i += kThreads) {
    const int r = i / DK, c = i % DK;
    const float x = m_block ? ((r0 + r == c) ? 1.0f : 0.0f) : (init ? init[(r0 + r) * DK + c] : 0.0f);
    ss[r * S::lds + c] = x;
    sb[r * S::ldk + c] = __float2bfloat16(x);
  }

  auto prefetch = [&](int64_t n, int buf) {
    const int64_t t0 = n * C;
    const int valid = static_cast<int>(a.T - t0 < C ? a.T - t0 : int64_t(C));
    load_tile_async(ws + buf * C * S::ldk, S::ldk, a.w + (bh * a.NC + n) * C * DK, DK, C, DK, C);
    load_tile_async(ks + buf * C * S::ldk, S::ldk, a.k + ((b * a.T + t0) * a.H + h) * DK, a.H * DK, C, DK, valid);
    if (u) load_tile_async(us + buf * C * S::ldv16, S::ldv16, u + (bh * a.NC + n) * C * a.Dv + r0, a.Dv, C, BV, C);
    if (tid < C / 4) cp_async16(gam + buf * C + tid * 4, a.gam + bh * a.NC * C + n * C + tid * 4, true);
    cp_async_commit();
  };
  if (n_begin < n_end) prefetch(n_begin, 0);

  for (int64_t n = n_begin; n < n_end; ++n) {
    const int buf = int(n - n_begin) & 1;
    cp_async_wait_all();
    __syncthreads();  // chunk n landed for every thread; the previous chunk's reads of the other buffer are done
    if (n + 1 < n_end) prefetch(n + 1, buf ^ 1);
    const bf16* wc = ws + buf * C * S::ldk;
    const bf16* kc = ks + buf * C * S::ldk;
    const bf16* uc = us + buf * C * S::ldv16;
    const float* gc = gam + buf * C;
    const float gC = gc[C - 1];

    if (hout) {  // the state entering chunk n, for the output pass
      bf16* hd = hout + ((bh * a.NC + n) * a.Dv + r0) * DK;
      for (int i = tid; i < BV * DK / 8; i += kThreads) {
        const int r = i / (DK / 8), c = (i % (DK / 8)) * 8;
        *reinterpret_cast<uint4*>(hd + r * DK + c) = *reinterpret_cast<const uint4*>(sb + r * S::ldk + c);
      }
    }
    // v_new = U - W S^T ([C x BV], reduction over DK); each warp finishes its own tiles: v_new (fp32, for the
    // output pass) and the decayed bf16 copy that feeds the state update.
    constexpr int tiles_v = BV / 16, per_warp1 = (C / 16) * tiles_v / kWarps;
    static_assert(per_warp1 * kWarps == (C / 16) * tiles_v, "v_new tiles must split evenly over the warps");
    {
      FragC acc[per_warp1];
#pragma unroll
      for (int t = 0; t < per_warp1; ++t) wmma::fill_fragment(acc[t], 0.0f);
#pragma unroll 4
      for (int k0 = 0; k0 < DK; k0 += 16) {
#pragma unroll
        for (int t = 0; t < per_warp1; ++t) {
          const int tile = warp + t * kWarps, m0 = (tile / tiles_v) * 16, n0 = (tile % tiles_v) * 16;
          FragA fa;
          FragBT fb;
          wmma::load_matrix_sync(fa, wc + m0 * S::ldk + k0, S::ldk);
          wmma::load_matrix_sync(fb, sb + n0 * S::ldk + k0, S::ldk);
          wmma::mma_sync(acc[t], fa, fb, acc[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < per_warp1; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_v) * 16, n0 = (tile % tiles_v) * 16;
        wmma::store_matrix_sync(ps + m0 * S::ldv32 + n0, acc[t], S::ldv32, wmma::mem_row_major);
        __syncwarp();
        const int r = m0 + (lane >> 1), c = n0 + (lane & 1) * 8;
        const float dec = __expf(gC - gc[r]);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float vn = (u ? __bfloat162float(uc[r * S::ldv16 + c + j]) : 0.0f) - ps[r * S::ldv32 + c + j];
          ps[r * S::ldv32 + c + j] = vn;
          vb[r * S::ldv16 + c + j] = __float2bfloat16(vn * dec);
        }
      }
    }
    __syncthreads();
    if (vnout) store_tile_bf16(vnout + (bh * a.NC + n) * C * a.Dv + r0, a.Dv, ps, S::ldv32, C, BV);

    // S <- e^gamma_C S + vb^T K; each warp then writes the bf16 copy of its own tiles.
    const float decay = __expf(gC);
    constexpr int tiles_n = DK / 16, per_warp2 = (BV / 16) * tiles_n / kWarps;
    static_assert(per_warp2 * kWarps == (BV / 16) * tiles_n, "state tiles must split evenly over the warps");
    {
      FragC acc[per_warp2];
#pragma unroll
      for (int t = 0; t < per_warp2; ++t) {
        const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
        wmma::load_matrix_sync(acc[t], ss + m0 * S::lds + n0, S::lds, wmma::mem_row_major);
#pragma unroll
        for (int e = 0; e < acc[t].num_elements; ++e) acc[t].x[e] *= decay;
      }
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 16) {
#pragma unroll
        for (int t = 0; t < per_warp2; ++t) {
          const int tile = warp + t * kWarps, m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
          FragAT fa;
          FragB fb;
          wmma::load_matrix_sync(fa, vb + k0 * S::ldv16 + m0, S::ldv16);
          wmma::load_matrix_sync(fb, kc + k0 * S::ldk + n0, S::ldk);
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
    // The next iteration's first barrier orders these writes before their readers.
  }
  __syncthreads();

  float* out = nullptr;
  if (m_block) {
    if (a.m_out) out = a.m_out + (bh * P + seg) * DK * DK + r0 * DK;
  } else if (a.out && (!a.out_last_segment_only || seg == P - 1)) {
    out = a.out + bh * (a.out_seg_stride ? a.out_seg_stride * P : a.Dv * DK) + seg * a.out_seg_stride + r0 * DK;
  }
  if (out)
    for (int i = tid; i < BV * DK; i += kThreads) {
      const int r = i / DK, c = i % DK;
      out[r * DK + c] = ss[r * S::lds + c];
    }
}

// ---- states, register-resident: the same walk with S kept in tensor-core accumulators ---------------------------
// Same arguments and results as state_kernel (N and M blocks, segments, h / v_new / end-state outputs). Each warp
// owns 16 whole rows of S (16 value channels x all DK columns) as DK/16 WMMA accumulators that stay in registers
// for the whole walk. Both products of a chunk then only need the warp's own data besides the shared W, K, U:
//   v_new[:, rows] = U[:, rows] - W S[rows, :]^T      (the warp's bf16 copy of its rows of S)
//   S[rows, :]     = e^gamma_C S[rows, :] + vb[:, rows]^T K
// so the only block-wide barrier per chunk is the hand-over of the double-buffered W, K, U, gamma (cp.async; the
// next chunk's tiles land while this one computes). The state goes out of registers only as the bf16 copy (its
// warp's rows in shared memory, the h the output pass reads, written straight to global) and, at the end, the fp32
// end state. A warp's 16 x 16 fp32 scratch turns accumulator tiles into known element positions (WMMA fragments
// are opaque).
constexpr int kRegRows = 64;                       // rows of S per block (BV): 4 warps x 16 rows
constexpr int kRegThreads = (kRegRows / 16) * 32;  // 128

template <int DK>
struct RegStateSmem {
  static constexpr int BV = kRegRows;
  static constexpr int ldk = DK + kPad16, ldv16 = BV + kPad16, ldx = 16 + kPad32;
  static constexpr size_t w_off = 0;                                      // bf16 [2][C][ldk]  W (double buffer)
  static constexpr size_t k_off = w_off + sizeof(bf16) * 2 * C * ldk;     // bf16 [2][C][ldk]  K
  static constexpr size_t u_off = k_off + sizeof(bf16) * 2 * C * ldk;     // bf16 [2][C][ldv16] U columns
  static constexpr size_t sb_off = u_off + sizeof(bf16) * 2 * C * ldv16;  // bf16 [BV][ldk]    S in bf16
  static constexpr size_t vb_off = sb_off + sizeof(bf16) * BV * ldk;      // bf16 [C][ldv16]   decayed v_new
  static constexpr size_t x_off = vb_off + sizeof(bf16) * C * ldv16;      // fp32 [warps][16][ldx] scratch
  static constexpr size_t g_off = x_off + sizeof(float) * (BV / 16) * 16 * ldx;  // fp32 [2][C] gamma
  static constexpr size_t bytes = g_off + sizeof(float) * 2 * C;
  static_assert(sb_off % 32 == 0 && vb_off % 32 == 0 && x_off % 32 == 0 && g_off % 16 == 0, "WMMA alignment");
  static_assert(bytes <= 227 * 1024, "over the H100/H200 shared memory per block");
};

template <int DK>
__global__ void __launch_bounds__(kRegThreads) state_reg_kernel(StateArgs a) {
  using S = RegStateSmem<DK>;
  constexpr int BV = S::BV, NT = DK / 16;  // NT accumulator tiles of S per warp
  constexpr int VT = DK >= 256 ? 2 : C / 16;  // v_new accumulators per pass
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ws = reinterpret_cast<bf16*>(smem + S::w_off);
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  bf16* us = reinterpret_cast<bf16*>(smem + S::u_off);
  bf16* sb = reinterpret_cast<bf16*>(smem + S::sb_off);
  bf16* vb = reinterpret_cast<bf16*>(smem + S::vb_off);
  float* gam = reinterpret_cast<float*>(smem + S::g_off);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  float* xs = reinterpret_cast<float*>(smem + S::x_off) + warp * 16 * S::ldx;  // this warp's scratch
  const int j0 = warp * 16;                   // the warp's rows of S within the block
  const int lr = lane >> 1, lc = (lane & 1) * 8;  // a lane's 8 elements of a 16 x 16 tile: row lr, columns lc..+7
  const auto [m_block, r0, seg, P, bh, b, h, n_begin, n_end] = walk_block(a, BV);
  // Per-block bases (few long-lived 64-bit values: the state takes Dk/2 registers of each thread).
  const bf16* wg = a.w + bh * a.NC * C * DK;                         // + n C DK
  const bf16* kg = a.k + (b * a.T * a.H + h) * DK;                   // + t H DK
  const bf16* ug = m_block ? nullptr : a.u + bh * a.NC * C * a.Dv + r0;  // + n C Dv
  const float* gg = a.gam + bh * a.NC * C;                           // + n C
  // h and v_new of this lane's 8 elements (row lr / r of a tile, columns lc..lc+7 of the warp's rows).
  bf16* hout = m_block || !a.h ? nullptr : a.h + (bh * a.NC * a.Dv + r0 + j0 + lr) * DK + lc;  // + n Dv DK + c0
  bf16* vnout = m_block || !a.vnew ? nullptr : a.vnew + bh * a.NC * C * a.Dv + r0 + j0 + lc;   // + (n C + r) Dv
  const bf16* u = ug;

  auto prefetch = [&](int64_t n, int buf) {
    const int64_t t0 = n * C;
    const int valid = static_cast<int>(a.T - t0 < C ? a.T - t0 : int64_t(C));
    load_tile_async(ws + buf * C * S::ldk, S::ldk, wg + n * C * DK, DK, C, DK, C);
    load_tile_async(ks + buf * C * S::ldk, S::ldk, kg + t0 * a.H * DK, a.H * DK, C, DK, valid);
    if (ug) load_tile_async(us + buf * C * S::ldv16, S::ldv16, ug + n * C * a.Dv, a.Dv, C, BV, C);
    if (tid < C / 4) cp_async16(gam + buf * C + tid * 4, gg + n * C + tid * 4, true);
    cp_async_commit();
  };
  if (n_begin < n_end) prefetch(n_begin, 0);

  // The warp's bf16 rows of S (for W S^T) and, where asked, h for chunk n, from the scratch tile of columns c0.
  auto publish = [&](int c0, int64_t n) {
    __syncwarp();
    alignas(16) bf16 o8[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o8[j] = __float2bfloat16(xs[lr * S::ldx + lc + j]);
    *reinterpret_cast<uint4*>(sb + (j0 + lr) * S::ldk + c0 + lc) = *reinterpret_cast<const uint4*>(o8);
    if (hout && n >= 0)
      *reinterpret_cast<uint4*>(hout + n * a.Dv * DK + c0) = *reinterpret_cast<const uint4*>(o8);
    __syncwarp();  // the scratch is free for the next tile
  };

  // Initial rows of S: identity rows for M blocks, the given start or zeros for N blocks.
  const float* init = (!m_block && a.init_kind == Init::kGiven)
                          ? a.init + bh * (a.init_seg_stride ? a.init_seg_stride * P : a.Dv * DK) +
                                seg * a.init_seg_stride
                          : nullptr;
  FragC st[NT];  // S[r0 + j0 .. +16, 16 i .. 16 i + 16] in tile i
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    for (int e = lane; e < 256; e += 32) {
      const int r = e / 16, c = e % 16;
      const int64_t row = r0 + j0 + r, col = 16 * i + c;
      xs[r * S::ldx + c] = m_block ? (row == col ? 1.0f : 0.0f) : (init ? init[row * DK + col] : 0.0f);
    }
    __syncwarp();
    wmma::load_matrix_sync(st[i], xs, S::ldx, wmma::mem_row_major);
    publish(16 * i, n_begin < n_end ? n_begin : -1);
  }

  for (int64_t n = n_begin; n < n_end; ++n) {
    const int buf = int(n - n_begin) & 1;
    cp_async_wait_all();
    __syncthreads();  // chunk n landed for every thread; every warp is done with the other buffer (chunk n - 1)
    if (n + 1 < n_end) prefetch(n + 1, buf ^ 1);
    const bf16* wc = ws + buf * C * S::ldk;
    const bf16* kc = ks + buf * C * S::ldk;
    const bf16* uc = us + buf * C * S::ldv16;
    const float* gc = gam + buf * C;
    const float gC = gc[C - 1];

    // v_new[:, rows] = U - W S[rows]^T: VT independent accumulators per pass, the S^T fragment shared by them
    // (Dk 256 runs two passes of two: four accumulators next to the state's sixteen spill registers).
#pragma unroll
    for (int t0 = 0; t0 < C / 16; t0 += VT) {
      FragC acc[VT];
#pragma unroll
      for (int t = 0; t < VT; ++t) wmma::fill_fragment(acc[t], 0.0f);
#pragma unroll(DK >= 256 ? 1 : 4)
      for (int k0 = 0; k0 < DK; k0 += 16) {
        FragBT fb;
        wmma::load_matrix_sync(fb, sb + j0 * S::ldk + k0, S::ldk);
#pragma unroll
        for (int t = 0; t < VT; ++t) {
          FragA fa;
          wmma::load_matrix_sync(fa, wc + (t0 + t) * 16 * S::ldk + k0, S::ldk);
          wmma::mma_sync(acc[t], fa, fb, acc[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < VT; ++t) {
        wmma::store_matrix_sync(xs, acc[t], S::ldx, wmma::mem_row_major);
        __syncwarp();
        const int r = (t0 + t) * 16 + lr;
        const float dec = __expf(gC - gc[r]);
        alignas(16) bf16 v8[8];
        alignas(16) bf16 d8[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float vn = (u ? __bfloat162float(uc[r * S::ldv16 + j0 + lc + j]) : 0.0f) - xs[lr * S::ldx + lc + j];
          v8[j] = __float2bfloat16(vn);
          d8[j] = __float2bfloat16(vn * dec);
        }
        *reinterpret_cast<uint4*>(vb + r * S::ldv16 + j0 + lc) = *reinterpret_cast<const uint4*>(d8);
        if (vnout) *reinterpret_cast<uint4*>(vnout + (n * C + r) * a.Dv) = *reinterpret_cast<const uint4*>(v8);
        __syncwarp();
      }
    }

    // S[rows] <- e^gamma_C S[rows] + vb[:, rows]^T K, in the registers; then the bf16 copy (and h of chunk n + 1).
    const float decay = __expf(gC);
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
      for (int e = 0; e < st[i].num_elements; ++e) st[i].x[e] *= decay;
    // vb[:, rows]^T loaded once (C/16 fragments), then each state tile's short chain of C/16 products: the tiles
    // are independent, and only one K fragment per product is live (the state's Dk/2 registers leave little room).
    FragAT fa[C / 16];
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) wmma::load_matrix_sync(fa[kk], vb + kk * 16 * S::ldv16 + j0, S::ldv16);
#pragma unroll
    for (int i = 0; i < NT; ++i) {
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        FragB fb;
        wmma::load_matrix_sync(fb, kc + kk * 16 * S::ldk + 16 * i, S::ldk);
        wmma::mma_sync(st[i], fa[kk], fb, st[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      wmma::store_matrix_sync(xs, st[i], S::ldx, wmma::mem_row_major);
      publish(16 * i, n + 1 < n_end ? n + 1 : -1);
    }
  }

  float* out = nullptr;
  if (m_block) {
    if (a.m_out) out = a.m_out + (bh * P + seg) * DK * DK + r0 * DK;
  } else if (a.out && (!a.out_last_segment_only || seg == P - 1)) {
    out = a.out + bh * (a.out_seg_stride ? a.out_seg_stride * P : a.Dv * DK) + seg * a.out_seg_stride + r0 * DK;
  }
  if (out)
#pragma unroll
    for (int i = 0; i < NT; ++i) wmma::store_matrix_sync(out + j0 * DK + 16 * i, st[i], DK, wmma::mem_row_major);
}

// ---- fix-up scan over segments: start[s+1] = start[s] M_s + N_s -----------------------------------------------
// One block per (head, 32 rows of S). Thread = (column c, row phase): each M_s element it loads is reused for
// all of its rows, so M_s is read once per block and segment (coalesced along c).
constexpr int kScanRows = 32;

template <int DK>
__global__ void __launch_bounds__(kThreads) scan_kernel(const float* __restrict__ init,  // [BH, Dv, DK] or null
                                                        const float* __restrict__ m,     // [BH, P, DK, DK]
                                                        const float* __restrict__ nn,    // [BH, P, Dv, DK]
                                                        float* __restrict__ starts,      // [BH, P, Dv, DK]
                                                        int64_t Dv, int P) {
  constexpr int kPhases = kThreads / DK;          // threads per column
  constexpr int kPer = kScanRows / kPhases;       // rows per thread
  __shared__ float cur[kScanRows][DK];
  const int64_t r0 = int64_t(blockIdx.x) * kScanRows, bh = blockIdx.y;
  const int tid = threadIdx.x, c = tid % DK, phase = tid / DK;
  for (int i = tid; i < kScanRows * DK; i += kThreads) {
    const int r = i / DK, cc = i % DK;
    const float x = init ? init[(bh * Dv + r0 + r) * DK + cc] : 0.0f;
    cur[r][cc] = x;
    starts[((bh * P + 0) * Dv + r0 + r) * DK + cc] = x;
  }
  __syncthreads();
  for (int s = 0; s + 1 < P; ++s) {
    const float* ms = m + (bh * P + s) * DK * DK;
    const float* ns = nn + ((bh * P + s) * Dv + r0) * DK;
    float acc[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) acc[j] = ns[(phase + j * kPhases) * DK + c];
    for (int kk = 0; kk < DK; ++kk) {
      const float mv = ms[kk * DK + c];
#pragma unroll
      for (int j = 0; j < kPer; ++j) acc[j] += cur[phase + j * kPhases][kk] * mv;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int r = phase + j * kPhases;
      cur[r][c] = acc[j];
      starts[((bh * P + s + 1) * Dv + r0 + r) * DK + c] = acc[j];
    }
    __syncthreads();
  }
}

// ---- output: O = scale (e^gamma o Q) h^T + (scale Q K^T o Gamma o causal) v_new ----------------------------------
constexpr int kOutTile = 64;

struct OutArgs {
  const bf16* q;     // [B, T, H, DK]
  const bf16* k;     // [B, T, H, DK]
  const bf16* h;     // [BH, NC, Dv, DK]
  const bf16* vnew;  // [BH, NC, C, Dv]
  const float* gam;  // [BH, NC * C]
  void* o;           // [B, T, H, Dv]
  ElemType to;
  int64_t T, H, Dv, NC;
  float scale;
};

// NB h / v_new buffers: 1 for the kernel with one value tile per block (grid.y = Dv / 64), 2 for the one that
// walks every value tile of its chunk (grid.y = 1; the next tile's h and v_new load while this one computes).
template <int DK, int NB>
struct OutSmem {
  static constexpr int ldk = DK + kPad16, ldc32 = C + kPad32, ldc16 = C + kPad16;
  static constexpr int ldo16 = kOutTile + kPad16, ldo32 = kOutTile + kPad32;
  static constexpr size_t q_off = 0;                                          // bf16 [C][ldk]
  static constexpr size_t k_off = q_off + sizeof(bf16) * C * ldk;             // bf16 [C][ldk]
  static constexpr size_t h_off = k_off + sizeof(bf16) * C * ldk;             // bf16 [NB][64][ldk]  h rows
  static constexpr size_t v_off = h_off + sizeof(bf16) * NB * kOutTile * ldk; // bf16 [NB][C][ldo16] v_new cols
  static constexpr size_t p_off = v_off + sizeof(bf16) * NB * C * ldo16;      // fp32 [C][ldc32]  Q K^T
  static constexpr size_t pb_off = p_off + sizeof(float) * C * ldc32;         // bf16 [C][ldc16]  masked, decayed
  static constexpr size_t o_off = pb_off + sizeof(bf16) * C * ldc16;          // fp32 [C][ldo32]  output tile
  static constexpr size_t g_off = o_off + sizeof(float) * C * ldo32;          // fp32 [C]
  static constexpr size_t bytes = g_off + sizeof(float) * C;
  static_assert(bytes <= 227 * 1024, "over the H100/H200 shared memory per block");
};

// HYLO_GDN_OUTPUT_KERNEL=tiles: one block per (chunk, 64-column value tile), each loading Q and K and forming
// Q K^T again (the earlier form); default: one block per chunk walking all value tiles, Q, K and the masked
// Q K^T formed once. Same arithmetic per output element.
bool output_per_tile() {
  const char* e = std::getenv("HYLO_GDN_OUTPUT_KERNEL");
  return e != nullptr && std::string(e) == "tiles";
}

template <int DK, int NB>
__global__ void __launch_bounds__(kThreads) output_kernel(OutArgs a) {
  using S = OutSmem<DK, NB>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem + S::q_off);
  bf16* ks = reinterpret_cast<bf16*>(smem + S::k_off);
  bf16* hs0 = reinterpret_cast<bf16*>(smem + S::h_off);
  bf16* vs0 = reinterpret_cast<bf16*>(smem + S::v_off);
  float* ps = reinterpret_cast<float*>(smem + S::p_off);
  bf16* pb = reinterpret_cast<bf16*>(smem + S::pb_off);
  float* os = reinterpret_cast<float*>(smem + S::o_off);
  float* gam = reinterpret_cast<float*>(smem + S::g_off);

  const int tid = threadIdx.x;
  const int64_t n = blockIdx.x, bh = blockIdx.z;
  const int64_t b = bh / a.H, h = bh % a.H, t0 = n * C;
  // Value tiles [c_begin, c_end) of this block: one (NB = 1) or all (NB = 2).
  const int64_t c_begin = NB == 1 ? int64_t(blockIdx.y) * kOutTile : 0;
  const int64_t c_end = NB == 1 ? c_begin + kOutTile : a.Dv;
  const int valid = static_cast<int>((a.T - t0 < C ? a.T - t0 : int64_t(C)));
  auto load_hv = [&](int64_t c0, int buf) {  // h rows and v_new columns of the value tile at c0
    load_tile_async(hs0 + buf * kOutTile * S::ldk, S::ldk, a.h + ((bh * a.NC + n) * a.Dv + c0) * DK, DK, kOutTile,
                    DK, kOutTile);
    load_tile_async(vs0 + buf * C * S::ldo16, S::ldo16, a.vnew + (bh * a.NC + n) * C * a.Dv + c0, a.Dv, C,
                    kOutTile, C);
  };
  // Q, K, gamma and the first tile's h and v_new in flight at once (cp.async), then one wait.
  load_tile_async(qs, S::ldk, a.q + ((b * a.T + t0) * a.H + h) * DK, a.H * DK, C, DK, valid);
  load_tile_async(ks, S::ldk, a.k + ((b * a.T + t0) * a.H + h) * DK, a.H * DK, C, DK, valid);
  load_hv(c_begin, 0);
  if (tid < C / 4) cp_async16(gam + tid * 4, a.gam + bh * a.NC * C + n * C + tid * 4, true);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  // P = scale (Q K^T o Gamma o causal), once per chunk.
  gemm_tiles<false, true, C, C, DK>(ps, S::ldc32, qs, S::ldk, ks, S::ldk);
  __syncthreads();
  for (int i = tid; i < C * C; i += kThreads) {
    const int r = i / C, c = i % C;
    const float p = c <= r ? ps[r * S::ldc32 + c] * __expf(gam[r] - gam[c]) * a.scale : 0.0f;
    pb[r * S::ldc16 + c] = __float2bfloat16(p);
  }
  // (pb's writes are ordered before their readers by the barriers of the tile loop.)

  const int warp = tid >> 5;
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kOutTile) {
    const int buf = NB == 1 ? 0 : int((c0 - c_begin) / kOutTile) & 1;
    if (c0 > c_begin) {  // tile c0 was prefetched by the previous iteration: wait for it (NB = 2 only)
      cp_async_wait_all();
      __syncthreads();
    }
    if (NB == 2 && c0 + kOutTile < c_end) {  // the next tile's h and v_new load while this one computes
      load_hv(c0 + kOutTile, buf ^ 1);
      cp_async_commit();
    }
    const bf16* hs = hs0 + buf * kOutTile * S::ldk;
    const bf16* vs = vs0 + buf * C * S::ldo16;
    gemm_tiles<false, true, C, kOutTile, DK>(os, S::ldo32, qs, S::ldk, hs, S::ldk);  // Q h^T
    __syncthreads();
    for (int i = tid; i < C * kOutTile; i += kThreads) {
      const int r = i / kOutTile, c = i % kOutTile;
      os[r * S::ldo32 + c] *= __expf(gam[r]) * a.scale;
    }
    __syncthreads();
    // O += P v_new, accumulating onto the inter-chunk part.
    for (int tile = warp; tile < (C / 16) * (kOutTile / 16); tile += kWarps) {
      const int m0 = (tile / (kOutTile / 16)) * 16, n0 = (tile % (kOutTile / 16)) * 16;
      FragC acc;
      wmma::load_matrix_sync(acc, os + m0 * S::ldo32 + n0, S::ldo32, wmma::mem_row_major);
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 16) {
        FragA fa;
        FragB fb;
        wmma::load_matrix_sync(fa, pb + m0 * S::ldc16 + k0, S::ldc16);
        wmma::load_matrix_sync(fb, vs + k0 * S::ldo16 + n0, S::ldo16);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(os + m0 * S::ldo32 + n0, acc, S::ldo32, wmma::mem_row_major);
    }
    __syncthreads();
    for (int i = tid; i < valid * kOutTile; i += kThreads) {
      const int r = i / kOutTile, c = i % kOutTile;
      store_from_float(a.o, ((b * a.T + t0 + r) * a.H + h) * a.Dv + c0 + c, a.to, os[r * S::ldo32 + c]);
    }
    // The next tile's wait-and-barrier (top of the loop) orders these reads of os before its Q h^T overwrites it.
  }
}

template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess) throw Error(std::string("gated_delta_chunk_cuda: shared memory ") + std::to_string(bytes) +
                                    " bytes refused: " + cudaGetErrorString(e));
}

// Rows of S per state block: 64 where the shared memory allows it, else 32 (Dk 256).
template <int DK> constexpr int state_rows() { return DK <= 128 ? 64 : 32; }

// HYLO_GDN_STAGE_TIMES=1: print each stage's time to stderr (events between the launches; diagnosis only).
bool stage_times() {
  static const bool on = std::getenv("HYLO_GDN_STAGE_TIMES") != nullptr;
  return on;
}

// Which state walk runs: the register-resident one (state_reg_kernel) or the one that keeps S in shared memory
// (state_kernel, 8 warps, S loaded and stored as fp32 every chunk); both compute the same recursion. Measured on the
// H200 at 64K tokens (docs/benchmarks.md, "Tried: the state walk with the state in registers"): registers win at
// Dk 128 (0.60 -> 0.48 ms with segments, 6.26 -> 5.02 ms without) and lose at Dk 256, where the kernel needs 255
// registers and spills (5.83 -> 9.05 ms), so the default is registers up to Dk 128. HYLO_GDN_STATE_KERNEL=shared or
// =registers forces one (read at every call, so a test can switch it).
template <int DK>
bool register_state_walk() {
  const char* e = std::getenv("HYLO_GDN_STATE_KERNEL");
  if (e != nullptr && std::string(e) == "shared") return false;
  if (e != nullptr && std::string(e) == "registers") return true;
  return DK <= 128;
}

struct StatesAndSegments {
  ChunkStates s;
  int segments;  // P, for the stage-time line
};

// prep, the context-parallel pre-pass and scan, and the state walk: everything but the output pass. ev (stage
// timing, or null) gets events after prep, after the pre-pass and after the states.
template <int DK>
StatesAndSegments states(const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
                         const at::Tensor& init, int segments, bool keep_t, cudaEvent_t* ev) {
  constexpr int BV = state_rows<DK>();
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2), Dv = v.size(3), BH = B * H;
  const int64_t NC = (T + C - 1) / C;
  const auto f32 = k.options().dtype(at::kFloat), b16 = k.options().dtype(at::kBFloat16);
  const cudaStream_t stream = current_stream();

  at::Tensor w = at::empty({BH, NC, C, DK}, b16);     // [BH, NC, C, DK]
  at::Tensor u = at::empty({BH, NC, C, Dv}, b16);     // [BH, NC, C, Dv]
  at::Tensor gam = at::empty({BH, NC * C}, f32);      // [BH, NC*C]
  at::Tensor hs = at::empty({BH, NC, Dv, DK}, b16);   // [BH, NC, Dv, DK]
  at::Tensor vnew = at::empty({BH, NC, C, Dv}, b16);  // [BH, NC, C, Dv]
  at::Tensor tm = keep_t ? at::empty({BH, NC, C, C}, f32) : at::Tensor();  // [BH, NC, C, C]
  at::Tensor final_state = empty_output({B, H, Dv, DK}, f32);
  {
    set_smem(prep_kernel<DK>, PrepSmem<DK>::bytes(512));
    PrepArgs pa{reinterpret_cast<const bf16*>(k.data_ptr()), reinterpret_cast<const bf16*>(v.data_ptr()),
                g.data_ptr<float>(), beta.data_ptr<float>(), reinterpret_cast<bf16*>(w.data_ptr()),
                reinterpret_cast<bf16*>(u.data_ptr()), gam.data_ptr<float>(), T, H, Dv, NC,
                keep_t ? tm.data_ptr<float>() : nullptr};
    prep_kernel<DK><<<dim3(unsigned(NC), unsigned(BH)), kThreads, PrepSmem<DK>::bytes(Dv), stream>>>(pa);
    check_launch("gated_delta_chunk_cuda prep");
  }
  if (ev) cudaEventRecord(ev[1], stream);

  const bool reg = register_state_walk<DK>();
  const int64_t bv = reg ? kRegRows : BV;  // rows of S per state block
  const int P = choose_segments(NC, BH * (Dv / bv), segments);
  const int64_t cps = (NC + P - 1) / P;

  if (reg)
    set_smem(state_reg_kernel<DK>, RegStateSmem<DK>::bytes);
  else
    set_smem(state_kernel<DK, BV>, StateSmem<DK, BV>::bytes);
  auto walk = [&](const StateArgs& sa, int blocks_x) {  // one launch of the chosen state walk
    const dim3 grid{unsigned(blocks_x), unsigned(P), unsigned(BH)};
    if (reg)
      state_reg_kernel<DK><<<grid, kRegThreads, RegStateSmem<DK>::bytes, stream>>>(sa);
    else
      state_kernel<DK, BV><<<grid, kThreads, StateSmem<DK, BV>::bytes, stream>>>(sa);
  };
  const bf16* kp = reinterpret_cast<const bf16*>(k.data_ptr());
  const bf16* wp = reinterpret_cast<const bf16*>(w.data_ptr());
  const bf16* up = reinterpret_cast<const bf16*>(u.data_ptr());
  at::Tensor starts;  // [BH, P, Dv, DK] true start state of each segment
  const int n_blocks = static_cast<int>(Dv / bv), m_blocks = static_cast<int>(DK / bv);
  if (P > 1) {
    at::Tensor nn = at::empty({BH, P, Dv, DK}, f32);  // [BH, P, Dv, DK] end state from a zero start
    at::Tensor mm = at::empty({BH, P, DK, DK}, f32);  // [BH, P, DK, DK] transfer matrix
    StateArgs pre{kp, wp, up, gam.data_ptr<float>(), nullptr, nn.data_ptr<float>(), mm.data_ptr<float>(),
                  nullptr, nullptr, T, H, NC, Dv, cps, 0, Dv * DK, n_blocks, Init::kZero, false};
    walk(pre, n_blocks + m_blocks);
    check_launch("gated_delta_chunk_cuda segment M, N");
    starts = segment_scan(init, mm, nn);
  }
  if (ev) cudaEventRecord(ev[2], stream);
  StateArgs main{kp, wp, up, gam.data_ptr<float>(),
                 P > 1 ? starts.data_ptr<float>() : (init.defined() ? init.data_ptr<float>() : nullptr),
                 final_state.data_ptr<float>(), nullptr, reinterpret_cast<bf16*>(hs.data_ptr()),
                 reinterpret_cast<bf16*>(vnew.data_ptr()), T, H, NC, Dv, cps, P > 1 ? Dv * DK : 0, 0, n_blocks,
                 (P > 1 || init.defined()) ? Init::kGiven : Init::kZero, true};
  walk(main, n_blocks);
  check_launch("gated_delta_chunk_cuda states");
  if (ev) cudaEventRecord(ev[3], stream);
  return {{w, u, gam, hs, vnew, tm, final_state}, P};
}

template <int DK>
GatedDeltaOutput run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                     const at::Tensor& beta, double scale, const at::Tensor& init, at::ScalarType out_type,
                     int segments) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dv = v.size(3), BH = B * H;
  const cudaStream_t stream = current_stream();
  at::Tensor o = empty_output({B, T, H, Dv}, q.options().dtype(out_type));
  const bool timed = stage_times();
  cudaEvent_t ev[5];
  if (timed)
    for (auto& e : ev) cudaEventCreate(&e), cudaEventRecord(e, stream);
  const StatesAndSegments st = states<DK>(k, v, g, beta, init, segments, false, timed ? ev : nullptr);
  const int64_t NC = st.s.gam.size(1) / C;
  const bf16* kp = reinterpret_cast<const bf16*>(k.data_ptr());
  const at::Tensor &hs = st.s.h, &vnew = st.s.vnew, &gam = st.s.gam;
  const int P = st.segments;

  const bool per_tile = output_per_tile();
  if (per_tile)
    set_smem(output_kernel<DK, 1>, OutSmem<DK, 1>::bytes);
  else
    set_smem(output_kernel<DK, 2>, OutSmem<DK, 2>::bytes);
  OutArgs oa{reinterpret_cast<const bf16*>(q.data_ptr()), kp, reinterpret_cast<const bf16*>(hs.data_ptr()),
             reinterpret_cast<const bf16*>(vnew.data_ptr()), gam.data_ptr<float>(), o.data_ptr(),
             elem_type(o, "gated_delta_chunk_cuda o"), T, H, Dv, NC, static_cast<float>(scale)};
  if (per_tile)
    output_kernel<DK, 1><<<dim3(unsigned(NC), unsigned(Dv / kOutTile), unsigned(BH)), kThreads,
                           OutSmem<DK, 1>::bytes, stream>>>(oa);
  else
    output_kernel<DK, 2><<<dim3(unsigned(NC), 1u, unsigned(BH)), kThreads, OutSmem<DK, 2>::bytes, stream>>>(oa);
  check_launch("gated_delta_chunk_cuda output");
  if (timed) {
    cudaEventRecord(ev[4], stream);
    cudaEventSynchronize(ev[4]);
    float t[4];
    for (int i = 0; i < 4; ++i) cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]);
    std::fprintf(stderr, "gdn_stages T %ld H %ld Dk %d Dv %ld P %d walk %s: prep %.3f ms, segment M/N + scan %.3f ms, "
                 "states %.3f ms, output %.3f ms\n", long(T), long(H), DK, long(Dv), P,
                 register_state_walk<DK>() ? "reg" : "shared", t[0], t[1], t[2], t[3]);
    for (auto& e : ev) cudaEventDestroy(e);
  }
  return {o, st.s.final_state};
}

bool float_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

}  // namespace

int choose_segments(int64_t NC, int64_t blocks, int requested) {
  // Enough blocks in the main pass to cover the GPU twice, at least 4 chunks a segment; the extra M/N pass costs
  // about (2 + DK/Dv) times the serial work, so it is used only when P >= 4.
  int P = requested;
  if (P <= 0) {
    const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    P = static_cast<int>(std::min<int64_t>(NC / 4, (2 * sms + blocks - 1) / blocks));
    if (P < 4) P = 1;
  }
  P = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(P, NC)));
  const int64_t cps = (NC + P - 1) / P;
  return static_cast<int>((NC + cps - 1) / cps);
}

at::Tensor segment_scan(const at::Tensor& init, const at::Tensor& m, const at::Tensor& nn) {
  const int64_t BH = nn.size(0), P = nn.size(1), Dv = nn.size(2), Dk = nn.size(3);
  at::Tensor starts = at::empty({BH, P, Dv, Dk}, nn.options());  // [BH, P, Dv, Dk]
  const float* ip = init.defined() ? init.data_ptr<float>() : nullptr;
  const dim3 grid(unsigned(Dv / kScanRows), unsigned(BH));
  const cudaStream_t stream = current_stream();
  switch (Dk) {
    case 64: scan_kernel<64><<<grid, kThreads, 0, stream>>>(ip, m.data_ptr<float>(), nn.data_ptr<float>(),
                                                             starts.data_ptr<float>(), Dv, int(P)); break;
    case 128: scan_kernel<128><<<grid, kThreads, 0, stream>>>(ip, m.data_ptr<float>(), nn.data_ptr<float>(),
                                                               starts.data_ptr<float>(), Dv, int(P)); break;
    case 256: scan_kernel<256><<<grid, kThreads, 0, stream>>>(ip, m.data_ptr<float>(), nn.data_ptr<float>(),
                                                               starts.data_ptr<float>(), Dv, int(P)); break;
    default: throw Error("gated_delta_chunk_cuda scan: Dk " + std::to_string(Dk) + " unsupported");
  }
  check_launch("gated_delta_chunk_cuda scan");
  return starts;
}

ChunkStates chunk_states(const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
                         const at::Tensor& init, int segments, bool keep_t) {
  switch (k.size(3)) {
    case 64: return states<64>(k, v, g, beta, init, segments, keep_t, nullptr).s;
    case 128: return states<128>(k, v, g, beta, init, segments, keep_t, nullptr).s;
    case 256: return states<256>(k, v, g, beta, init, segments, keep_t, nullptr).s;
    default: throw Error("gated_delta_chunk_cuda: Dk " + std::to_string(k.size(3)) + " unsupported (64, 128, 256)");
  }
}

}  // namespace gdn

bool gated_delta_chunk_cuda_supports(const at::Tensor& q, const at::Tensor& v, const at::Tensor& initial_state) {
  const int64_t Dk = q.size(3), Dv = v.size(3);
  return q.is_cuda() && (Dk == 64 || Dk == 128 || Dk == 256) && Dv % 64 == 0 && Dv >= 64 && Dv <= 512 &&
         gdn::float_dtype(q) && gdn::float_dtype(v) &&
         (!initial_state.defined() || initial_state.scalar_type() == at::kFloat);
}

GatedDeltaOutput gated_delta_chunk_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& g, const at::Tensor& beta, double scale,
                                        const at::Tensor& initial_state, int segments) {
  const c10::cuda::CUDAGuard guard(q.device());
  // Tensor-core operands in bf16, gates in fp32, all contiguous ([B, T, H, D] and [B, T, H]).
  const at::Tensor qb = q.to(at::kBFloat16).contiguous(), kb = k.to(at::kBFloat16).contiguous();
  const at::Tensor vb = v.to(at::kBFloat16).contiguous();
  const at::Tensor gf = g.to(at::kFloat).contiguous(), bf = beta.to(at::kFloat).contiguous();
  const at::Tensor init = initial_state.defined() ? initial_state.contiguous() : at::Tensor();  // [B,H,Dv,Dk]
  switch (q.size(3)) {
    case 64: return gdn::run<64>(qb, kb, vb, gf, bf, scale, init, v.scalar_type(), segments);
    case 128: return gdn::run<128>(qb, kb, vb, gf, bf, scale, init, v.scalar_type(), segments);
    case 256: return gdn::run<256>(qb, kb, vb, gf, bf, scale, init, v.scalar_type(), segments);
    default: throw Error("gated_delta_chunk_cuda: Dk " + std::to_string(q.size(3)) + " unsupported (64, 128, 256)");
  }
}

}  // namespace hylo::kernels
