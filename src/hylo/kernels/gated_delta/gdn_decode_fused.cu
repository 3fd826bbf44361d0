// The fused GDN decode step (gdn_decode_fused.h). Work split: a cluster of kCluster blocks per (sequence, head);
// block `rank` owns value rows [rank R, rank R + R) of the head's state (R = Dv / kCluster), a warp RPW of them,
// each lane Dk/32 columns held in registers as float4 groups {l*4 + 128 m} (coalesced, as gated_delta_step.cu).
//   - every block recomputes the head's q/k conv + l2norm (Dk channels, one per thread): cheaper than sharing;
//   - each block convolves only its own v channels (= its rows) and writes their conv state itself;
//   - the output RMS norm needs sum(o^2) over all Dv rows: each block puts its partial sum in shared memory and
//     reads the others' through distributed shared memory after a cluster barrier;
//   - the q/k conv states are shared by the cluster's blocks, so rank 0 writes them after that barrier (every
//     block has read the old ones by then); a second barrier keeps each block's shared memory alive until all
//     blocks have read it.
// Rounding points follow the ATen path: conv outputs and o rounded to bf16; gates, norms, state in fp32.
#include <c10/cuda/CUDAGuard.h>
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <cmath>
#include <string>

#include "hylo/core/result.h"
#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/common/warp.cuh"
#include "hylo/kernels/gated_delta/gdn_decode_fused.h"

