// Mamba2's SSD scan in chunked form (prefill), the same algorithm as the ATen ssd_chunk (ops/ssd.cpp) with a
// fixed chunk of kChunk tokens, in three launches:
//   1. chunk_state_kernel, chunks x heads in parallel: each chunk's end state from a zero start,
//        local_c = sum_s exp(sum_{k>s} dA_k) (dt_s x_s) B_s^T        [P, N]
//      and the chunk's total decay exp(sum_k dA_k)  (dA = dt A).
//   2. state_pass_kernel, one thread per state element and head, serial over chunks: the state entering chunk c,
//        S_0 = initial state,  S_{c+1} = exp(sum of chunk c's dA) S_c + local_c,
//      written over local_c in place; the last one is the final state.
//   3. chunk_output_kernel, chunks x heads in parallel: inside the chunk the masked quadratic form plus the
//      entering state read out through C,
//        y_i = sum_{j<=i} (C_i . B_j) exp(sum_{j<k<=i} dA_k) dt_j x_j + exp(sum_{k<=i} dA_k) S_c C_i + D x_i.
// Every log-decay is a direct running sum over the exact range it spans (as the ATen form), never a difference
// of two prefix sums, which would lose |prefix| * eps to cancellation in fast-decaying heads. A tail chunk is
// shorter (its missing tokens contribute nothing, which equals the ATen form's dt = 0 padding).
// All arithmetic is fp32 on CUDA cores with the chunk's operands staged in shared memory: a first, plain form
// (a tensor-core form is future work; docs/kernels.md).
#include <c10/cuda/CUDAGuard.h>

#include <string>
#include <utility>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/common/dtype_io.cuh"
#include "hylo/kernels/ssd/ssd_chunk_common.cuh"
#include "hylo/kernels/ssd/ssd_cuda.h"
#include "hylo/kernels/ssd/ssd_inputs.cuh"

