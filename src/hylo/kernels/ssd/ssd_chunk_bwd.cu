// The backward of the chunked SSD scan (ssd_chunk.cu), same chunks of kChunk tokens, fp32 arithmetic throughout.
// Per (batch, head), chunk c with tokens i, j, s, k in [0, len), dA = dt A, acs_i = sum_{k<=i} dA_k, the forward
// is (ssd_chunk.cu)
//   y_i     = sum_{j<=i} L_ij (C_i . B_j) dtx_j + e^{acs_i} S_c C_i + D x_i,   L_ij = exp(sum_{j<k<=i} dA_k),
//   S_{c+1} = e^{tot} S_c + sum_s w_s dtx_s B_s^T,                             w_s = exp(sum_{k>s} dA_k),
// with dtx_j = dt_j x_j, tot = sum of the chunk's dA, S_c the state entering chunk c. Given dy and the gradient
// of the final state, with Gn = dL/dS_{c+1} (the gradient of the state leaving chunk c):
//   dS_c      = e^{tot} Gn + sum_i e^{acs_i} dy_i C_i^T                        (reverse walk over chunks)
//   d dtx_j   = sum_{i>=j} L_ij (C_i . B_j) dy_i + w_j Gn B_j          -> dx_j = dt_j d dtx_j + D dy_j
//   dB_j      = sum_{i>=j} L_ij (dy_i . dtx_j) C_i + w_j Gn^T dtx_j
//   dC_i      = sum_{j<=i} L_ij (dy_i . dtx_j) B_j + e^{acs_i} S_c^T dy_i
//   d dA_k    = sum_{i>=k, j<k} M_ij + sum_{i>=k} R_i + sum_{s<k} W_s + e^{tot} <Gn, S_c>
//               M_ij = L_ij (C_i . B_j)(dy_i . dtx_j), R_i = e^{acs_i} dy_i . S_c C_i, W_s = w_s dtx_s . Gn B_s
//   ddt_k     = x_k . d dtx_k + A d dA_k,   dA_h = sum dt_k d dA_k,   dD_h = sum x . dy
// (the four d dA terms are the derivatives through the log-decays of L, e^{acs}, w and e^{tot}; each is a direct
// sum over the index range it spans, as the forward's log-decays are, never a difference of two prefix sums).
// Launches, in order:
//   0. ssd::chunk_states (the forward's kernels 1 and 2): S_c recomputed, cheaper than keeping
//      [B H, T/64, P, N] fp32 alive between forward and backward.
//   1. readout_grad_kernel (chunks x heads): sum_i e^{acs_i} dy_i C_i^T per chunk.
//   2. reverse_pass_kernel (one thread per state element and head, serial over chunks backwards): Gn per chunk,
//      written over 1's output, and dS_0 = the initial state's gradient.
//   3. chunk_dx_kernel (chunks x heads): d dtx -> dx, x . d dtx, W_s, x . dy (for dD) and e^{tot} <Gn, S_c>.
//   4. chunk_dbdc_kernel (chunks x heads): dB and dC per head, M and R, and the d dA sum -> ddt and the chunk's
//      share of dA.
// then ATen sums: dB and dC over the heads of each group, dA and dD over batch and time. No atomics: the result
// is deterministic. SIMT fp32 on CUDA cores like the forward (a tensor-core form is future work).
#include <c10/cuda/CUDAGuard.h>

#include <string>
#include <utility>
#include <vector>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/ssd/ssd_chunk_common.cuh"
#include "hylo/kernels/ssd/ssd_cuda.h"
#include "hylo/kernels/ssd/ssd_inputs.cuh"
#include "hylo/ops/tensor_util.h"