namespace hylo::kernels {

namespace {

namespace cg = cooperative_groups;
using bf16 = __nv_bfloat16;

constexpr int kCluster = 8;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kConv = 4;  // conv width K (both plans); the state keeps K-1 inputs

struct FusedArgs {
  const bf16 *q, *k, *v, *a, *b, *gate;  // [B, H*Dk] x2, [B, H*Dv], [B, H] x2, [B, H*Dv] or null
  int64_t ldq, ldk, ldv, lda, ldb, ldg;  // their row strides (elements): views of one packed projection output
  const void *wq, *wk, *wv;              // [C, K] conv weights
  const void *a_log, *dt_bias, *norm_w;  // [H], [H], [Dv]
  ElemType tw, ta_log, tdt, tnw;
  bf16 *cq, *ck, *cv;                    // pools [S, C, K-1]
  float* state;                          // pool [S, H, Dv, Dk]
  const int64_t* slots;                  // [B] or null
  bf16* out;                             // [B, H*Dv]
  int64_t num_slots;
  int H;
  float scale, eps;
};

__device__ __forceinline__ float silu(float y) { return y / (1.0f + __expf(-y)); }
__device__ __forceinline__ float round_bf16(float y) { return __bfloat162float(__float2bfloat16(y)); }

// One channel of the causal conv: xs = [state (K-1, oldest first) ; x], y = SiLU(sum_k w[k] xs[k]) rounded to bf16;
// next receives xs[1..K-1], the channel's new state.
__device__ __forceinline__ float conv_channel(const bf16* st, bf16 x, const void* w, ElemType tw, int64_t c,
                                              bf16 (&next)[kConv - 1]) {
  bf16 xs[kConv];
#pragma unroll
  for (int i = 0; i < kConv - 1; ++i) xs[i] = st[i];
  xs[kConv - 1] = x;
  float y = 0.0f;
#pragma unroll
  for (int i = 0; i < kConv; ++i) y += load_as_float(w, c * kConv + i, tw) * __bfloat162float(xs[i]);
#pragma unroll
  for (int i = 0; i < kConv - 1; ++i) next[i] = xs[i + 1];
  return round_bf16(silu(y));
}

// NPL = Dk / 32 columns per lane (4 or 8), RPW = rows per warp (Dv = kCluster * kWarps * RPW).
template <int NPL, int RPW>
__global__ void __cluster_dims__(kCluster, 1, 1) __launch_bounds__(kThreads) gdn_decode_fused_kernel(FusedArgs p) {
  constexpr int Dk = NPL * 32;
  constexpr int R = kWarps * RPW;       // rows of this block
  constexpr int Dv = R * kCluster;
  static_assert(Dk <= kThreads && R <= 64, "one thread per q/k channel; two o values per lane in the norm");
  __shared__ float qs[Dk], ks[Dk], vs[R], os[R];
  __shared__ float red[2][kWarps];
  __shared__ float part;  // this block's sum of o^2 (read by the cluster)

  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int H = p.H;
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t slot = p.slots ? p.slots[b] : b;
  const bool valid = slot >= 0 && slot < p.num_slots;
  const int64_t srow = valid ? slot : 0;  // a safe row to read; nothing is written for an invalid slot

  // 1. q, k of the head: conv + SiLU (thread = channel), then the l2 norms over Dk.
  bf16 q_next[kConv - 1], k_next[kConv - 1];
  float qv = 0.0f, kv = 0.0f;
  const int64_t qk_c = h * Dk + tid;  // channel in [0, H*Dk)
  if (tid < Dk) {
    const int64_t st_off = (srow * H * Dk + qk_c) * (kConv - 1);
    qv = conv_channel(p.cq + st_off, p.q[b * p.ldq + qk_c], p.wq, p.tw, qk_c, q_next);
    kv = conv_channel(p.ck + st_off, p.k[b * p.ldk + qk_c], p.wk, p.tw, qk_c, k_next);
  }
  // 2. v of this block's rows: conv + SiLU; each v channel belongs to one block, which updates its state now.
  if (tid < R) {
    const int64_t c = h * Dv + rank * R + tid;  // channel in [0, H*Dv)
    bf16* st = p.cv + (srow * H * Dv + c) * (kConv - 1);
    bf16 v_next[kConv - 1];
    vs[tid] = conv_channel(st, p.v[b * p.ldv + c], p.wv, p.tw, c, v_next);
    if (valid) {
#pragma unroll
      for (int i = 0; i < kConv - 1; ++i) st[i] = v_next[i];
    }
  }
  {
    const float sq = warp_sum(qv * qv), sk = warp_sum(kv * kv);
    if (lane == 0) red[0][warp] = sq, red[1][warp] = sk;
  }
  __syncthreads();
  if (tid < Dk) {
    float sq = 0.0f, sk = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sq += red[0][w], sk += red[1][w];
    qs[tid] = qv * rsqrtf(sq + 1e-6f) * p.scale;
    ks[tid] = kv * rsqrtf(sk + 1e-6f);
  }
  // 3. The gates of (b, h), in fp32.
  const float xa = __bfloat162float(p.a[b * p.lda + h]) + load_as_float(p.dt_bias, h, p.tdt);
  const float softplus = xa > 20.0f ? xa : log1pf(expf(xa));  // torch's softplus (threshold 20)
  const float g = -expf(load_as_float(p.a_log, h, p.ta_log)) * softplus;
  const float alpha = __expf(g);
  const float beta = 1.0f / (1.0f + expf(-__bfloat162float(p.b[b * p.ldb + h])));
  __syncthreads();

  // 4. The delta-rule step on this warp's rows, the state read once and written once.
  float s[RPW][NPL], kr[NPL], qr[NPL];
  float* base = p.state + ((srow * H + h) * Dv + rank * R + warp * RPW) * Dk;
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int m = 0; m < NPL / 4; ++m) {
      const float4 x = *reinterpret_cast<const float4*>(base + r * Dk + m * 128 + lane * 4);
      s[r][4 * m] = x.x, s[r][4 * m + 1] = x.y, s[r][4 * m + 2] = x.z, s[r][4 * m + 3] = x.w;
    }
  float kq = 0.0f;
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int col = (j / 4) * 128 + lane * 4 + (j % 4);
    kr[j] = ks[col], qr[j] = qs[col];
    kq += kr[j] * qr[j];
  }
  kq = warp_sum(kq);
#pragma unroll
  for (int r = 0; r < RPW; ++r) {
    float sk = 0.0f, sq = 0.0f;
#pragma unroll
    for (int j = 0; j < NPL; ++j) sk += s[r][j] * kr[j], sq += s[r][j] * qr[j];
    sk = warp_sum(sk);
    sq = warp_sum(sq);
    const float err = beta * (vs[warp * RPW + r] - alpha * sk);
#pragma unroll
    for (int j = 0; j < NPL; ++j) s[r][j] = alpha * s[r][j] + err * kr[j];
    if (lane == 0) os[warp * RPW + r] = round_bf16(alpha * sq + err * kq);
  }
  if (valid) {
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
      for (int m = 0; m < NPL / 4; ++m)
        *reinterpret_cast<float4*>(base + r * Dk + m * 128 + lane * 4) =
            make_float4(s[r][4 * m], s[r][4 * m + 1], s[r][4 * m + 2], s[r][4 * m + 3]);
  }
  __syncthreads();