namespace hylo::kernels {

namespace {

using ssd::ChunkPos;
using ssd::SsdArgs;
using ssd::chunk_pos;
using ssd::load_rows;
using ssd::load_steps;
using ssd::sum_row_outer_products;

constexpr int kChunk = ssd::kChunk;  // Q: tokens per chunk
constexpr int kThreads = 256;   // every launch
constexpr int kMaxDim = 128;    // P and N bound: the output kernel's shared memory (below) must fit in 227 KB

// Grid (chunks, B * H). states [BH, nc, P, N] fp32 receives local_c; chunk_decay [BH, nc] fp32.
// Shared: xdt [kChunk][P], Bw [kChunk][N], dts/dAs [kChunk], w [kChunk].
__global__ void __launch_bounds__(kThreads) chunk_state_kernel(SsdArgs a, float* states, float* chunk_decay) {
  extern __shared__ float smem[];
  const ChunkPos p = chunk_pos(a);
  const int64_t P = a.P, N = a.N, nc = gridDim.x;
  float* xdt = smem;                  // [kChunk][P]  dt_s x_s
  float* Bw = xdt + kChunk * P;       // [kChunk][N]  exp(sum_{k>s} dA_k) B_s
  float* dts = Bw + kChunk * N;       // [kChunk]
  float* dAs = dts + kChunk;          // [kChunk]
  float* w = dAs + kChunk;            // [kChunk]    exp(sum_{k>s} dA_k)
  load_steps(a, p, dts, dAs);
  if (threadIdx.x == 0) {
    // Running sums in the ATen form's order: to the end from the last token backwards, and the chunk total.
    float to_end = 0.0f;
    for (int s = p.len - 1; s >= 0; --s) {
      w[s] = expf(to_end);
      to_end += dAs[s];
    }
    float total = 0.0f;
    for (int s = 0; s < p.len; ++s) total += dAs[s];
    chunk_decay[p.bh * nc + p.c] = expf(total);
  }
  __syncthreads();
  load_rows(xdt, int(P), a.x, a.tx, p, a, a.H, p.h, P, dts);
  load_rows(Bw, int(N), a.B, a.tB, p, a, a.G, p.h / (a.H / a.G), N, w);
  __syncthreads();
  // local[pp][n] = sum_s xdt[s][pp] Bw[s][n].
  sum_row_outer_products(states + (p.bh * nc + p.c) * P * N, xdt, P, Bw, N, p.len);
}

// Grid (ceil(P N / kThreads), B * H). states [BH, nc, P, N]: local_c in, the state entering chunk c out.
// init [BH, P, N] or null (zeros); final_state [BH, P, N].
__global__ void __launch_bounds__(kThreads)
    state_pass_kernel(float* states, const float* chunk_decay, const float* init, float* final_state, int64_t PN,
                      int64_t nc) {
  const int64_t bh = blockIdx.y, e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= PN) return;
  float S = init ? init[bh * PN + e] : 0.0f;
  for (int64_t c = 0; c < nc; ++c) {
    float* slot = states + (bh * nc + c) * PN + e;
    const float local = *slot;
    *slot = S;
    S = chunk_decay[bh * nc + c] * S + local;
  }
  final_state[bh * PN + e] = S;
}

// Rows padded by one float where a warp reads down a column (B, C rows by j or pp; the state by pp).
__host__ __device__ constexpr int64_t output_smem_floats(int64_t P, int64_t N) {
  return 2 * kChunk * (N + 1) + kChunk * P + kChunk * (kChunk + 1) + P * (N + 1) + 3 * kChunk;
}

// Grid (chunks, B * H). states [BH, nc, P, N] entering states; y [B, T, H, P] in x's dtype.
// Shared: Cs/Bs [kChunk][N+1], xdt [kChunk][P], Ls [kChunk][kChunk+1], Sp [P][N+1], dts/dAs/decay_in [kChunk].
__global__ void __launch_bounds__(kThreads) chunk_output_kernel(SsdArgs a, const float* states, void* y) {
  extern __shared__ float smem[];
  const ChunkPos p = chunk_pos(a);
  const int64_t P = a.P, N = a.N, nc = gridDim.x;
  const int ldn = int(N) + 1, ldq = kChunk + 1;
  float* Cs = smem;                      // [kChunk][N+1]   C_i
  float* Bs = Cs + kChunk * ldn;         // [kChunk][N+1]   B_j
  float* xdt = Bs + kChunk * ldn;        // [kChunk][P]     dt_j x_j
  float* Ls = xdt + kChunk * P;          // [kChunk][Q+1]   decay mask, then scores
  float* Sp = Ls + kChunk * ldq;         // [P][N+1]        the state entering the chunk
  float* dts = Sp + P * ldn;             // [kChunk]
  float* dAs = dts + kChunk;             // [kChunk]
  float* decay_in = dAs + kChunk;        // [kChunk]        exp(sum_{k<=i} dA_k)
  load_steps(a, p, dts, dAs);
  load_rows(Cs, ldn, a.C, a.tC, p, a, a.Gc, p.h / (a.H / a.Gc), N, nullptr);
  load_rows(Bs, ldn, a.B, a.tB, p, a, a.G, p.h / (a.H / a.G), N, nullptr);
  load_rows(xdt, int(P), a.x, a.tx, p, a, a.H, p.h, P, dts);
  const float* S_in = states + (p.bh * nc + p.c) * P * N;
  for (int64_t o = threadIdx.x; o < P * N; o += blockDim.x) Sp[(o / N) * ldn + o % N] = S_in[o];
  // Column j of the decay mask as a running sum down the column (the ATen form's cumsum over k > j):
  // L[i][j] = exp(sum_{j<k<=i} dA_k) for i >= j, 0 above the diagonal. One thread per column.
  for (int j = threadIdx.x; j < kChunk; j += blockDim.x) {
    float seg = 0.0f;
    for (int i = 0; i < p.len; ++i) {
      if (i > j) seg += dAs[i];
      Ls[i * ldq + j] = i >= j ? expf(seg) : 0.0f;
    }
  }
  if (threadIdx.x == 0) {
    float acs = 0.0f;
    for (int i = 0; i < p.len; ++i) {
      acs += dAs[i];
      decay_in[i] = expf(acs);
    }
  }
  __syncthreads();
  // Scores: L[i][j] (C_i . B_j) for j <= i. A warp spans consecutive j (rows of Bs, padded) for one i (Cs
  // broadcast); each element is rewritten by the thread that reads it.
  for (int o = threadIdx.x; o < p.len * kChunk; o += blockDim.x) {
    const int i = o / kChunk, j = o % kChunk;
    if (j > i || j >= p.len) continue;
    float dot = 0.0f;
    for (int64_t n = 0; n < N; ++n) dot += Cs[i * ldn + n] * Bs[j * ldn + n];
    Ls[i * ldq + j] *= dot;
  }
  __syncthreads();
  // y[i][pp]: the intra-chunk sum, then the entering state through C_i, then D x. A warp spans consecutive pp.
  const float D_h = a.D ? load_as_float(a.D, p.h, a.tD) : 0.0f;
  for (int64_t o = threadIdx.x; o < int64_t(p.len) * P; o += blockDim.x) {
    const int i = int(o / P);
    const int64_t pp = o % P;
    float intra = 0.0f;
    for (int j = 0; j <= i; ++j) intra += Ls[i * ldq + j] * xdt[j * P + pp];
    float from_state = 0.0f;
    for (int64_t n = 0; n < N; ++n) from_state += Cs[i * ldn + n] * Sp[pp * ldn + n];
    const int64_t at = ((p.b * a.T + p.t0 + i) * a.H + p.h) * P + pp;  // [B, T, H, P]
    const float xv = load_as_float(a.x, at, a.tx);
    store_from_float(y, at, a.tx, (intra + from_state * decay_in[i]) + D_h * xv);
  }
}

}  // namespace

