// Split-context GQA decode over paged K/V and its log-sum-exp combine (gqa_decode.h says what is computed;
// docs/kernels.md how). One CTA = one sequence x one split of its context x one KV head (x one block of up to RB of
// the group's query heads). Lanes are grouped D/8 to a token, each lane holding 8 of the D dims, so one group reads
// a token's K row (and then its V row) as one coalesced 16-byte load per lane, and a warp covers 32 / (D/8) tokens
// per step:
//   1. score: each lane multiplies its 8 dims by the RB queries (fp32 registers, pre-scaled by scale * log2 e), and
//      the group sums over its lanes with xor shuffles;
//   2. online softmax per group (base 2, fp32): each group keeps its own running max, sum and output over the tokens
//      it reads (one exp2 per token and head: the rescale happens only when the max grows);
//   3. at the end the groups of a warp merge by shuffles, the warps through shared memory, and the CTA writes its
//      split's normalised output and log-sum-exp.
// Each step issues the loads of U tokens per group before using them, so several rows per lane are in flight.
#include "hylo/kernels/gqa_decode/gqa_decode.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"

namespace hylo::kernels {
namespace {

constexpr int kThreads = 128;            // 4 warps per CTA
constexpr int kMinSplitTokens = 256;     // automatic splits cover at least this many tokens of the capacity
constexpr int kMaxSplits = 1024;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct SplitParams {
  const float* q;          // [S, Hq, D] fp32 contiguous
  const void* k_pages;     // [P, page_size, Hkv, D] elements of T
  const void* v_pages;     // same layout as k_pages
  const int* table;        // [S, table_stride] int32
  const int* lengths;      // [S] int32
  int64_t table_stride;    // elements between sequences' rows of the table
  int64_t page_stride;     // elements between pages
  int page_size, hkv, hq, rep, head_blocks, num_splits, capacity, window, min_split_tokens;
  int page_shift;          // log2(page_size) when it is a power of two (the engine's 64), else -1
  float scale_log2;        // softmax scale * log2(e): scores are kept in base 2
  float* o_part;           // [S, splits, Hq, D] fp32, normalised per split (not written for an empty split)
  float* lse_part;         // [S, splits, Hq] fp32, base-2 log-sum-exp of the split's scaled scores (-inf: empty)
};

// 8 consecutive elements of one row as raw 16-byte words (one for bf16/fp16, two for fp32), loaded through the
// read-only path and converted to fp32 only when used, so the loads of several tokens can be in flight together.
template <class T>
struct Raw8 {
  uint4 w[sizeof(T) / 2];
};

template <class T>
__device__ __forceinline__ Raw8<T> load_raw8(const T* p) {
  Raw8<T> r;
  const uint4* src = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < int(sizeof(T) / 2); ++i) r.w[i] = __ldg(src + i);
  return r;
}

__device__ __forceinline__ void to_float8(const Raw8<__nv_bfloat16>& r, float (&f)[8]) {
  const uint32_t w[4] = {r.w[0].x, r.w[0].y, r.w[0].z, r.w[0].w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // bf16 is the high half of an fp32: exact by shifting (low half = element 2i)
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ void to_float8(const Raw8<__half>& r, float (&f)[8]) {
  const uint32_t w[4] = {r.w[0].x, r.w[0].y, r.w[0].z, r.w[0].w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &w[i], 4);
    const float2 v = __half22float2(h);
    f[2 * i] = v.x, f[2 * i + 1] = v.y;
  }
}

__device__ __forceinline__ void to_float8(const Raw8<float>& r, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    f[4 * i] = __uint_as_float(r.w[i].x), f[4 * i + 1] = __uint_as_float(r.w[i].y);
    f[4 * i + 2] = __uint_as_float(r.w[i].z), f[4 * i + 3] = __uint_as_float(r.w[i].w);
  }
}

// Weight of a partial with max m against the merged max mx (0 for an empty partial, m == -inf).
__device__ __forceinline__ float merge_weight(float m, float mx) { return m == kNegInf ? 0.f : exp2f(m - mx); }

// T: the pages' element type; D: head dim (a multiple of 8 with D/8 a power of two dividing 32); RB: query heads
// per CTA (the group's rep, or a block of it, padded up to RB with zero queries whose results are not stored).
template <class T, int D, int RB>
__global__ void __launch_bounds__(kThreads) gqa_decode_split_kernel(const SplitParams p) {
  constexpr int GS = D / 8;               // lanes per token
  static_assert(GS >= 1 && GS <= 32 && (32 % GS) == 0, "D / 8 lanes must tile a warp");
  constexpr int GPW = 32 / GS;            // tokens per warp step
  constexpr int NW = kThreads / 32;
  constexpr int NG = NW * GPW;            // token groups per CTA
  constexpr int U = sizeof(T) == 4 ? 2 : 4;  // tokens per group whose loads are issued together
  __shared__ float s_m[NW][RB], s_l[NW][RB];
  __shared__ __align__(16) float s_acc[NW][RB][D];

  const int b = blockIdx.z, split = blockIdx.y;
  const int g = blockIdx.x / p.head_blocks, r0 = (blockIdx.x % p.head_blocks) * RB;
  const int nh = min(RB, p.rep - r0);     // live heads of this CTA
  const int h_base = g * p.rep + r0;      // query head of slot 0 (head h reads KV head h / rep)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = lane % GS, grp = warp * GPW + lane / GS;

  // This split's tokens, from the length on the device (the grid depends only on the capacity, so one launch
  // serves any lengths and a CUDA graph can replay it): the attended range [lo, len) is spread over the splits.
  const int len = min(max(p.lengths[b], 0), p.capacity);
  const int lo = p.window > 0 ? max(0, len - p.window) : 0;
  const int n = len - lo;
  const int chunk = int(max((int64_t(n) + p.num_splits - 1) / p.num_splits, int64_t(p.min_split_tokens)));
  const int s_begin = lo + int(min(int64_t(split) * chunk, int64_t(n)));
  const int s_end = int(min(int64_t(len), int64_t(s_begin) + chunk));

  // Queries of this lane's 8 dims for the CTA's heads, pre-scaled so that exp2 gives the softmax.
  float q[RB][8];
#pragma unroll
  for (int h = 0; h < RB; ++h) {
    if (h < nh) {
      const float4* src = reinterpret_cast<const float4*>(p.q + (int64_t(b) * p.hq + h_base + h) * D + 8 * j);
      const float4 a = src[0], c = src[1];
      q[h][0] = a.x * p.scale_log2, q[h][1] = a.y * p.scale_log2, q[h][2] = a.z * p.scale_log2;
      q[h][3] = a.w * p.scale_log2, q[h][4] = c.x * p.scale_log2, q[h][5] = c.y * p.scale_log2;
      q[h][6] = c.z * p.scale_log2, q[h][7] = c.w * p.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[h][e] = 0.f;
    }
  }
  float m[RB], l[RB], acc[RB][8];
#pragma unroll
  for (int h = 0; h < RB; ++h) {
    m[h] = kNegInf, l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.f;
  }

  const T* kp = static_cast<const T*>(p.k_pages) + g * D + 8 * j;
  const T* vp = static_cast<const T*>(p.v_pages) + g * D + 8 * j;
  const int* trow = p.table + int64_t(b) * p.table_stride;
  const int64_t row_stride = int64_t(p.hkv) * D;
  // The loop bounds are the same for every thread (the shuffles below need whole warps); a group whose token is
  // past the split's end loads nothing and skips the update.
  for (int64_t base = s_begin; base < s_end; base += NG * U) {  // 64-bit: base may pass 2^31 - 1 at its end
    Raw8<T> kr[U], vr[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = int(base) + u * NG + grp;  // < s_end where used
      if (base + u * NG + grp < s_end) {
        // Power-of-two pages (the usual case) index by shift and mask instead of an integer division.
        const int slot = p.page_shift >= 0 ? t >> p.page_shift : t / p.page_size;
        const int row = p.page_shift >= 0 ? t & (p.page_size - 1) : t - slot * p.page_size;
        const int page = __ldg(trow + slot);
        const int64_t off = int64_t(page) * p.page_stride + int64_t(row) * row_stride;
        kr[u] = load_raw8(kp + off);
        vr[u] = load_raw8(vp + off);
      } else {
        kr[u] = Raw8<T>{}, vr[u] = Raw8<T>{};
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
      to_float8(kr[u], kf);
      float s[RB];
#pragma unroll
      for (int h = 0; h < RB; ++h) {
        float a = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) a = fmaf(q[h][e], kf[e], a);
        s[h] = a;
      }
#pragma unroll
      for (int off = 1; off < GS; off *= 2)
#pragma unroll
        for (int h = 0; h < RB; ++h) s[h] += __shfl_xor_sync(0xffffffffu, s[h], off);
      if (base + u * NG + grp < s_end) {
        float vf[8];
        to_float8(vr[u], vf);
#pragma unroll
        for (int h = 0; h < RB; ++h) {
          float pw;  // the token's weight against the (possibly new) running max
          if (s[h] > m[h]) {
            const float alpha = exp2f(m[h] - s[h]);  // 0 while m is -inf
            l[h] *= alpha;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[h][e] *= alpha;
            m[h] = s[h], pw = 1.f;
          } else {
            pw = exp2f(s[h] - m[h]);
          }
          l[h] += pw;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h][e] = fmaf(pw, vf[e], acc[h][e]);
        }
      }
    }
  }