namespace hylo::kernels {

namespace {

using ssd::ChunkPos;
using ssd::SsdArgs;
using ssd::chunk_pos;
using ssd::load_rows;
using ssd::load_steps;
using ssd::sum_row_outer_products;

constexpr int kChunk = ssd::kChunk;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDim = 128;  // P and N bound, as the forward's

// What kernels 3 and 4 read and write besides the forward's inputs. Token-indexed fp32 buffers are [B, T, H].
struct BwdArgs {
  const void* dy;            // [B, T, H, P] upstream gradient of y
  ElemType tdy;
  const float* states;       // [BH, nc, P, N] the state entering each chunk (recomputed)
  const float* g_next;       // [BH, nc, P, N] the gradient of the state leaving each chunk
  const float* chunk_decay;  // [BH, nc] e^{tot}
  void* dx;                  // [B, T, H, P] in x's dtype
  float* ddt;                // [B, T, H] x . d dtx (kernel 3), then the whole ddt (kernel 4)
  float* w_term;             // [B, T, H] W_s (kernel 3 -> 4)
  float* xdy;                // [B, T, H] x . dy (summed into dD)
  float* decay_term;         // [BH, nc] e^{tot} <Gn, S_c> (kernel 3 -> 4)
  float* dB;                 // [B, T, H, N] per head (summed over each group's heads)
  float* dC;                 // [B, T, H, N] per head
  float* dA_part;            // [BH, nc] the chunk's sum_k dt_k d dA_k
};

// Sum over the 32 lanes of a warp (every lane gets it); all lanes must call.
__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The decays both per-chunk kernels use, by thread 0 in the forward's summation order:
// decay_in[i] = exp(sum_{k<=i} dA_k) (may be null), w[s] = exp(sum_{k>s} dA_k) (may be null).
__device__ __forceinline__ void chunk_decays(const float* dAs, int len, float* decay_in, float* w) {
  if (threadIdx.x != 0) return;
  if (decay_in) {
    float acs = 0.0f;
    for (int i = 0; i < len; ++i) {
      acs += dAs[i];
      decay_in[i] = expf(acs);
    }
  }
  if (w) {
    float to_end = 0.0f;
    for (int s = len - 1; s >= 0; --s) {
      w[s] = expf(to_end);
      to_end += dAs[s];
    }
  }
}

// The decay mask L[i][j] = exp(sum_{j<k<=i} dA_k) for j <= i < len as a running sum down each column (as the
// forward's output kernel); entries above the diagonal and rows past len are not written (never read).
__device__ __forceinline__ void decay_mask(const float* dAs, int len, float* Ls, int ldq) {
  for (int j = threadIdx.x; j < len; j += blockDim.x) {
    float seg = 0.0f;
    Ls[j * ldq + j] = 1.0f;
    for (int i = j + 1; i < len; ++i) {
      seg += dAs[i];
      Ls[i * ldq + j] = expf(seg);
    }
  }
}

// 1. Grid (chunks, B * H). out [BH, nc, P, N]: sum_i e^{acs_i} dy_i C_i^T.
// Shared: dyw [kChunk][P] (dy_i e^{acs_i}), Cs [kChunk][N], dts/dAs/decay_in [kChunk].
__global__ void __launch_bounds__(kThreads) readout_grad_kernel(SsdArgs a, BwdArgs g, float* out) {
  extern __shared__ float smem[];
  const ChunkPos p = chunk_pos(a);
  const int64_t P = a.P, N = a.N, nc = gridDim.x;
  float* dyw = smem;
  float* Cs = dyw + kChunk * P;
  float* dts = Cs + kChunk * N;
  float* dAs = dts + kChunk;
  float* decay_in = dAs + kChunk;
  load_steps(a, p, dts, dAs);
  chunk_decays(dAs, p.len, decay_in, nullptr);
  __syncthreads();
  load_rows(dyw, int(P), g.dy, g.tdy, p, a, a.H, p.h, P, decay_in);
  load_rows(Cs, int(N), a.C, a.tC, p, a, a.Gc, p.h / (a.H / a.Gc), N, nullptr);
  __syncthreads();
  sum_row_outer_products(out + (p.bh * nc + p.c) * P * N, dyw, P, Cs, N, p.len);
}

// 2. Grid (ceil(P N / kThreads), B * H). g_next [BH, nc, P, N]: kernel 1's readout gradients in, the gradient of
// the state leaving each chunk out. d_final [BH, P, N] or null (zeros); d_init [BH, P, N] or null (not wanted).
__global__ void __launch_bounds__(kThreads)
    reverse_pass_kernel(float* g_next, const float* chunk_decay, const float* d_final, float* d_init, int64_t PN,
                        int64_t nc) {
  const int64_t bh = blockIdx.y, e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= PN) return;
  float G = d_final ? d_final[bh * PN + e] : 0.0f;  // dL/dS_{c+1}, starting from the final state
  for (int64_t c = nc - 1; c >= 0; --c) {
    float* slot = g_next + (bh * nc + c) * PN + e;
    const float readout = *slot;
    *slot = G;
    G = chunk_decay[bh * nc + c] * G + readout;  // dL/dS_c
  }
  if (d_init) d_init[bh * PN + e] = G;
}

__host__ __device__ constexpr int64_t dx_smem_floats(int64_t P, int64_t N) {
  return 2 * kChunk * (N + 1) + kChunk * P + P * (N + 1) + kChunk * (kChunk + 1) + 3 * kChunk + kWarps;
}

// 3. Grid (chunks, B * H).
// Shared: Cs/Bs [kChunk][N+1], dys [kChunk][P], Gs [P][N+1] (Gn), Ss [kChunk][Q+1] (scores L (C.B)),
// dts/dAs/w [kChunk], red [kWarps].
__global__ void __launch_bounds__(kThreads) chunk_dx_kernel(SsdArgs a, BwdArgs g) {
  extern __shared__ float smem[];
  const ChunkPos p = chunk_pos(a);
  const int64_t P = a.P, N = a.N, nc = gridDim.x, PN = P * N;
  const int ldn = int(N) + 1, ldq = kChunk + 1;
  float* Cs = smem;
  float* Bs = Cs + kChunk * ldn;
  float* dys = Bs + kChunk * ldn;
  float* Gs = dys + kChunk * P;
  float* Ss = Gs + P * ldn;
  float* dts = Ss + kChunk * ldq;
  float* dAs = dts + kChunk;
  float* w = dAs + kChunk;
  float* red = w + kChunk;
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  load_steps(a, p, dts, dAs);
  chunk_decays(dAs, p.len, nullptr, w);
  decay_mask(dAs, p.len, Ss, ldq);
  load_rows(Cs, ldn, a.C, a.tC, p, a, a.Gc, p.h / (a.H / a.Gc), N, nullptr);
  load_rows(Bs, ldn, a.B, a.tB, p, a, a.G, p.h / (a.H / a.G), N, nullptr);
  load_rows(dys, int(P), g.dy, g.tdy, p, a, a.H, p.h, P, nullptr);
  const float* Gn = g.g_next + (p.bh * nc + p.c) * PN;
  for (int64_t o = threadIdx.x; o < PN; o += blockDim.x) Gs[(o / N) * ldn + o % N] = Gn[o];
  __syncthreads();
  // e^{tot} <Gn, S_c>: the derivative through the chunk's total decay (a block sum, fixed order).
  const float* S = g.states + (p.bh * nc + p.c) * PN;
  float part = 0.0f;
  for (int64_t o = threadIdx.x; o < PN; o += blockDim.x) part += Gs[(o / N) * ldn + o % N] * S[o];
  part = warp_sum(part);
  if (lane == 0) red[warp] = part;
  // Scores L[i][j] (C_i . B_j) for j <= i: a warp spans consecutive j (rows of Bs, padded), C_i broadcast.
  for (int o = threadIdx.x; o < p.len * kChunk; o += blockDim.x) {
    const int i = o / kChunk, j = o % kChunk;
    if (j > i) continue;
    float dot = 0.0f;
    for (int64_t n = 0; n < N; ++n) dot += Cs[i * ldn + n] * Bs[j * ldn + n];
    Ss[i * ldq + j] *= dot;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float dot = 0.0f;
    for (int k = 0; k < kWarps; ++k) dot += red[k];
    g.decay_term[p.bh * nc + p.c] = g.chunk_decay[p.bh * nc + p.c] * dot;
  }
  // One warp per token j, lanes over pp: d dtx_j[pp] = sum_{i>=j} scores[i][j] dy_i[pp] + w_j (Gn B_j)[pp].
  const float D_h = a.D ? load_as_float(a.D, p.h, a.tD) : 0.0f;
  for (int j = warp; j < p.len; j += kWarps) {
    const int64_t tok = (p.b * a.T + p.t0 + j) * a.H + p.h;  // [B, T, H]
    float x_ddtx = 0.0f, dtx_gb = 0.0f, x_dy = 0.0f;
    for (int64_t pp = lane; pp < P; pp += 32) {
      float intra = 0.0f;
      for (int i = j; i < p.len; ++i) intra += Ss[i * ldq + j] * dys[i * P + pp];
      float gb = 0.0f;
      for (int64_t n = 0; n < N; ++n) gb += Gs[pp * ldn + n] * Bs[j * ldn + n];
      const float d_dtx = intra + w[j] * gb;
      const float xv = load_as_float(a.x, tok * P + pp, a.tx), dyv = dys[j * P + pp];
      store_from_float(g.dx, tok * P + pp, a.tx, dts[j] * d_dtx + D_h * dyv);
      x_ddtx += xv * d_dtx;
      dtx_gb += dts[j] * xv * gb;
      x_dy += xv * dyv;
    }
    x_ddtx = warp_sum(x_ddtx);
    dtx_gb = warp_sum(dtx_gb);
    x_dy = warp_sum(x_dy);
    if (lane == 0) {
      g.ddt[tok] = x_ddtx;
      g.w_term[tok] = w[j] * dtx_gb;
      g.xdy[tok] = x_dy;
    }
  }
}

__host__ __device__ constexpr int64_t dbdc_smem_floats(int64_t P, int64_t N) {
  const int64_t dtx_or_m = kChunk * (P + 1) > kChunk * (kChunk + 1) ? kChunk * (P + 1) : kChunk * (kChunk + 1);
  return 2 * kChunk * (N + 1) + kChunk * P + dtx_or_m + P * (N + 1) + kChunk * (kChunk + 1) + 6 * kChunk;
}

// 4. Grid (chunks, B * H).
// Shared: Cs/Bs [kChunk][N+1], dys [kChunk][P], dtxs [kChunk][P+1] (then M [kChunk][Q+1] in the same place),
// Ms [P][N+1] (Gn, then S_c), LD [kChunk][Q+1] (L (dy . dtx)), dts/dAs/decay_in/w/R/contrib [kChunk].
__global__ void __launch_bounds__(kThreads) chunk_dbdc_kernel(SsdArgs a, BwdArgs g) {
  extern __shared__ float smem[];
  const ChunkPos p = chunk_pos(a);
  const int64_t P = a.P, N = a.N, nc = gridDim.x, PN = P * N;
  const int ldn = int(N) + 1, ldp = int(P) + 1, ldq = kChunk + 1;
  float* Cs = smem;
  float* Bs = Cs + kChunk * ldn;
  float* dys = Bs + kChunk * ldn;
  float* dtxs = dys + kChunk * P;  // then M
  float* Ms = dtxs + (kChunk * ldp > kChunk * ldq ? kChunk * ldp : kChunk * ldq);
  float* LD = Ms + P * ldn;
  float* dts = LD + kChunk * ldq;
  float* dAs = dts + kChunk;
  float* decay_in = dAs + kChunk;
  float* w = decay_in + kChunk;
  float* R = w + kChunk;
  float* contrib = R + kChunk;
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  load_steps(a, p, dts, dAs);
  chunk_decays(dAs, p.len, decay_in, w);
  decay_mask(dAs, p.len, LD, ldq);
  load_rows(Cs, ldn, a.C, a.tC, p, a, a.Gc, p.h / (a.H / a.Gc), N, nullptr);
  load_rows(Bs, ldn, a.B, a.tB, p, a, a.G, p.h / (a.H / a.G), N, nullptr);
  load_rows(dys, int(P), g.dy, g.tdy, p, a, a.H, p.h, P, nullptr);
  load_rows(dtxs, ldp, a.x, a.tx, p, a, a.H, p.h, P, dts);
  const float* Gn = g.g_next + (p.bh * nc + p.c) * PN;
  for (int64_t o = threadIdx.x; o < PN; o += blockDim.x) Ms[(o / N) * ldn + o % N] = Gn[o];
  __syncthreads();
  // LD[i][j] = L[i][j] (dy_i . dtx_j) for j <= i: a warp spans consecutive j (rows of dtxs, padded).
  for (int o = threadIdx.x; o < p.len * kChunk; o += blockDim.x) {
    const int i = o / kChunk, j = o % kChunk;
    if (j > i) continue;
    float dot = 0.0f;
    for (int64_t pp = 0; pp < P; ++pp) dot += dys[i * P + pp] * dtxs[j * ldp + pp];
    LD[i * ldq + j] *= dot;
  }
  __syncthreads();
  // dB_j[n] = sum_{i>=j} LD[i][j] C_i[n] + w_j (Gn^T dtx_j)[n]: one warp per token, lanes over n.
  for (int j = warp; j < p.len; j += kWarps) {
    const int64_t tok = (p.b * a.T + p.t0 + j) * a.H + p.h;
    for (int64_t n = lane; n < N; n += 32) {
      float intra = 0.0f;
      for (int i = j; i < p.len; ++i) intra += LD[i * ldq + j] * Cs[i * ldn + n];
      float gx = 0.0f;
      for (int64_t pp = 0; pp < P; ++pp) gx += Ms[pp * ldn + n] * dtxs[j * ldp + pp];
      g.dB[tok * N + n] = intra + w[j] * gx;
    }
  }
  __syncthreads();  // Gn and dtx are no longer needed: S_c and M take their places
  const float* S = g.states + (p.bh * nc + p.c) * PN;
  for (int64_t o = threadIdx.x; o < PN; o += blockDim.x) Ms[(o / N) * ldn + o % N] = S[o];
  float* M = dtxs;
  for (int o = threadIdx.x; o < p.len * kChunk; o += blockDim.x) {
    const int i = o / kChunk, j = o % kChunk;
    if (j > i) continue;
    float dot = 0.0f;
    for (int64_t n = 0; n < N; ++n) dot += Cs[i * ldn + n] * Bs[j * ldn + n];
    M[i * ldq + j] = LD[i * ldq + j] * dot;
  }
  __syncthreads();
  // dC_i[n] = sum_{j<=i} LD[i][j] B_j[n] + e^{acs_i} (S_c^T dy_i)[n], and R_i = e^{acs_i} C_i . S_c^T dy_i.
  for (int i = warp; i < p.len; i += kWarps) {
    const int64_t tok = (p.b * a.T + p.t0 + i) * a.H + p.h;
    float c_sdy = 0.0f;
    for (int64_t n = lane; n < N; n += 32) {
      float intra = 0.0f;
      for (int j = 0; j <= i; ++j) intra += LD[i * ldq + j] * Bs[j * ldn + n];
      float sdy = 0.0f;
      for (int64_t pp = 0; pp < P; ++pp) sdy += Ms[pp * ldn + n] * dys[i * P + pp];
      g.dC[tok * N + n] = intra + decay_in[i] * sdy;
      c_sdy += Cs[i * ldn + n] * sdy;
    }
    c_sdy = warp_sum(c_sdy);
    if (lane == 0) R[i] = decay_in[i] * c_sdy;
  }
  __syncthreads();
  // d dA_k, one thread per token: each term a direct sum over the range it spans.
  const float A_h = load_as_float(a.A, p.h, a.tA);
  const float decay_term = g.decay_term[p.bh * nc + p.c];
  for (int k = threadIdx.x; k < p.len; k += blockDim.x) {
    float m = 0.0f;
    for (int i = k; i < p.len; ++i)
      for (int j = 0; j < k; ++j) m += M[i * ldq + j];
    float r = 0.0f;
    for (int i = k; i < p.len; ++i) r += R[i];
    float ws = 0.0f;
    for (int s = 0; s < k; ++s) ws += g.w_term[(p.b * a.T + p.t0 + s) * a.H + p.h];
    const float d_dA = m + r + ws + decay_term;
    const int64_t tok = (p.b * a.T + p.t0 + k) * a.H + p.h;
    g.ddt[tok] += A_h * d_dA;  // kernel 3 wrote x . d dtx here
    contrib[k] = dts[k] * d_dA;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (int k = 0; k < p.len; ++k) sum += contrib[k];
    g.dA_part[p.bh * nc + p.c] = sum;
  }
}

// Groups of a per-head gradient [B, T, H, N] summed to [B, T, G, N] (head h reads group h / (H / G)).
at::Tensor sum_to_groups(const at::Tensor& per_head, int64_t G) {
  const int64_t H = per_head.size(2);
  if (G == H) return per_head;
  return per_head.view({per_head.size(0), per_head.size(1), G, H / G, per_head.size(3)}).sum(3);
}

}  // namespace

