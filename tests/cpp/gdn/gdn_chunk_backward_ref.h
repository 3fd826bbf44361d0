// The chunked backward of the gated delta rule written out by hand in ATen, in exactly the decomposition the CUDA
// backward (kernels/gated_delta/gated_delta_chunk_bwd.cu) uses: the per-chunk local part of d v_new, the serial
// reverse walk over chunks for dh, the per-chunk gradients of q, k and the decay from h, dh, v_new, d v_new, and the
// UT-transform backward. Autograd through ops::gated_delta_chunk is the oracle; this file exists so the CPU tests
// pin each formula the kernels implement (gated_delta_chunk_backward_test.cpp: equal to autograd in fp64).
//
// Per head and chunk (C tokens, in-chunk cumulative log decay gamma, gamma_C its last value, Q' = scale Q,
// Gamma_ij = e^(gamma_i - gamma_j) for j <= i else 0, M strictly lower, h the state entering the chunk):
//   forward   A = M o (diag(beta) K K^T o Gamma); T = (I + A)^-1; W = T diag(beta e^gamma) K; U = T diag(beta) V
//             v_new = U - W h^T;  P = Q' K^T o Gamma;  O = (Q' o e^gamma) h^T + P v_new
//             h_next = e^gamma_C h + v_new^T (K o e^(gamma_C - gamma))
//   backward  (dH = d h_next, walking the chunks in reverse)
//     dv_local = P^T dO;  dv_new = dv_local + K_dec dH^T;  dh = e^gamma_C dH + dO^T Q_dec - dv_new^T W
//     dq = scale (e^gamma o dO h + (dO v_new^T o Gamma) K)
//     dk = scale (dO v_new^T o Gamma)^T Q + e^(gamma_C - gamma) o v_new dH          (+ the UT terms below)
//     dW = -dv_new h;  dU = dv_new
//     dT = (e^gamma_j dW K^T + dU V^T) beta_j;  dA = -M o (T^T dT T^T)
//     dv = beta o T^T dU;  dk += beta e^gamma o T^T dW + (G + G^T) K,  G = dA o beta_i Gamma
//     dbeta = rowsum(T^T dU o V) + e^gamma rowsum(T^T dW o K) + rowsum(dA o K K^T o Gamma)
//     d gamma from every e^gamma above; dg = reverse cumulative sum of d gamma within the chunk.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