  // Merge the groups of each warp (lanes with the same j hold the same dims).
#pragma unroll
  for (int off = GS; off < 32; off *= 2) {
#pragma unroll
    for (int h = 0; h < RB; ++h) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[h], off), lo_ = __shfl_xor_sync(0xffffffffu, l[h], off);
      const float mx = fmaxf(m[h], mo), wa = merge_weight(m[h], mx), wb = merge_weight(mo, mx);
      l[h] = l[h] * wa + lo_ * wb;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[h][e], off);
        acc[h][e] = acc[h][e] * wa + ao * wb;
      }
      m[h] = mx;
    }
  }
  if (lane < GS) {
#pragma unroll
    for (int h = 0; h < RB; ++h) {
      if (j == 0) s_m[warp][h] = m[h], s_l[warp][h] = l[h];
#pragma unroll
      for (int e = 0; e < 8; ++e) s_acc[warp][h][8 * j + e] = acc[h][e];
    }
  }
  __syncthreads();
  // Merge the warps and write the split's partial: output normalised by its own sum, LSE in base 2. Emptiness is
  // the token range's, not the sum's, so a NaN in an attended row reaches the output as in the ATen form.
  const int64_t part = int64_t(b) * p.num_splits + split;
  const bool live = s_begin < s_end;
  for (int i = threadIdx.x; i < nh * D; i += kThreads) {
    const int h = i / D, d = i - h * D;
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, s_m[w][h]);
    float den = 0.f, num = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float wt = merge_weight(s_m[w][h], mx);
      den += s_l[w][h] * wt;
      num += s_acc[w][h][d] * wt;
    }
    const int64_t row = part * p.hq + h_base + h;
    if (live) p.o_part[row * D + d] = num / den;  // an empty split's output is never read
    if (d == 0) p.lse_part[row] = live ? mx + log2f(den) : kNegInf;
  }
}

