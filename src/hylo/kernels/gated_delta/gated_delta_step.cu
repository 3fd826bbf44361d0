// The gated delta rule token by token (decode), one pass over the state per token:
//   S' = alpha S;  err = beta (v - S' k);  S = S' + err k^T;  o = S (scale q),  alpha = exp(g).
// Rows of S (one value channel each, Dk wide) evolve independently given q, k, g, beta, so the work splits by
// rows: a warp owns kRowsPerWarp rows, each lane Dk/32 columns of them, held in registers across the tokens of
// the call. Lane l's columns are chosen so that every warp access is coalesced: for Dk a multiple of 128 lane l
// holds the float4 groups {l*4 + 128 m}, for Dk 64 the pair {2l, 2l+1}, otherwise {l + 32 j}. Per token and row two warp reductions give S'k and S'q; the readout uses
//   o = S q = alpha (S_old q) + err (k . q),
// so S is read once and written once per call, not per token. k . q is one more reduction per token, shared by
// all the warp's rows. The state is fp32 whatever the input dtype.
#include <c10/cuda/CUDAGuard.h>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/common/warp.cuh"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"

namespace hylo::kernels {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;

struct StepArgs {
  const void *q, *k, *v, *g, *beta;  // [B, T, H, Dk] x2, [B, T, H, Dv], [B, T, H] x2
  ElemType tq, tk, tv, tg, tb;
  const float* state_in;             // [B, H, Dv, Dk] or null (zeros)
  float* state_out;                  // [B, H, Dv, Dk] (may equal state_in)
  void* o;                           // [B, T, H, Dv] in v's dtype
  int64_t T, H, Dv;
  float scale;
};

// NPL = Dk / 32 columns per lane.
template <int NPL>
__global__ void __launch_bounds__(kWarps * 32) gated_delta_step_kernel(StepArgs a) {
  constexpr int Dk = NPL * 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y;  // b * H + h
  const int64_t b = bh / a.H, h = bh % a.H;
  const int64_t row0 = int64_t(blockIdx.x) * kRowsPerBlock + warp * kRowsPerWarp;

  float s[kRowsPerWarp][NPL];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r;
    const bool ok = a.state_in && row < a.Dv;
    const float* src = a.state_in + (bh * a.Dv + (ok ? row : 0)) * Dk;
    if constexpr (NPL % 4 == 0) {
#pragma unroll
      for (int m = 0; m < NPL / 4; ++m) {
        const float4 x = ok ? *reinterpret_cast<const float4*>(src + m * 128 + lane * 4) : make_float4(0, 0, 0, 0);
        s[r][4 * m] = x.x, s[r][4 * m + 1] = x.y, s[r][4 * m + 2] = x.z, s[r][4 * m + 3] = x.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < NPL; ++j) s[r][j] = ok ? src[lane_col<NPL>(lane, j)] : 0.0f;
    }
  }

  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t tok = (b * a.T + t) * a.H + h;  // index into [B, T, H]
    float qv[NPL], kv[NPL];
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      qv[j] = load_as_float(a.q, tok * Dk + lane_col<NPL>(lane, j), a.tq) * a.scale;
      kv[j] = load_as_float(a.k, tok * Dk + lane_col<NPL>(lane, j), a.tk);
    }
    const float alpha = __expf(load_as_float(a.g, tok, a.tg));
    const float beta = load_as_float(a.beta, tok, a.tb);
    float kq = 0.0f;
#pragma unroll
    for (int j = 0; j < NPL; ++j) kq += kv[j] * qv[j];
    kq = warp_sum(kq);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = row0 + r;
      float sk = 0.0f, sq = 0.0f;
#pragma unroll
      for (int j = 0; j < NPL; ++j) {
        sk += s[r][j] * kv[j];
        sq += s[r][j] * qv[j];
      }
      sk = warp_sum(sk);
      sq = warp_sum(sq);
      const float vr = row < a.Dv ? load_as_float(a.v, tok * a.Dv + row, a.tv) : 0.0f;
      const float err = beta * (vr - alpha * sk);