SsdGrads ssd_chunk_backward_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                 const at::Tensor& C, const at::Tensor& D, const at::Tensor& state,
                                 const at::Tensor& dy, const at::Tensor& d_final_state) {
  const c10::cuda::CUDAGuard guard(x.device());
  if (!dy.defined() || !dy.sizes().equals(x.sizes()))
    throw Error("ssd_chunk_backward_cuda: dy must be [B, T, H, P] = " + shape_str(x) + ", got " +
                (dy.defined() ? shape_str(dy) : std::string("undefined")));
  const ssd::SsdInputs in = ssd::gather_inputs("ssd_chunk_backward_cuda", x, dt, A, B, C, D);
  const SsdArgs& a = in.args;
  if (a.P > kMaxDim || a.N > kMaxDim || a.T < 1)
    throw Error("ssd_chunk_backward_cuda: need T >= 1 and P, N <= " + std::to_string(kMaxDim) + ", got T=" +
                std::to_string(a.T) + " P=" + std::to_string(a.P) + " N=" + std::to_string(a.N));
  const std::vector<int64_t> state_shape = {a.batch, a.H, a.P, a.N};
  if (d_final_state.defined() && !d_final_state.sizes().equals(state_shape))
    throw Error("ssd_chunk_backward_cuda: d_final_state must be [B, H, P, N] = " + shape_str(state_shape) +
                ", got " + shape_str(d_final_state));
  const int64_t BH = a.batch * a.H, nc = (a.T + kChunk - 1) / kChunk, PN = a.P * a.N;
  const auto f32 = x.options().dtype(at::kFloat);
  const at::Tensor dyc = dy.contiguous();
  const at::Tensor d_final = d_final_state.defined() ? d_final_state.to(f32).contiguous() : at::Tensor();
  const at::Tensor init = state.defined() ? state.contiguous() : at::Tensor();

  // 0. The states entering each chunk, as the forward computed them.
  const ssd::ChunkStates cs = ssd::chunk_states(a, init, f32);

  SsdGrads r;
  r.dx = empty_output(x.sizes(), x.options());                             // [B, T, H, P]
  at::Tensor ddt = empty_output({a.batch, a.T, a.H}, f32);                  // [B, T, H]
  at::Tensor w_term = empty_output({a.batch, a.T, a.H}, f32);               // [B, T, H]
  at::Tensor xdy = empty_output({a.batch, a.T, a.H}, f32);                  // [B, T, H]
  at::Tensor decay_term = empty_output({BH, nc}, f32);                      // [BH, nc]
  at::Tensor dB = empty_output({a.batch, a.T, a.H, a.N}, f32);              // [B, T, H, N] per head
  at::Tensor dC = empty_output({a.batch, a.T, a.H, a.N}, f32);              // [B, T, H, N] per head
  at::Tensor dA_part = empty_output({BH, nc}, f32);                         // [BH, nc]
  at::Tensor g_next = empty_output({BH, nc, a.P, a.N}, f32);                // [BH, nc, P, N]
  if (state.defined()) r.d_initial_state = empty_output(state_shape, f32);  // [B, H, P, N]

  if (BH > 0) {
    BwdArgs g;
    g.dy = dyc.data_ptr();
    g.tdy = elem_type(dyc, "ssd_chunk_backward_cuda (dy)");
    g.states = cs.states.data_ptr<float>();
    g.g_next = g_next.data_ptr<float>();
    g.chunk_decay = cs.chunk_decay.data_ptr<float>();
    g.dx = r.dx.data_ptr();
    g.ddt = ddt.data_ptr<float>();
    g.w_term = w_term.data_ptr<float>();
    g.xdy = xdy.data_ptr<float>();
    g.decay_term = decay_term.data_ptr<float>();
    g.dB = dB.data_ptr<float>();
    g.dC = dC.data_ptr<float>();
    g.dA_part = dA_part.data_ptr<float>();

    const cudaStream_t stream = current_stream();
    const dim3 chunks{unsigned(nc), unsigned(BH)};
    const size_t readout_smem = sizeof(float) * size_t(kChunk * (a.P + a.N) + 3 * kChunk);
    const size_t dx_smem = sizeof(float) * size_t(dx_smem_floats(a.P, a.N));
    const size_t dbdc_smem = sizeof(float) * size_t(dbdc_smem_floats(a.P, a.N));
    using KernelSmem = std::pair<const void*, size_t>;
    for (auto [kernel, bytes] : {KernelSmem{reinterpret_cast<const void*>(readout_grad_kernel), readout_smem},
                                 KernelSmem{reinterpret_cast<const void*>(chunk_dx_kernel), dx_smem},
                                 KernelSmem{reinterpret_cast<const void*>(chunk_dbdc_kernel), dbdc_smem}}) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
      if (e != cudaSuccess)
        throw Error("ssd_chunk_backward_cuda: cannot reserve " + std::to_string(bytes) +
                    " bytes of shared memory (P=" + std::to_string(a.P) + ", N=" + std::to_string(a.N) +
                    "): " + cudaGetErrorString(e));
    }
    readout_grad_kernel<<<chunks, kThreads, readout_smem, stream>>>(a, g, g_next.data_ptr<float>());
    check_launch("ssd_chunk_backward_cuda readout_grad_kernel");
    const dim3 pass_grid(unsigned((PN + kThreads - 1) / kThreads), unsigned(BH));
    reverse_pass_kernel<<<pass_grid, kThreads, 0, stream>>>(
        g_next.data_ptr<float>(), cs.chunk_decay.data_ptr<float>(),
        d_final.defined() ? d_final.data_ptr<float>() : nullptr,
        r.d_initial_state.defined() ? r.d_initial_state.data_ptr<float>() : nullptr, PN, nc);
    check_launch("ssd_chunk_backward_cuda reverse_pass_kernel");
    chunk_dx_kernel<<<chunks, kThreads, dx_smem, stream>>>(a, g);
    check_launch("ssd_chunk_backward_cuda chunk_dx_kernel");
    chunk_dbdc_kernel<<<chunks, kThreads, dbdc_smem, stream>>>(a, g);
    check_launch("ssd_chunk_backward_cuda chunk_dbdc_kernel");
  }

  // Reductions in fp32, then each gradient in its input's dtype.
  r.ddt = ddt.to(dt.scalar_type());
  r.dA = dA_part.view({a.batch, a.H, nc}).sum(at::IntArrayRef{0, 2}).to(A.scalar_type());        // [H]
  r.dB = sum_to_groups(dB, a.G).to(B.scalar_type());                               // [B, T, G, N]
  r.dC = sum_to_groups(dC, a.Gc).to(C.scalar_type());                              // [B, T, Gc, N]
  if (D.defined()) r.dD = xdy.sum(at::IntArrayRef{0, 1}).to(D.scalar_type());                     // [H]
  return r;
}

}  // namespace hylo::kernels