// out[s, h, :] = sum_k w_k o_part[s, k, h, :] / sum_k w_k with w_k = 2^(lse_k - max); one CTA per (head, sequence),
// one thread per dim. Empty splits (LSE -inf) are skipped (their partials were never written); a sequence with
// no tokens gets 0.
__global__ void __launch_bounds__(128) gqa_decode_combine_kernel(const float* __restrict__ o_part,
                                                                 const float* __restrict__ lse_part, void* out,
                                                                 ElemType out_type, int num_splits, int hq, int dim) {
  const int h = blockIdx.x, b = blockIdx.y;
  const float* lse = lse_part + int64_t(b) * num_splits * hq + h;
  float mx = kNegInf;
  for (int k = 0; k < num_splits; ++k) mx = fmaxf(mx, lse[int64_t(k) * hq]);
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    float num = 0.f, den = 0.f;
    bool any = false;  // some split had tokens (a NaN from the data then reaches the output, as in the ATen form)
    for (int k = 0; k < num_splits; ++k) {
      const float lk = lse[int64_t(k) * hq];
      if (lk == kNegInf) continue;
      const float w = exp2f(lk - mx);
      den += w, any = true;
      num = fmaf(w, o_part[((int64_t(b) * num_splits + k) * hq + h) * dim + d], num);
    }
    store_from_float(out, (int64_t(b) * hq + h) * dim + d, out_type, any ? num / den : 0.f);
  }
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