  // 5. The output norm over the head's Dv rows: partial sums shared across the cluster.
  if (warp == 0) {
    float x = 0.0f;
    for (int i = lane; i < R; i += 32) x += os[i] * os[i];
    x = warp_sum(x);
    if (lane == 0) part = x;
  }
  cluster.sync();  // every block's part is written; every block has read the old q/k conv states
  float total = 0.0f;
#pragma unroll
  for (int r = 0; r < kCluster; ++r) total += *cluster.map_shared_rank(&part, r);
  const float rstd = rsqrtf(total / float(Dv) + p.eps);
  if (tid < R) {
    const int64_t row = rank * R + tid, c = h * Dv + row;
    float y = os[tid] * rstd * load_as_float(p.norm_w, row, p.tnw);
    if (p.gate) y *= silu(__bfloat162float(p.gate[b * p.ldg + c]));
    p.out[b * H * Dv + c] = __float2bfloat16(valid ? y : NAN);
  }
  if (rank == 0 && valid && tid < Dk) {
    const int64_t st_off = (slot * H * Dk + qk_c) * (kConv - 1);
#pragma unroll
    for (int i = 0; i < kConv - 1; ++i) p.cq[st_off + i] = q_next[i], p.ck[st_off + i] = k_next[i];
  }
  cluster.sync();  // keep `part` alive until every block of the cluster has read it
}

std::string shape_of(const at::Tensor& t) { return t.defined() ? std::string(c10::str(t.sizes())) : "undefined"; }

// A [B, N] input whose rows may be strided (a column view of the packed projection output): unit column stride,
// row stride >= N (a single row may have any row stride).
bool rows_ok(const at::Tensor& t) {
  return t.dim() == 2 && t.stride(1) == 1 && (t.size(0) <= 1 || t.stride(0) >= t.size(1));
}

void expect_rows(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::Tensor& x) {
  if (!t.defined() || !t.sizes().equals(shape) || t.scalar_type() != at::kBFloat16 || !rows_ok(t) ||
      t.device() != x.device())
    throw Error(std::string("gdn_decode_fused_cuda: ") + name + " must be a bf16 tensor " + c10::str(shape) +
                " with unit column stride and row stride >= its width on " + x.device().str() + ", got " +
                shape_of(t) +
                (t.defined() ? std::string(" ") + c10::toString(t.scalar_type()) + " on " + t.device().str() +
                                   " strides " + c10::str(t.strides())
                             : ""));
}

int64_t row_stride(const at::Tensor& t) { return t.size(0) <= 1 ? t.size(1) : t.stride(0); }

void expect(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype, const at::Tensor& x) {
  if (!t.defined() || !t.sizes().equals(shape) || t.scalar_type() != dtype || !t.is_contiguous() ||
      t.device() != x.device())
    throw Error(std::string("gdn_decode_fused_cuda: ") + name + " must be a contiguous " + c10::toString(dtype) +
                " tensor " + c10::str(shape) + " on " + x.device().str() + ", got " + shape_of(t) +
                (t.defined() ? std::string(" ") + c10::toString(t.scalar_type()) + " on " + t.device().str() +
                                   (t.is_contiguous() ? "" : " (not contiguous)")
                             : ""));
}

}  // namespace

bool gdn_decode_fused_supported(const at::Tensor& x, int64_t H, int64_t Dk, int64_t Dv, int64_t K,
                                const GdnDecodePools& pools) {
  auto ok = [](const at::Tensor& t, at::ScalarType dt) {
    return t.defined() && t.is_cuda() && t.scalar_type() == dt && t.is_contiguous();
  };
  return x.is_cuda() && x.scalar_type() == at::kBFloat16 && H >= 1 && (Dk == 128 || Dk == 256) &&
         (Dv == 128 || Dv == 256 || Dv == 512) && K == kConv && ok(pools.conv_q, at::kBFloat16) &&
         ok(pools.conv_k, at::kBFloat16) && ok(pools.conv_v, at::kBFloat16) && ok(pools.recurrent, at::kFloat);
}