namespace hylo::gdn_test {

struct DeltaGrads {
  at::Tensor dq, dk, dv, dg, dbeta, dstate;  // shapes of q, k, v, g, beta, initial_state
};

// The per-chunk intermediates, in the CUDA backward's layouts with BH = B * H and N chunks (the GPU tests compare
// them stage by stage, so a failing end-to-end gradient names the kernel that went wrong).
struct DeltaBackwardTrace {
  at::Tensor t;        // [BH, N, C, C]    T = (I + A)^-1
  at::Tensor h;        // [BH, N, Dv, Dk]  state entering each chunk
  at::Tensor vnew;     // [BH, N, C, Dv]
  at::Tensor dvl;      // [BH, N, C, Dv]   dv_local
  at::Tensor dh;       // [BH, N, Dv, Dk]  gradient of the state leaving each chunk
  at::Tensor dvnew;    // [BH, N, C, Dv]
  at::Tensor dw;       // [BH, N, C, Dk]
  at::Tensor dk_part;  // [BH, N, C, Dk]   dk before the UT-transform terms
  at::Tensor dgam;     // [BH, N, C]       d gamma before the UT-transform terms
};

// Inputs as ops::gated_delta_chunk takes them ([B, T, H, D], [B, T, H], state [B, H, Dv, Dk] or undefined), all in
// one floating dtype; d_o [B, T, H, Dv]; d_final [B, H, Dv, Dk] or undefined (= 0). Returns dstate undefined when
// there is no initial state.
inline DeltaGrads chunk_backward_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const at::Tensor& g, const at::Tensor& beta, double scale,
                                           const at::Tensor& state, const at::Tensor& d_o,
                                           const at::Tensor& d_final, int64_t C = 64,
                                           DeltaBackwardTrace* trace = nullptr) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  const int64_t N = (T + C - 1) / C, pad = N * C - T;
  auto hm = [&](const at::Tensor& x) {  // [B, T, H, D] -> [B, H, N, C, D]; [B, T, H] -> [B, H, N, C]
    at::Tensor y = x.transpose(1, 2);
    if (x.dim() == 4) return at::constant_pad_nd(y, {0, 0, 0, pad}).reshape({B, H, N, C, x.size(3)});
    return at::constant_pad_nd(y, {0, pad}).reshape({B, H, N, C});
  };
  const at::Tensor Q = hm(q), K = hm(k), V = hm(v), dO = hm(d_o), bt = hm(beta);
  const at::Tensor gam = hm(g).cumsum(-1);                                  // [B, H, N, C]
  const at::Tensor gC = gam.narrow(-1, C - 1, 1);                           // [B, H, N, 1]
  const auto opt = q.options();
  const at::Tensor lower_incl = at::ones({C, C}, opt).tril(0), strict = at::ones({C, C}, opt).tril(-1);
  const at::Tensor Gam = (gam.unsqueeze(-1) - gam.unsqueeze(-2)).clamp_max(0).exp() * lower_incl;  // [B,H,N,C,C]
  const at::Tensor eg = gam.exp().unsqueeze(-1);                            // [B, H, N, C, 1]
  const at::Tensor b1 = bt.unsqueeze(-1);                                   // [B, H, N, C, 1]
  const at::Tensor kk = at::matmul(K, K.transpose(-1, -2));                 // [B, H, N, C, C]
  const at::Tensor A = b1 * kk * Gam * strict;                              // [B, H, N, C, C]
  const at::Tensor Tm = at::linalg_inv(A + at::eye(C, opt));                // [B, H, N, C, C]
  const at::Tensor W = at::matmul(Tm, b1 * eg * K), U = at::matmul(Tm, b1 * V);
  const at::Tensor Kdec = K * (gC - gam).exp().unsqueeze(-1);               // [B, H, N, C, Dk]
  const at::Tensor Qdec = Q * scale * eg;                                   // [B, H, N, C, Dk]
  const at::Tensor QK = at::matmul(Q, K.transpose(-1, -2)) * scale;         // [B, H, N, C, C]
  const at::Tensor P = QK * Gam;                                            // [B, H, N, C, C]

  // Forward states: h entering each chunk, v_new.
  std::vector<at::Tensor> hs, vns;
  at::Tensor S = state.defined() ? state : at::zeros({B, H, Dv, Dk}, opt);
  for (int64_t n = 0; n < N; ++n) {
    hs.push_back(S);
    at::Tensor vn = U.select(2, n) - at::matmul(W.select(2, n), S.transpose(-1, -2));  // [B, H, C, Dv]
    vns.push_back(vn);
    S = gC.select(2, n).exp().unsqueeze(-1) * S + at::matmul(vn.transpose(-1, -2), Kdec.select(2, n));
  }
  const at::Tensor h = at::stack(hs, 2), vn = at::stack(vns, 2);           // [B,H,N,Dv,Dk], [B,H,N,C,Dv]

  // Serial reverse walk: dH[n] = gradient of the state leaving chunk n.
  const at::Tensor dvl = at::matmul(P.transpose(-1, -2), dO);              // [B, H, N, C, Dv]
  std::vector<at::Tensor> dHs(N), dvns(N);
  at::Tensor dH = d_final.defined() ? d_final : at::zeros({B, H, Dv, Dk}, opt);
  for (int64_t n = N - 1; n >= 0; --n) {
    dHs[n] = dH;
    at::Tensor dvn = dvl.select(2, n) + at::matmul(Kdec.select(2, n), dH.transpose(-1, -2));  // [B, H, C, Dv]
    dvns[n] = dvn;
    dH = gC.select(2, n).exp().unsqueeze(-1) * dH + at::matmul(dO.select(2, n).transpose(-1, -2), Qdec.select(2, n)) -
         at::matmul(dvn.transpose(-1, -2), W.select(2, n));
  }
  const at::Tensor dHn = at::stack(dHs, 2), dvn = at::stack(dvns, 2);

  // Per chunk: q, k, decay (the "dqk" kernel).
  const at::Tensor X1 = at::matmul(dO, h);                                  // [B, H, N, C, Dk]
  const at::Tensor dW = -at::matmul(dvn, h);                                // [B, H, N, C, Dk]
  const at::Tensor X3 = at::matmul(vn, dHn);                                // [B, H, N, C, Dk]
  const at::Tensor dPm = at::matmul(dO, vn.transpose(-1, -2)) * Gam;        // [B, H, N, C, C]
  at::Tensor dQ = scale * (X1 * eg + at::matmul(dPm, K));
  at::Tensor dK = scale * at::matmul(dPm.transpose(-1, -2), Q) + X3 * (gC - gam).exp().unsqueeze(-1);
  const at::Tensor E1 = dPm * QK;
  const at::Tensor F = (X3 * Kdec).sum(-1);                                 // [B, H, N, C]
  at::Tensor dgam = scale * gam.exp() * (X1 * Q).sum(-1) + E1.sum(-1) - E1.sum(-2) - F;
  at::Tensor last = F.sum(-1, true) + gC.exp() * (dHn * h).sum({-1, -2}).unsqueeze(-1);  // [B, H, N, 1]
  dgam = dgam + at::constant_pad_nd(last, {C - 1, 0});
  const at::Tensor dK_local = dK, dgam_local = dgam;

  // Per chunk: the UT transform's backward (the "wy" kernel).
  const at::Tensor bj = bt.unsqueeze(-2);                                   // [B, H, N, 1, C]
  const at::Tensor dT = (at::matmul(dW, K.transpose(-1, -2)) * gam.exp().unsqueeze(-2) +
                         at::matmul(dvn, V.transpose(-1, -2))) * bj;       // [B, H, N, C, C]
  const at::Tensor TT = Tm.transpose(-1, -2);
  const at::Tensor dA = -at::matmul(at::matmul(TT, dT), TT) * strict;       // [B, H, N, C, C]
  const at::Tensor TdU = at::matmul(TT, dvn), TdW = at::matmul(TT, dW);
  const at::Tensor dV = b1 * TdU;
  const at::Tensor G = dA * b1 * Gam;
  dK = dK + b1 * eg * TdW + at::matmul(G + G.transpose(-1, -2), K);
  const at::Tensor sK = (TdW * K).sum(-1);                                  // [B, H, N, C]
  const at::Tensor dB = (TdU * V).sum(-1) + gam.exp() * sK + (dA * kk * Gam).sum(-1);
  const at::Tensor E2 = dA * A;
  dgam = dgam + bt * gam.exp() * sK + E2.sum(-1) - E2.sum(-2);
  const at::Tensor dG = dgam.flip(-1).cumsum(-1).flip(-1);                 // [B, H, N, C]
  if (trace) {
    auto flat = [&](const at::Tensor& x) { return x.flatten(0, 1); };  // [B, H, ...] -> [BH, ...]
    *trace = {flat(Tm), flat(h), flat(vn), flat(dvl), flat(dHn), flat(dvn), flat(dW), flat(dK_local), flat(dgam_local)};
  }

  auto back = [&](const at::Tensor& x) {  // [B, H, N, C, D] -> [B, T, H, D]; [B, H, N, C] -> [B, T, H]
    if (x.dim() == 5) return x.reshape({B, H, N * C, x.size(-1)}).narrow(2, 0, T).transpose(1, 2).contiguous();
    return x.reshape({B, H, N * C}).narrow(2, 0, T).transpose(1, 2).contiguous();
  };
  return {back(dQ), back(dK), back(dV), back(dG), back(dB), state.defined() ? dH : at::Tensor()};
}

}  // namespace hylo::gdn_test