bool float_type(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

// Query heads per CTA: the group's rep rounded up to 1, 2, 4 or 8; larger groups take rep / 8 CTAs per KV head.
int heads_per_cta(int64_t rep) { return rep <= 1 ? 1 : rep <= 2 ? 2 : rep <= 4 ? 4 : 8; }

// The launch shape from the shapes and the table's capacity only (never the lengths), so the same plan serves
// every replay of a captured decode graph: about one wave of CTAs over the SMs, each split at least
// kMinSplitTokens of the attended capacity; num_splits_arg > 0 forces the count (and lets splits be 1 token).
template <class T, int D, int RB>
void plan_splits(const SplitParams& p, int64_t batch, int64_t num_splits_arg, SplitParams& planned) {
  auto kernel = gqa_decode_split_kernel<T, D, RB>;
  // Resident CTAs per SM, asked once per instantiation (a pure query: no stream work, allowed while capturing).
  static const int per_sm = [&] {
    int n = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0));
    return std::max(n, 1);
  }();
  planned = p;
  const int64_t ctas = batch * p.hkv * p.head_blocks;
  const int64_t wave = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * per_sm;
  const int64_t attended = p.window > 0 ? std::min<int64_t>(p.window, p.capacity) : p.capacity;
  const int64_t most = std::max<int64_t>(1, (attended + kMinSplitTokens - 1) / kMinSplitTokens);
  const int64_t splits = num_splits_arg > 0 ? std::min<int64_t>(num_splits_arg, kMaxSplits)
                                            : std::clamp<int64_t>(wave / std::max<int64_t>(ctas, 1), 1,
                                                                  std::min<int64_t>(most, kMaxSplits));
  planned.num_splits = int(splits);
  planned.min_split_tokens = num_splits_arg > 0 ? 1 : kMinSplitTokens;
}

template <class T, int D, int RB>
void run_split(const SplitParams& p, int64_t batch, cudaStream_t stream) {
  gqa_decode_split_kernel<T, D, RB>
      <<<dim3(unsigned(p.hkv * p.head_blocks), unsigned(p.num_splits), unsigned(batch)), kThreads, 0, stream>>>(p);
  check_launch("gqa_decode_split_kernel");
}

// Calls f.template operator()<T, D, RB>() for the operands' page dtype, head dim and heads per CTA.
template <class F>
void dispatch(at::ScalarType page_type, int64_t d, int rb, F&& f) {
  auto by_rb = [&]<class T, int D>() {
    switch (rb) {
      case 1: return f.template operator()<T, D, 1>();
      case 2: return f.template operator()<T, D, 2>();
      case 4: return f.template operator()<T, D, 4>();
      default: return f.template operator()<T, D, 8>();
    }
  };
  auto by_d = [&]<class T>() {
    if (d == 64) return by_rb.template operator()<T, 64>();
    return by_rb.template operator()<T, 128>();
  };
  switch (page_type) {
    case at::kBFloat16: return by_d.template operator()<__nv_bfloat16>();
    case at::kHalf: return by_d.template operator()<__half>();
    default: return by_d.template operator()<float>();
  }
}

}  // namespace

bool gqa_decode_paged_supported(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                const at::Tensor& page_table, const at::Tensor& lengths) {
  if (!q.is_cuda() || q.dim() != 3 || !float_type(q.scalar_type())) return false;
  const int64_t s = q.size(0), hq = q.size(1), d = q.size(2);
  if (s <= 0 || s >= 65536 || hq <= 0 || (d != 64 && d != 128)) return false;
  if (!k_pages.is_cuda() || k_pages.dim() != 4 || !float_type(k_pages.scalar_type()) ||
      v_pages.scalar_type() != k_pages.scalar_type() || v_pages.sizes() != k_pages.sizes() ||
      v_pages.strides() != k_pages.strides() || k_pages.device() != q.device() || v_pages.device() != q.device())
    return false;
  const int64_t pages = k_pages.size(0), page_size = k_pages.size(1), hkv = k_pages.size(2);
  if (pages < 1 || page_size < 1 || hkv < 1 || k_pages.size(3) != d || hq % hkv != 0) return false;
  if (k_pages.stride(3) != 1 || k_pages.stride(2) != d || k_pages.stride(1) != hkv * d || k_pages.stride(0) % 8 != 0 ||
      !aligned16(k_pages) || !aligned16(v_pages))
    return false;
  if (!page_table.is_cuda() || page_table.scalar_type() != at::kInt || page_table.dim() != 2 ||
      page_table.size(0) != s || page_table.size(1) < 1 || page_table.stride(1) != 1 ||
      page_table.device() != q.device())
    return false;
  if (!lengths.is_cuda() || lengths.scalar_type() != at::kInt || lengths.dim() != 1 || lengths.size(0) != s ||
      lengths.device() != q.device())
    return false;
  return page_table.size(1) * page_size < (int64_t{1} << 31) && hkv * hq < (int64_t{1} << 31);
}

