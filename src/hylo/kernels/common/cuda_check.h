// Small helpers shared by the CUDA kernels' launchers: error checks that name the kernel, the current stream,
// and a test switch that NaN-fills every output a launcher allocates (tests prove each element is written).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>

#include <limits>
#include <string>

#include "hylo/core/result.h"

namespace hylo::kernels {

// Throws hylo::Error naming `what` when the last launch (or an earlier asynchronous error) failed.
inline void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(std::string(what) + ": CUDA launch failed: " + cudaGetErrorString(e));
}

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// When on, launchers fill the outputs they allocate with NaN before the kernel runs (tests only: one extra
// pass over each output). Process-wide; off by default.
void set_poison_outputs(bool on);
bool poison_outputs();

// at::empty, NaN-filled when poison_outputs() is on.
inline at::Tensor empty_output(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor t = at::empty(shape, options);
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

}  // namespace hylo::kernels
