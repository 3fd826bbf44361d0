// Bridges between io/ (raw checkpoint bytes) and ATen, plus parsing of --dtype / --device options.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "hylo/io/dtype.h"
#include "hylo/io/safetensors.h"

namespace hylo {

// "fp32"/"float32"/"f32", "bf16"/"bfloat16", "fp16"/"float16", "fp64"/"float64". Throws hylo::Error otherwise.
at::ScalarType parse_scalar_type(const std::string& name);
// "cpu", "cuda", "cuda:1". Throws hylo::Error when CUDA is asked for and unavailable.
at::Device parse_device(const std::string& name);

at::ScalarType to_scalar_type(io::DType dtype);   // throws for types ATen lacks
io::DType to_io_dtype(at::ScalarType type);       // throws for types safetensors lacks

// Copies a checkpoint tensor into a new ATen tensor (owning its memory) of its stored dtype.
at::Tensor tensor_from_view(const io::TensorView& view);

// The other direction: tensors gathered for io::write_safetensors. Each is detached, moved to the CPU and made
// contiguous; `keep` owns those copies because the io::TensorToWrite spans point into their memory, so the
// whole object must outlive the write.
struct TensorsToWrite {
  std::vector<at::Tensor> keep;
  std::vector<io::TensorToWrite> tensors;
  void add(const std::string& name, const at::Tensor& t);  // throws for dtypes safetensors lacks
};

// The precision the mixer kernels compute in: bf16/fp16/fp32 accumulate in fp32, fp64 stays fp64 (the oracle
// precision of the tests).
at::ScalarType compute_type(at::ScalarType type);

// "[2, 3, 4]" for error messages; "undefined" for an undefined tensor.
std::string shape_str(at::IntArrayRef shape);
std::string shape_str(const at::Tensor& t);

// Relative RMS error ||a-b|| / ||b|| computed in fp64; used by tests and benchmarks.
double relative_rms_error(const at::Tensor& a, const at::Tensor& b);

}  // namespace hylo
