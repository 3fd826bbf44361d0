#include "hylo/ops/swiglu.h"

#ifdef HYLO_HAVE_CUDA
#include "hylo/kernels/swiglu/silu_mul.h"
#endif

namespace hylo::ops {

at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b, const at::Tensor& up_b,
                      const at::Tensor& down_b) {
  at::Tensor gate = at::linear(x, gate_w, gate_b);   // [..., F]
  at::Tensor up = at::linear(x, up_w, up_b);         // [..., F]
  return at::linear(at::silu(gate) * up, down_w, down_b);  // [..., D]
}

at::Tensor swiglu_mlp(PackedLinear& packed, const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w,
                      const at::Tensor& down_w, const at::Tensor& gate_b, const at::Tensor& up_b,
                      const at::Tensor& down_b) {
  const std::vector<const at::Tensor*> ws{&gate_w, &up_w}, bs{&gate_b, &up_b};
  if (!PackedLinear::applies(x, ws, bs)) return swiglu_mlp(x, gate_w, up_w, down_w, gate_b, up_b, down_b);
  std::vector<at::Tensor> gu = packed(x, ws, bs);             // gate, up: [..., F] views of one [..., 2F] GEMM
#ifdef HYLO_HAVE_CUDA
  // On CUDA, SiLU(gate) * up as one kernel reading both halves of the packed buffer (rows flattened: a view, since
  // the packed output is contiguous over its leading dims).
  const int64_t F = gate_w.size(0);
  at::Tensor g2 = gu[0].reshape({-1, F}), u2 = gu[1].reshape({-1, F});
  if (kernels::silu_mul_cuda_supported(g2, u2)) {
    std::vector<int64_t> shape = gu[0].sizes().vec();
    return at::linear(kernels::silu_mul_cuda(g2, u2).view(shape), down_w, down_b);  // [..., D]
  }
#endif
  return at::linear(at::silu(gu[0]) * gu[1], down_w, down_b);  // [..., D]
}

}  // namespace hylo::ops
