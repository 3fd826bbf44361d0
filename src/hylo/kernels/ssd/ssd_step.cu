// Mamba2's SSD recurrence token by token (decode), per batch b and head h with state S [P, N]:
//   S = exp(dt A) S + (dt x) B^T;   y = S C + D x        (x [P], B and C [N] of the head's groups)
// Rows of S (one x channel p each, N wide) evolve independently given dt, B and C, so the work splits by rows:
// a warp owns kRowsPerWarp rows, each lane N/32 columns of them, held in registers across the tokens of the call.
// Lane l's columns are chosen so that every warp access is coalesced: for N a multiple of 128 lane l holds the
// float4 groups {l*4 + 128 m}, for N 64 the pair {2l, 2l+1}, otherwise {l + 32 j}. Per token and row one warp
// reduction gives S C. The state is read once and written once per call, fp32 whatever the input dtype, and all
// arithmetic is fp32 in the ATen form's order (decay first, then the rank-1 input, then the readout).
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/common/warp.cuh"
#include "hylo/kernels/ssd/ssd_cuda.h"
#include "hylo/kernels/ssd/ssd_inputs.cuh"

namespace hylo::kernels {

namespace {

using ssd::SsdArgs;

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;

// Grid (ceil(P / kRowsPerBlock), B * H); NPL = N / 32 columns per lane.
template <int NPL>
__global__ void __launch_bounds__(kWarps * 32)
    ssd_step_kernel(SsdArgs a, const float* state_in, float* state_out, void* y) {
  constexpr int N = NPL * 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y;  // b * H + h
  const int64_t b = bh / a.H, h = bh % a.H;
  const int64_t gb = h / (a.H / a.G), gc = h / (a.H / a.Gc);  // the head's B and C groups (repeat_kv order)
  const int64_t row0 = int64_t(blockIdx.x) * kRowsPerBlock + warp * kRowsPerWarp;

  float s[kRowsPerWarp][NPL];  // rows row0 .. row0 + kRowsPerWarp - 1 of S [P, N], this lane's columns
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r;
    const bool ok = state_in != nullptr && row < a.P;
    const float* src = state_in + (bh * a.P + (ok ? row : 0)) * N;
    if constexpr (NPL % 4 == 0) {
#pragma unroll
      for (int m = 0; m < NPL / 4; ++m) {
        const float4 v = ok ? *reinterpret_cast<const float4*>(src + m * 128 + lane * 4) : make_float4(0, 0, 0, 0);
        s[r][4 * m] = v.x, s[r][4 * m + 1] = v.y, s[r][4 * m + 2] = v.z, s[r][4 * m + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < NPL; ++j) s[r][j] = ok ? src[lane_col<NPL>(lane, j)] : 0.0f;
    }
  }

  const float A_h = load_as_float(a.A, h, a.tA);
  const float D_h = a.D ? load_as_float(a.D, h, a.tD) : 0.0f;
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t bt = b * a.T + t;
    const int64_t tok = bt * a.H + h;  // index into [B, T, H]
    const float dt = load_as_float(a.dt, tok, a.tdt);
    const float decay = expf(dt * A_h);
    float bv[NPL], cv[NPL];
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      bv[j] = load_as_float(a.B, (bt * a.G + gb) * N + lane_col<NPL>(lane, j), a.tB);
      cv[j] = load_as_float(a.C, (bt * a.Gc + gc) * N + lane_col<NPL>(lane, j), a.tC);
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = row0 + r;
      const float xr = row < a.P ? load_as_float(a.x, tok * a.P + row, a.tx) : 0.0f;
      const float xdt = xr * dt;
      float sc = 0.0f;
#pragma unroll
      for (int j = 0; j < NPL; ++j) {
        s[r][j] = decay * s[r][j] + xdt * bv[j];
        sc += s[r][j] * cv[j];
      }
      sc = warp_sum(sc);
      if (lane == 0 && row < a.P) store_from_float(y, tok * a.P + row, a.tx, sc + D_h * xr);
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r;
    if (row >= a.P) continue;
    float* dst = state_out + (bh * a.P + row) * N;
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

}  // namespace

bool ssd_step_cuda_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const at::Tensor& D, const at::Tensor& state) {
  const int64_t N = B.size(-1);
  // B * H is the grid's y extent (at most 65535).
  return N % 32 == 0 && N >= 32 && N <= 256 && x.size(0) * x.size(-2) <= 65535 &&
         ssd::inputs_ok({&x, &dt, &A, &B, &C, &D}, state);
}

SsdOutput ssd_step_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const at::Tensor& D, const at::Tensor& state, at::Tensor state_out) {
  const c10::cuda::CUDAGuard guard(x.device());
  const ssd::SsdInputs in = ssd::gather_inputs("ssd_step_cuda", x, dt, A, B, C, D);
  const SsdArgs& a = in.args;
  const at::Tensor s_in = state.defined() ? state.contiguous() : at::Tensor();  // [B, H, P, N]
  if (!state_out.defined() || !state_out.is_contiguous() || state_out.scalar_type() != at::kFloat)
    state_out = empty_output({a.batch, a.H, a.P, a.N}, x.options().dtype(at::kFloat));
  at::Tensor y = empty_output({a.batch, a.T, a.H, a.P}, x.options());  // [B, T, H, P]
  if (a.T == 0 || a.batch * a.H == 0) {  // nothing to run; the state passes through
    if (s_in.defined()) state_out.copy_(s_in); else state_out.zero_();
    return {y, state_out};
  }
  const float* sp = s_in.defined() ? s_in.data_ptr<float>() : nullptr;
  float* so = state_out.data_ptr<float>();
  const dim3 grid(unsigned((a.P + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(a.batch * a.H));
  const cudaStream_t stream = current_stream();
  switch (a.N / 32) {
    case 1: ssd_step_kernel<1><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 2: ssd_step_kernel<2><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 3: ssd_step_kernel<3><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 4: ssd_step_kernel<4><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 5: ssd_step_kernel<5><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 6: ssd_step_kernel<6><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 7: ssd_step_kernel<7><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    case 8: ssd_step_kernel<8><<<grid, kWarps * 32, 0, stream>>>(a, sp, so, y.data_ptr()); break;
    default:
      throw Error("ssd_step_cuda: d_state " + std::to_string(a.N) + " unsupported (a multiple of 32, <= 256)");
  }
  check_launch("ssd_step_cuda");
  return {y, state_out};
}

}  // namespace hylo::kernels