at::Tensor gdn_decode_fused_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
                                 const at::Tensor& b, const at::Tensor& gate, const GdnDecodeParams& prm,
                                 const GdnDecodePools& pools, const at::Tensor& slots) {
  if (!pools.recurrent.defined() || pools.recurrent.dim() != 4)
    throw Error("gdn_decode_fused_cuda: recurrent pool must be [S, H, Dv, Dk], got " + shape_of(pools.recurrent));
  const int64_t S = pools.recurrent.size(0), H = pools.recurrent.size(1), Dv = pools.recurrent.size(2),
                Dk = pools.recurrent.size(3), B = q.defined() && q.dim() == 2 ? q.size(0) : -1;
  if (B < 1) throw Error("gdn_decode_fused_cuda: q must be [B >= 1, H*Dk], got " + shape_of(q));
  if (!gdn_decode_fused_supported(q, H, Dk, Dv, kConv, pools))
    throw Error("gdn_decode_fused_cuda: unsupported (H " + std::to_string(H) + ", Dk " + std::to_string(Dk) +
                ", Dv " + std::to_string(Dv) + ", q " + c10::toString(q.scalar_type()) +
                "); needs Dk in {128, 256}, Dv in {128, 256, 512}, conv 4, bf16 on CUDA, contiguous pools");
  const at::ScalarType bf = at::kBFloat16;
  expect_rows(q, "q", {B, H * Dk}, q);
  expect_rows(k, "k", {B, H * Dk}, q);
  expect_rows(v, "v", {B, H * Dv}, q);
  expect_rows(a, "a", {B, H}, q);
  expect_rows(b, "b", {B, H}, q);
  if (gate.defined()) expect_rows(gate, "gate", {B, H * Dv}, q);
  expect(pools.conv_q, "conv_q pool", {S, H * Dk, kConv - 1}, bf, q);
  expect(pools.conv_k, "conv_k pool", {S, H * Dk, kConv - 1}, bf, q);
  expect(pools.conv_v, "conv_v pool", {S, H * Dv, kConv - 1}, bf, q);
  if (slots.defined()) expect(slots, "slots", {B}, at::kLong, q);
  else if (S != B)
    throw Error("gdn_decode_fused_cuda: without slots the pools must have B = " + std::to_string(B) + " rows, have " +
                std::to_string(S));
  auto param = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    if (!t.defined() || !t.sizes().equals(shape) || !t.is_contiguous() || t.device() != q.device())
      throw Error(std::string("gdn_decode_fused_cuda: ") + name + " must be contiguous " + c10::str(shape) + " on " +
                  q.device().str() + ", got " + shape_of(t));
    return elem_type(t, name);
  };
  FusedArgs p;
  p.tw = param(prm.q_conv, "q_conv", {H * Dk, kConv});
  if (param(prm.k_conv, "k_conv", {H * Dk, kConv}) != p.tw || param(prm.v_conv, "v_conv", {H * Dv, kConv}) != p.tw)
    throw Error("gdn_decode_fused_cuda: the three conv weights must share one dtype");
  p.ta_log = param(prm.a_log, "A_log", {H});
  p.tdt = param(prm.dt_bias, "dt_bias", {H});
  p.tnw = param(prm.norm_w, "o_norm.weight", {Dv});

  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = empty_output({B, H * Dv}, q.options());  // [B, H*Dv]
  auto bp = [](const at::Tensor& t) { return t.defined() ? static_cast<const bf16*>(t.data_ptr()) : nullptr; };
  p.q = bp(q), p.k = bp(k), p.v = bp(v), p.a = bp(a), p.b = bp(b), p.gate = bp(gate);
  p.ldq = row_stride(q), p.ldk = row_stride(k), p.ldv = row_stride(v), p.lda = row_stride(a), p.ldb = row_stride(b);
  p.ldg = gate.defined() ? row_stride(gate) : 0;
  p.wq = prm.q_conv.data_ptr(), p.wk = prm.k_conv.data_ptr(), p.wv = prm.v_conv.data_ptr();
  p.a_log = prm.a_log.data_ptr(), p.dt_bias = prm.dt_bias.data_ptr(), p.norm_w = prm.norm_w.data_ptr();
  p.cq = static_cast<bf16*>(pools.conv_q.data_ptr());
  p.ck = static_cast<bf16*>(pools.conv_k.data_ptr());
  p.cv = static_cast<bf16*>(pools.conv_v.data_ptr());
  p.state = pools.recurrent.data_ptr<float>();
  p.slots = slots.defined() ? slots.data_ptr<int64_t>() : nullptr;
  p.out = static_cast<bf16*>(out.data_ptr());
  p.num_slots = S;
  p.H = static_cast<int>(H);
  p.scale = static_cast<float>(prm.scale);
  p.eps = static_cast<float>(prm.norm_eps);
  const dim3 grid(kCluster, unsigned(B * H));
  const cudaStream_t stream = current_stream();
  const int64_t rpw = Dv / (kCluster * kWarps);
  if (Dk == 128 && rpw == 2) gdn_decode_fused_kernel<4, 2><<<grid, kThreads, 0, stream>>>(p);
  else if (Dk == 128 && rpw == 4) gdn_decode_fused_kernel<4, 4><<<grid, kThreads, 0, stream>>>(p);
  else if (Dk == 128 && rpw == 8) gdn_decode_fused_kernel<4, 8><<<grid, kThreads, 0, stream>>>(p);
  else if (Dk == 256 && rpw == 2) gdn_decode_fused_kernel<8, 2><<<grid, kThreads, 0, stream>>>(p);
  else if (Dk == 256 && rpw == 4) gdn_decode_fused_kernel<8, 4><<<grid, kThreads, 0, stream>>>(p);
  else gdn_decode_fused_kernel<8, 8><<<grid, kThreads, 0, stream>>>(p);
  check_launch("gdn_decode_fused_cuda");
  return out;
}

}  // namespace hylo::kernels
