// The inputs both SSD kernels read (ssd_step.cu, ssd_chunk.cu): contiguous copies of the op's tensors, their
// element types, and the dims, gathered once by the launchers.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

#include "hylo/kernels/common/dtype_io.cuh"

namespace hylo::kernels::ssd {

// Raw pointers and dims of one call; what the kernels receive by value.
struct SsdArgs {
  const void *x, *dt, *A, *B, *C, *D;  // [B,T,H,P], [B,T,H], [H], [B,T,G,N], [B,T,Gc,N], [H] or null
  ElemType tx, tdt, tA, tB, tC, tD;
  int64_t batch, T, H, P, N, G, Gc;
};

// Keeps the contiguous tensors alive for as long as the pointers in `args` are used.
struct SsdInputs {
  at::Tensor x, dt, A, B, C, D;
  SsdArgs args;
};

inline SsdInputs gather_inputs(const char* who, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                               const at::Tensor& B, const at::Tensor& C, const at::Tensor& D) {
  SsdInputs in;
  in.x = x.contiguous(), in.dt = dt.contiguous(), in.A = A.contiguous();
  in.B = B.contiguous(), in.C = C.contiguous();
  in.D = D.defined() ? D.contiguous() : D;
  SsdArgs& a = in.args;
  a.x = in.x.data_ptr(), a.dt = in.dt.data_ptr(), a.A = in.A.data_ptr();
  a.B = in.B.data_ptr(), a.C = in.C.data_ptr(), a.D = in.D.defined() ? in.D.data_ptr() : nullptr;
  a.tx = elem_type(in.x, who), a.tdt = elem_type(in.dt, who), a.tA = elem_type(in.A, who);
  a.tB = elem_type(in.B, who), a.tC = elem_type(in.C, who);
  a.tD = in.D.defined() ? elem_type(in.D, who) : ElemType::kF32;
  a.batch = x.size(0), a.T = x.size(1), a.H = x.size(2), a.P = x.size(3);
  a.N = B.size(3), a.G = B.size(2), a.Gc = C.size(2);
  return in;
}

// Every defined tensor on a CUDA device in fp32, bf16 or fp16; the state (if any) fp32.
inline bool inputs_ok(std::initializer_list<const at::Tensor*> ts, const at::Tensor& state) {
  for (const at::Tensor* t : ts) {
    if (!t->defined()) continue;
    const at::ScalarType s = t->scalar_type();
    if (!t->is_cuda() || (s != at::kFloat && s != at::kBFloat16 && s != at::kHalf)) return false;
  }
  return !state.defined() || (state.is_cuda() && state.scalar_type() == at::kFloat);
}

}  // namespace hylo::kernels::ssd