bool ssd_chunk_cuda_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const at::Tensor& D, const at::Tensor& state) {
  const int64_t T = x.size(1), P = x.size(3), N = B.size(-1);
  return T >= 1 && P >= 1 && P <= kMaxDim && N >= 1 && N <= kMaxDim && x.size(0) * x.size(2) <= 65535 &&
         ssd::inputs_ok({&x, &dt, &A, &B, &C, &D}, state);
}

namespace {

// Reserves `bytes` of dynamic shared memory for `kernel` (above 48 KB a kernel must opt in).
void reserve_smem(const void* kernel, size_t bytes, const char* who, int64_t P, int64_t N) {
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess)
    throw Error(std::string(who) + ": cannot reserve " + std::to_string(bytes) + " bytes of shared memory (P=" +
                std::to_string(P) + ", N=" + std::to_string(N) + "): " + cudaGetErrorString(e));
}

}  // namespace

namespace ssd {

ChunkStates chunk_states(const SsdArgs& a, const at::Tensor& init, const at::TensorOptions& f32) {
  const int64_t BH = a.batch * a.H, nc = (a.T + kChunk - 1) / kChunk, PN = a.P * a.N;
  ChunkStates out;
  out.final_state = empty_output({a.batch, a.H, a.P, a.N}, f32);  // [B, H, P, N]
  // Intermediates are poisoned too (in tests): a chunk the first kernel failed to write shows up as NaN.
  out.states = empty_output({BH, nc, a.P, a.N}, f32);  // [BH, nc, P, N] local_c, then entering states
  out.chunk_decay = empty_output({BH, nc}, f32);      // [BH, nc]
  if (BH == 0) return out;
  const cudaStream_t stream = current_stream();
  const dim3 chunks{unsigned(nc), unsigned(BH)};  // braces: unsigned(nc) would parse as a declaration
  const size_t state_smem = sizeof(float) * size_t(kChunk * (a.P + a.N) + 3 * kChunk);
  reserve_smem(reinterpret_cast<const void*>(chunk_state_kernel), state_smem, "ssd_chunk_cuda", a.P, a.N);
  chunk_state_kernel<<<chunks, kThreads, state_smem, stream>>>(a, out.states.data_ptr<float>(),
                                                               out.chunk_decay.data_ptr<float>());
  check_launch("ssd_chunk_cuda chunk_state_kernel");
  const dim3 pass_grid(unsigned((PN + kThreads - 1) / kThreads), unsigned(BH));
  state_pass_kernel<<<pass_grid, kThreads, 0, stream>>>(out.states.data_ptr<float>(),
                                                        out.chunk_decay.data_ptr<float>(),
                                                        init.defined() ? init.data_ptr<float>() : nullptr,
                                                        out.final_state.data_ptr<float>(), PN, nc);
  check_launch("ssd_chunk_cuda state_pass_kernel");
  return out;
}

}  // namespace ssd

SsdOutput ssd_chunk_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                         const at::Tensor& C, const at::Tensor& D, const at::Tensor& state) {
  const c10::cuda::CUDAGuard guard(x.device());
  const ssd::SsdInputs in = ssd::gather_inputs("ssd_chunk_cuda", x, dt, A, B, C, D);
  const SsdArgs& a = in.args;
  if (a.P > kMaxDim || a.N > kMaxDim || a.T < 1)
    throw Error("ssd_chunk_cuda: need T >= 1 and P, N <= " + std::to_string(kMaxDim) + ", got T=" +
                std::to_string(a.T) + " P=" + std::to_string(a.P) + " N=" + std::to_string(a.N));
  const int64_t BH = a.batch * a.H, nc = (a.T + kChunk - 1) / kChunk;
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor y = empty_output({a.batch, a.T, a.H, a.P}, x.options());  // [B, T, H, P]
  const at::Tensor init = state.defined() ? state.contiguous() : at::Tensor();  // [B, H, P, N]
  // Kernels 1 and 2: the states entering each chunk (written over the chunks' local states) and the final state.
  const ssd::ChunkStates cs = ssd::chunk_states(a, init, f32);
  if (BH == 0) return {y, cs.final_state};

  const cudaStream_t stream = current_stream();
  const dim3 chunks{unsigned(nc), unsigned(BH)};
  // The output kernel needs up to 182 KB of shared memory at P = N = 128.
  const size_t output_smem = sizeof(float) * size_t(output_smem_floats(a.P, a.N));
  reserve_smem(reinterpret_cast<const void*>(chunk_output_kernel), output_smem, "ssd_chunk_cuda", a.P, a.N);
  chunk_output_kernel<<<chunks, kThreads, output_smem, stream>>>(a, cs.states.data_ptr<float>(), y.data_ptr());
  check_launch("ssd_chunk_cuda chunk_output_kernel");
  return {y, cs.final_state};
}

}  // namespace hylo::kernels
