#include "hylo/ops/gated_delta.h"

#include <ATen/core/grad_mode.h>

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"
#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"
#endif

namespace hylo {

namespace {

std::string dims(const at::Tensor& t) { return c10::str(t.sizes()); }

// The inputs of all three forms in head-major layout and compute precision (fp64 for fp64 inputs, else fp32).
struct HeadMajor {
  int64_t B, T, H, Dk, Dv;
  at::ScalarType ct;
  at::Tensor q, k, v;   // [B, H, T, Dk], [B, H, T, Dk], [B, H, T, Dv]
  at::Tensor g, beta;   // [B, H, T]
  at::Tensor state;     // [B, H, Dv, Dk]
};

// Shape checks shared by the three forms (and done before any CUDA kernel is chosen).
HeadMajor check_shapes(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& g, const at::Tensor& beta, const at::Tensor& initial_state) {
  const std::string who = std::string(op) + ": ";
  if (q.dim() != 4) throw Error(who + "q must be [B, T, H, Dk], got " + dims(q));
  HeadMajor in;
  in.B = q.size(0), in.T = q.size(1), in.H = q.size(2), in.Dk = q.size(3);
  if (in.T < 1) throw Error(who + "need at least one token, q is " + dims(q));
  if (!k.sizes().equals(q.sizes())) throw Error(who + "k must match q " + dims(q) + ", got " + dims(k));
  if (v.dim() != 4 || v.size(0) != in.B || v.size(1) != in.T || v.size(2) != in.H)
    throw Error(who + "v must be [B, T, H, Dv] with B, T, H of q " + dims(q) + ", got " + dims(v));
  in.Dv = v.size(3);
  const std::vector<int64_t> bth = {in.B, in.T, in.H};
  if (!g.sizes().equals(bth)) throw Error(who + "g must be [B, T, H] = " + c10::str(bth) + ", got " + dims(g));
  if (!beta.sizes().equals(bth))
    throw Error(who + "beta must be [B, T, H] = " + c10::str(bth) + ", got " + dims(beta));
  const std::vector<int64_t> sshape = {in.B, in.H, in.Dv, in.Dk};
  if (initial_state.defined() && !initial_state.sizes().equals(sshape))
    throw Error(who + "initial_state must be [B, H, Dv, Dk] = " + c10::str(sshape) + ", got " + dims(initial_state));
  return in;
}

HeadMajor prepare(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& g, const at::Tensor& beta, const at::Tensor& initial_state) {
  HeadMajor in = check_shapes(op, q, k, v, g, beta, initial_state);
  const std::vector<int64_t> sshape = {in.B, in.H, in.Dv, in.Dk};
  in.ct = compute_type(v.scalar_type());
  in.q = q.to(in.ct).transpose(1, 2);
  in.k = k.to(in.ct).transpose(1, 2);
  in.v = v.to(in.ct).transpose(1, 2);
  in.g = g.to(in.ct).transpose(1, 2);
  in.beta = beta.to(in.ct).transpose(1, 2);
  in.state = initial_state.defined() ? initial_state.to(in.ct)
                                     : at::zeros(sshape, v.options().dtype(in.ct));
  return in;
}

// [B, H, T, Dv] compute dtype -> [B, T, H, Dv] in the dtype of v.
at::Tensor finish_output(const at::Tensor& o_hm, at::ScalarType out_type) {
  return o_hm.transpose(1, 2).contiguous().to(out_type);
}

// One token of the gated delta rule, updating S in place of the caller's handle and returning the readout:
//   S_t = alpha S_{t-1} (I - beta k k^T) + beta v k^T,   o_t = S_t (scale q),   alpha = exp(g).
// Evaluated as S' = alpha S; S_t = S' + beta (v - S' k) k^T (the same matrix, expanded): decay, read the
// prediction S' k, write the error along k -- one pass over S, the shape of the fused decode kernel.
at::Tensor delta_step(at::Tensor& S, const HeadMajor& in, int64_t t, double scale) {
  S = S * in.g.select(2, t).exp().unsqueeze(-1).unsqueeze(-1);               // [B, H, Dv, Dk]
  at::Tensor kt = in.k.select(2, t).unsqueeze(-1);                            // [B, H, Dk, 1]
  at::Tensor err = (in.v.select(2, t).unsqueeze(-1) - at::matmul(S, kt)) *
                   in.beta.select(2, t).unsqueeze(-1).unsqueeze(-1);          // [B, H, Dv, 1]
  S = S + at::matmul(err, kt.transpose(-1, -2));                              // [B, H, Dv, Dk]
  return at::matmul(S, (in.q.select(2, t) * scale).unsqueeze(-1)).squeeze(-1);  // [B, H, Dv]
}

// The token-by-token form shared by gated_delta_naive (the oracle) and gated_delta_recurrent (decode).
GatedDeltaOutput token_loop(const HeadMajor& in, double scale, at::ScalarType out_type) {
  at::Tensor S = in.state;  // [B, H, Dv, Dk]
  std::vector<at::Tensor> outs;
  outs.reserve(in.T);
  for (int64_t t = 0; t < in.T; ++t) outs.push_back(delta_step(S, in, t, scale));  // [B, H, Dv] each
  return {finish_output(at::stack(outs, 2), out_type), S};                        // o [B, T, H, Dv]
}

#ifdef HYLO_HAVE_CUDA
// The step kernel has no backward: it runs only when no input needs a gradient (inference, or under NoGradGuard).
// The chunk kernel has one: when a gradient is needed it runs as gated_delta_chunk_autograd. Everything else --
// CPU tensors, unsupported shapes or dtypes, chunk sizes other than 64 -- takes the ATen forms, which run on the
// tensors' own device (never a silent copy to the CPU).
// HYLO_GDN_KERNEL_BACKWARD=0 sends chunked calls that need a gradient to the ATen form instead of the autograd kernel:
// the escape hatch for a training run when the backward kernel is suspected (the ATen form is slower, not different).
bool backward_kernel_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("HYLO_GDN_KERNEL_BACKWARD");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

bool needs_grad(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : ts)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}
#endif

}  // namespace

