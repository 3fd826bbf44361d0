// cuda_host_emu: the SSD kernels (kernels/ssd), run on the host emulation, against ssd_naive in fp64 on the same
// rounded inputs, beside the ATen forms' own errors in the working dtype (the GPU tests' bound: kernel error at
// most 4x the ATen error plus 1e-5; tests/cpp/kernels_ssd).
//   ssd_check B T H P N G Gc WITH_STATE DTYPE(f32|bf16)     prints relative RMS errors of both kernels
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/ssd/ssd_cuda.h"
#include "hylo/ops/ssd.h"
#include "test_util.h"  // tests/cpp/mamba2: make_ssd_inputs
using namespace hylo;
double rel(const at::Tensor& a, const at::Tensor& r) {
  at::Tensor x = a.to(at::kDouble), y = r.to(at::kDouble);
  return (x - y).norm().item<double>() / std::max(y.norm().item<double>(), 1e-300);
}
int main(int argc, char** argv) {
  if (argc != 10) { std::fprintf(stderr, "usage: ssd_check B T H P N G Gc WITH_STATE f32|bf16\n"); return 2; }
  kernels::set_poison_outputs(true);
  auto arg = [&](int i) { return int64_t(std::stol(argv[i])); };
  const int64_t B = arg(1), T = arg(2), H = arg(3), P = arg(4), N = arg(5), G = arg(6), Gc = arg(7);
  const bool st = arg(8) != 0;
  const at::ScalarType xt = std::string(argv[9]) == "bf16" ? at::kBFloat16 : at::kFloat;
  test::SsdInputs in = test::make_ssd_inputs(B, T, H, P, N, G, Gc, st, 4321 + T);
  at::Tensor x = in.x.to(xt), dt = in.dt.to(at::kFloat), A = in.A.to(at::kFloat), Bm = in.B.to(xt), Cm = in.C.to(xt);
  at::Tensor Dv = in.D.to(xt), s0 = st ? in.state.to(at::kFloat) : at::Tensor();
  auto d = [](const at::Tensor& t) { return t.defined() ? t.to(at::kDouble) : t; };
  const SsdOutput ref = ssd_naive(d(x), d(dt), d(A), d(Bm), d(Cm), d(Dv), d(s0));
  const SsdOutput aten = ssd_chunk(x, dt, A, Bm, Cm, Dv, s0, 256);
  bool ok = true;
  auto report = [&](const char* what, const SsdOutput& got, const SsdOutput& base, const SsdOutput& truth) {
    const double ey = rel(got.y, truth.y), es = rel(got.final_state, truth.final_state);
    const double ay = rel(base.y, truth.y), as = rel(base.final_state, truth.final_state);
    const bool pass = ey <= 4 * ay + 1e-5 && es <= 4 * as + 1e-5;
    ok = ok && pass;
    std::printf("%-6s y %.2e (aten %.2e) state %.2e (aten %.2e) %s\n", what, ey, ay, es, as, pass ? "ok" : "FAIL");
  };
  if (P <= 128 && N <= 128) report("chunk", kernels::ssd_chunk_cuda(x, dt, A, Bm, Cm, Dv, s0), aten, ref);
  if (N % 32 == 0) {  // the step kernel's set; T tokens in one call, in place on a copy of the state
    at::Tensor s_io = st ? s0.clone() : at::Tensor();
    const SsdOutput step = kernels::ssd_step_cuda(x, dt, A, Bm, Cm, Dv, s_io, s_io);
    if (st && step.final_state.data_ptr() != s_io.data_ptr()) { std::printf("step not in place: FAIL\n"); ok = false; }
    report("step", step, aten, ref);
  }
  return ok ? 0 : 1;
}