#pragma unroll
      for (int j = 0; j < NPL; ++j) s[r][j] = alpha * s[r][j] + err * kv[j];
      if (lane == 0 && row < a.Dv) store_from_float(a.o, tok * a.Dv + row, a.tv, alpha * sq + err * kq);
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r;
    if (row >= a.Dv) continue;
    float* dst = a.state_out + (bh * a.Dv + row) * Dk;
    if constexpr (NPL % 4 == 0) {
#pragma unroll
      for (int m = 0; m < NPL / 4; ++m)
        *reinterpret_cast<float4*>(dst + m * 128 + lane * 4) =
            make_float4(s[r][4 * m], s[r][4 * m + 1], s[r][4 * m + 2], s[r][4 * m + 3]);
    } else {
#pragma unroll
      for (int j = 0; j < NPL; ++j) dst[lane_col<NPL>(lane, j)] = s[r][j];
    }
  }
}

bool dtype_ok(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

}  // namespace

bool gated_delta_step_cuda_supports(const at::Tensor& q, const at::Tensor& v, const at::Tensor& initial_state) {
  const int64_t Dk = q.size(3);
  return q.is_cuda() && Dk % 32 == 0 && Dk >= 32 && Dk <= 256 && dtype_ok(q) && dtype_ok(v) &&
         (!initial_state.defined() || initial_state.scalar_type() == at::kFloat);
}

GatedDeltaOutput gated_delta_step_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                       const at::Tensor& g_in, const at::Tensor& beta_in, double scale,
                                       const at::Tensor& initial_state, at::Tensor state_out) {
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();  // [B,T,H,D*]
  const at::Tensor g = g_in.contiguous(), beta = beta_in.contiguous();                      // [B, T, H]
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  const at::Tensor s_in = initial_state.defined() ? initial_state.contiguous() : at::Tensor();  // [B,H,Dv,Dk]
  if (!state_out.defined() || !state_out.is_contiguous())
    state_out = empty_output({B, H, Dv, Dk}, q.options().dtype(at::kFloat));
  at::Tensor o = empty_output({B, T, H, Dv}, v.options());  // [B, T, H, Dv]

  StepArgs a;
  a.q = q.data_ptr(), a.k = k.data_ptr(), a.v = v.data_ptr(), a.g = g.data_ptr(), a.beta = beta.data_ptr();
  a.tq = elem_type(q, "gated_delta_step_cuda q"), a.tk = elem_type(k, "gated_delta_step_cuda k");
  a.tv = elem_type(v, "gated_delta_step_cuda v"), a.tg = elem_type(g, "gated_delta_step_cuda g");
  a.tb = elem_type(beta, "gated_delta_step_cuda beta");
  a.state_in = s_in.defined() ? s_in.data_ptr<float>() : nullptr;
  a.state_out = state_out.data_ptr<float>();
  a.o = o.data_ptr();
  a.T = T, a.H = H, a.Dv = Dv;
  a.scale = static_cast<float>(scale);
  const dim3 grid(unsigned((Dv + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(B * H));
  const cudaStream_t stream = current_stream();
  switch (Dk / 32) {
    case 1: gated_delta_step_kernel<1><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 2: gated_delta_step_kernel<2><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 3: gated_delta_step_kernel<3><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 4: gated_delta_step_kernel<4><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 5: gated_delta_step_kernel<5><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 6: gated_delta_step_kernel<6><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 7: gated_delta_step_kernel<7><<<grid, kWarps * 32, 0, stream>>>(a); break;
    case 8: gated_delta_step_kernel<8><<<grid, kWarps * 32, 0, stream>>>(a); break;
    default: throw Error("gated_delta_step_cuda: Dk " + std::to_string(Dk) + " unsupported (multiple of 32, <= 256)");
  }
  check_launch("gated_delta_step_cuda");
  return {o, state_out};
}

}  // namespace hylo::kernels