at::Tensor gqa_decode_paged_cuda(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                                 const at::Tensor& page_table, const at::Tensor& lengths, double scale, int64_t window,
                                 int64_t num_splits) {
  if (!gqa_decode_paged_supported(q, k_pages, v_pages, page_table, lengths))
    throw Error("gqa_decode_paged_cuda: unsupported operands q " + std::string(c10::str(q.sizes())) + " " +
                std::string(c10::toString(q.scalar_type())) + ", k_pages " + c10::str(k_pages.sizes()) + " " +
                std::string(c10::toString(k_pages.scalar_type())) + ", page_table " + c10::str(page_table.sizes()) +
                ", lengths " + c10::str(lengths.sizes()) +
                " (expected CUDA q [S, Hq, D] fp32/bf16/fp16 with D 64 or 128; k_pages, v_pages [P, page_size, Hkv, D]"
                " of one float dtype with contiguous rows, 16-byte aligned, Hkv | Hq; page_table int32 [S, max_pages]"
                " with a contiguous last dim; lengths int32 [S]; all on one GPU)");
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t s = q.size(0), hq = q.size(1), d = q.size(2), hkv = k_pages.size(2), rep = hq / hkv;
  const int64_t capacity = page_table.size(1) * k_pages.size(1);
  at::Tensor qf = q.to(at::kFloat).contiguous();  // [S, Hq, D] fp32: the reference's compute type
  if (!aligned16(qf)) qf = qf.clone();             // rows are read as float4
  const at::Tensor lens = lengths.contiguous();
  const int rb = heads_per_cta(rep);

  SplitParams p{};
  p.q = qf.data_ptr<float>();
  p.k_pages = k_pages.data_ptr();
  p.v_pages = v_pages.data_ptr();
  p.table = page_table.data_ptr<int>();
  p.lengths = lens.data_ptr<int>();
  p.table_stride = s > 1 ? page_table.stride(0) : page_table.size(1);
  p.page_stride = k_pages.stride(0);
  p.page_size = int(k_pages.size(1)), p.hkv = int(hkv), p.hq = int(hq), p.rep = int(rep);
  p.page_shift = -1;
  for (int sh = 0; sh < 31; ++sh)
    if ((int64_t{1} << sh) == k_pages.size(1)) p.page_shift = sh;
  p.head_blocks = int((rep + rb - 1) / rb);
  p.capacity = int(capacity);
  p.window = window > 0 ? int(std::min<int64_t>(window, capacity)) : 0;
  p.scale_log2 = float(scale * M_LOG2E);

  cudaStream_t stream = current_stream();
  SplitParams planned{};
  dispatch(k_pages.scalar_type(), d, rb,
           [&]<class T, int D, int RB>() { plan_splits<T, D, RB>(p, s, num_splits, planned); });
  const at::TensorOptions f32 = q.options().dtype(at::kFloat);
  // Partials from the caching allocator (a graph's private pool during capture); NaN-filled in tests, so a partial
  // the combine should skip but reads shows up.
  at::Tensor o_part = empty_output({s, planned.num_splits, hq, d}, f32);  // [S, splits, Hq, D]
  at::Tensor lse_part = empty_output({s, planned.num_splits, hq}, f32);   // [S, splits, Hq]
  at::Tensor out = empty_output({s, hq, d}, q.options());                 // [S, Hq, D] in q's dtype
  planned.o_part = o_part.data_ptr<float>();
  planned.lse_part = lse_part.data_ptr<float>();
  dispatch(k_pages.scalar_type(), d, rb, [&]<class T, int D, int RB>() { run_split<T, D, RB>(planned, s, stream); });
  gqa_decode_combine_kernel<<<dim3(unsigned(hq), unsigned(s)), 128, 0, stream>>>(
      planned.o_part, planned.lse_part, out.data_ptr(), elem_type(out, "gqa_decode_paged_cuda"), planned.num_splits,
      int(hq), int(d));
  check_launch("gqa_decode_combine_kernel");
  return out;
}

}  // namespace hylo::kernels