GatedDeltaOutput gated_delta_naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& g, const at::Tensor& beta, double scale,
                                   const at::Tensor& initial_state) {
  return token_loop(prepare("gated_delta_naive", q, k, v, g, beta, initial_state), scale, v.scalar_type());
}

GatedDeltaOutput gated_delta_recurrent(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& g, const at::Tensor& beta, double scale,
                                       const at::Tensor& initial_state) {
#ifdef HYLO_HAVE_CUDA
  if (q.is_cuda()) {
    check_shapes("gated_delta_recurrent", q, k, v, g, beta, initial_state);
    if (kernels::gated_delta_step_cuda_supports(q, v, initial_state) &&
        !needs_grad({&q, &k, &v, &g, &beta, &initial_state}))
      return kernels::gated_delta_step_cuda(q, k, v, g, beta, scale, initial_state);
  }
#endif
  return token_loop(prepare("gated_delta_recurrent", q, k, v, g, beta, initial_state), scale, v.scalar_type());
}

GatedDeltaOutput gated_delta_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& g, const at::Tensor& beta, double scale,
                                   const at::Tensor& initial_state, int64_t chunk_size) {
  if (chunk_size < 1) throw Error("gated_delta_chunk: chunk_size must be >= 1, got " + std::to_string(chunk_size));
#ifdef HYLO_HAVE_CUDA
  if (q.is_cuda() && chunk_size == 64) {  // the kernel's chunk; other sizes are the same function, left to ATen
    check_shapes("gated_delta_chunk", q, k, v, g, beta, initial_state);
    if (kernels::gated_delta_chunk_cuda_supports(q, v, initial_state)) {
      if (!needs_grad({&q, &k, &v, &g, &beta, &initial_state}))
        return kernels::gated_delta_chunk_cuda(q, k, v, g, beta, scale, initial_state);
      if (backward_kernel_enabled())
        return kernels::gated_delta_chunk_autograd(q, k, v, g, beta, scale, initial_state);
    }
  }
#endif
  HeadMajor in = prepare("gated_delta_chunk", q, k, v, g, beta, initial_state);
  const int64_t B = in.B, H = in.H, T = in.T, Dk = in.Dk, Dv = in.Dv;
  const int64_t C = std::min(chunk_size, T);
  const int64_t N = (T + C - 1) / C;
  const int64_t pad = N * C - T;
  // Padding tokens have g = 0, beta = 0, k = v = 0: they leave the state unchanged (alpha = 1, no write), so the
  // final state is exact and their outputs are simply cut off.
  auto pad_time = [&](const at::Tensor& x) {  // [B, H, T, D] or [B, H, T]
    if (pad == 0) return x;
    return x.dim() == 4 ? at::constant_pad_nd(x, {0, 0, 0, pad}) : at::constant_pad_nd(x, {0, pad});
  };
  at::Tensor Q = pad_time(in.q).reshape({B, H, N, C, Dk}) * scale;   // [B, H, N, C, Dk]
  at::Tensor K = pad_time(in.k).reshape({B, H, N, C, Dk});           // [B, H, N, C, Dk]
  at::Tensor V = pad_time(in.v).reshape({B, H, N, C, Dv});           // [B, H, N, C, Dv]
  at::Tensor Bt = pad_time(in.beta).reshape({B, H, N, C, 1});        // [B, H, N, C, 1]
  at::Tensor gam = pad_time(in.g).reshape({B, H, N, C}).cumsum(-1);  // [B, H, N, C] in-chunk cumulative log decay

  at::TensorOptions bopt = in.q.options().dtype(at::kBool);
  at::Tensor upper = at::ones({C, C}, bopt).triu(1);                 // [C, C] j > i
  at::Tensor not_strict_lower = at::ones({C, C}, bopt).triu(0);      // [C, C] j >= i
  // Gamma_ij = exp(gamma_i - gamma_j) for j <= i, else 0 (masked before exp so the j > i entries cannot overflow).
  at::Tensor Gamma = (gam.unsqueeze(-1) - gam.unsqueeze(-2)).masked_fill(upper, -INFINITY).exp();  // [B,H,N,C,C]

  // UT transform: (I + A) with A = strictly-lower(diag(beta) (K K^T o Gamma)) turns the chunk's C sequential
  // rank-1 delta updates into W = (I + A)^-1 (beta o exp(gamma) o K) and U = (I + A)^-1 (beta o V), one
  // unit-lower-triangular solve for both right-hand sides.
  at::Tensor A = (Bt * at::matmul(K, K.transpose(-1, -2)) * Gamma).masked_fill(not_strict_lower, 0.0);  // [B,H,N,C,C]
  at::Tensor IA = A + at::eye(C, in.q.options());                                                      // [B,H,N,C,C]
  at::Tensor rhs = at::cat({Bt * gam.exp().unsqueeze(-1) * K, Bt * V}, -1);                            // [B,H,N,C,Dk+Dv]
  at::Tensor WU = at::linalg_solve_triangular(IA, rhs, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
  at::Tensor W = WU.narrow(-1, 0, Dk);                                                                 // [B,H,N,C,Dk]
  at::Tensor U = WU.narrow(-1, Dk, Dv);                                                                // [B,H,N,C,Dv]

  at::Tensor intra = at::matmul(Q, K.transpose(-1, -2)) * Gamma;            // [B, H, N, C, C] causal, diagonal kept
  at::Tensor Q_dec = Q * gam.exp().unsqueeze(-1);                           // [B, H, N, C, Dk]
  at::Tensor g_last = gam.narrow(-1, C - 1, 1);                             // [B, H, N, 1]
  at::Tensor K_dec = K * (g_last - gam).exp().unsqueeze(-1);                // [B, H, N, C, Dk]
  at::Tensor chunk_decay = g_last.exp().unsqueeze(-1);                      // [B, H, N, 1, 1]

  // The serial part: per chunk, the prediction errors given the incoming state, the outputs, the next state.
  at::Tensor S = in.state;                                                  // [B, H, Dv, Dk]
  std::vector<at::Tensor> outs;
  outs.reserve(N);
  for (int64_t n = 0; n < N; ++n) {
    at::Tensor St = S.transpose(-1, -2);                                    // [B, H, Dk, Dv]
    at::Tensor v_new = U.select(2, n) - at::matmul(W.select(2, n), St);     // [B, H, C, Dv]
    outs.push_back(at::matmul(Q_dec.select(2, n), St) + at::matmul(intra.select(2, n), v_new));  // [B, H, C, Dv]
    S = chunk_decay.select(2, n) * S + at::matmul(v_new.transpose(-1, -2), K_dec.select(2, n));  // [B, H, Dv, Dk]
  }
  at::Tensor o = at::cat(outs, 2).narrow(2, 0, T);                          // [B, H, T, Dv]
  return {finish_output(o, v.scalar_type()), S};
}

}  // namespace hylo
