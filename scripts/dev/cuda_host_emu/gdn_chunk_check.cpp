// cuda_host_emu: the chunked gated delta forward and backward kernels, run on the host emulation, against the ATen
// forms in fp64 (forward) and the hand-written ATen backward stage by stage (tests/cpp/gdn/gdn_chunk_backward_ref.h).
//   gdn_chunk_check B T H Dk Dv SEGMENTS WITH_STATE WITH_D_FINAL      prints relative RMS errors per stage
#include <ATen/ATen.h>
#include <cstdio>
#include <cmath>
#include <string>
#include "gdn_chunk_backward_ref.h"
#include "gdn_test_util.h"
#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/gated_delta/chunk_backward_trace.h"
#include "hylo/kernels/gated_delta/gated_delta_cuda.h"
#include "hylo/ops/gated_delta.h"
using namespace hylo;
double rel(const at::Tensor& a, const at::Tensor& r) {
  at::Tensor x = a.to(at::kDouble), y = r.to(at::kDouble);
  return (x - y).norm().item<double>() / std::max(y.norm().item<double>(), 1e-300);
}
int main(int argc, char** argv) {
  kernels::set_poison_outputs(true);
  int64_t B = std::stoi(argv[1]), T = std::stoi(argv[2]), H = std::stoi(argv[3]), Dk = std::stoi(argv[4]), Dv = std::stoi(argv[5]);
  int P = std::stoi(argv[6]);
  bool st = std::stoi(argv[7]), dfin = std::stoi(argv[8]);
  auto in = gdn_test::random_inputs(B, T, H, Dk, Dv, st, 1234 + T);
  at::manual_seed(99);
  at::Tensor q = in.q.to(at::kFloat), k = in.k.to(at::kFloat), v = in.v.to(at::kBFloat16);
  at::Tensor g = in.g.to(at::kFloat), beta = in.beta.to(at::kFloat);
  at::Tensor s0 = st ? in.state.to(at::kFloat) : at::Tensor();
  at::Tensor d_o = at::randn({B, T, H, Dv}, at::kDouble).to(at::kBFloat16);
  at::Tensor d_f = dfin ? at::randn({B, H, Dv, Dk}, at::kDouble).to(at::kFloat) : at::Tensor();
  const double scale = 1.0 / std::sqrt(double(Dk));
  auto d = [](const at::Tensor& t) { return t.defined() ? t.to(at::kDouble) : t; };
  // forward
  GatedDeltaOutput fo = kernels::gated_delta_chunk_cuda(q, k, v, g, beta, scale, s0, P);
  GatedDeltaOutput fr = gated_delta_chunk(d(q), d(k), d(v), d(g), d(beta), scale, d(s0), 64);
  std::printf("fwd o %.2e state %.2e\n", rel(fo.o, fr.o), rel(fo.final_state, fr.final_state));
  gdn_test::DeltaBackwardTrace rt;
  auto rg = gdn_test::chunk_backward_reference(d(q.to(at::kBFloat16)), d(k.to(at::kBFloat16)), d(v), d(g), d(beta), scale,
                                               d(s0), d(d_o), d(d_f), 64, &rt);
  kernels::gdn::BackwardTrace kt;
  auto kg = kernels::gdn::chunk_backward_traced(q, k, v, g, beta, scale, s0, d_o, d_f, P, &kt);
  std::printf("t %.2e h %.2e vnew %.2e dvl %.2e dh %.2e dvnew %.2e dw %.2e dk_part %.2e dgam %.2e\n", rel(kt.t, rt.t),
              rel(kt.h, rt.h), rel(kt.vnew, rt.vnew), rel(kt.dvl, rt.dvl), rel(kt.dh, rt.dh), rel(kt.dvnew, rt.dvnew),
              rel(kt.dw, rt.dw), rel(kt.dk_part, rt.dk_part), rel(kt.dgam, rt.dgam));
  std::printf("dq %.2e dk %.2e dv %.2e dg %.2e dbeta %.2e dstate %.2e\n", rel(kg.dq, rg.dq), rel(kg.dk, rg.dk),
              rel(kg.dv, rg.dv), rel(kg.dg, rg.dg), rel(kg.dbeta, rg.dbeta),
              st ? rel(kg.d_initial_state, rg.dstate) : 0.0);
  std::printf("finite: dq %d dk %d dv %d dg %d dbeta %d\n", (int)at::isfinite(kg.dq).all().item<bool>(),
              (int)at::isfinite(kg.dk).all().item<bool>(), (int)at::isfinite(kg.dv).all().item<bool>(),
              (int)at::isfinite(kg.dg).all().item<bool>(), (int)at::isfinite(kg.dbeta).all().item<bool>());
  return 0;
}
