#include "hylo/ops/tensor_util.h"

#include "hylo/core/result.h"

namespace hylo {

at::ScalarType parse_scalar_type(const std::string& name) {
  if (name == "fp32" || name == "float32" || name == "f32" || name == "float") return at::kFloat;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16" || name == "f16" || name == "half") return at::kHalf;
  if (name == "fp64" || name == "float64" || name == "f64" || name == "double") return at::kDouble;
  throw Error("unknown dtype '" + name + "' (expected one of fp32, bf16, fp16, fp64)");
}

at::Device parse_device(const std::string& name) {
  at::Device device(at::kCPU);
  try {
    device = at::Device(name);
  } catch (const std::exception&) {
    throw Error("unknown device '" + name + "' (expected cpu, cuda or cuda:N)");
  }
  if (device.is_cuda() && !at::hasCUDA())
    throw Error("device '" + name + "' requested but no CUDA device is available on this machine");
  return device;
}

at::ScalarType compute_type(at::ScalarType type) { return type == at::kDouble ? at::kDouble : at::kFloat; }

at::ScalarType to_scalar_type(io::DType dtype) {
  using io::DType;
  switch (dtype) {
    case DType::kF64: return at::kDouble;
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI32: return at::kInt;
    case DType::kI16: return at::kShort;
    case DType::kI8: return at::kChar;
    case DType::kU8: return at::kByte;
    case DType::kBool: return at::kBool;
    case DType::kF8E4M3: return at::kFloat8_e4m3fn;
    case DType::kF8E5M2: return at::kFloat8_e5m2;
    case DType::kU16: return at::kUInt16;
    case DType::kU32: return at::kUInt32;
    case DType::kU64: return at::kUInt64;
  }
  throw Error(std::string("dtype ") + io::dtype_name(dtype) + " has no ATen equivalent");
}

io::DType to_io_dtype(at::ScalarType type) {
  using io::DType;
  switch (type) {
    case at::kDouble: return DType::kF64;
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    case at::kInt: return DType::kI32;
    case at::kShort: return DType::kI16;
    case at::kChar: return DType::kI8;
    case at::kByte: return DType::kU8;
    case at::kBool: return DType::kBool;
    case at::kFloat8_e4m3fn: return DType::kF8E4M3;
    case at::kFloat8_e5m2: return DType::kF8E5M2;
    default: break;
  }
  throw Error(std::string("ATen dtype ") + c10::toString(type) + " cannot be stored in safetensors");
}

at::Tensor tensor_from_view(const io::TensorView& view) {
  const auto& info = *view.info;
  at::Tensor out = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  if (!view.bytes.empty()) std::memcpy(out.data_ptr(), view.bytes.data(), view.bytes.size());
  return out;
}

void TensorsToWrite::add(const std::string& name, const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  keep.push_back(c);  // the storage is shared, so later moves of `keep` leave the span valid
  io::TensorToWrite w;
  w.name = name;
  w.dtype = to_io_dtype(c.scalar_type());
  w.shape.assign(c.sizes().begin(), c.sizes().end());
  w.bytes = std::span<const std::byte>(static_cast<const std::byte*>(c.data_ptr()), c.nbytes());
  tensors.push_back(std::move(w));
}

std::string shape_str(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string shape_str(const at::Tensor& t) { return t.defined() ? shape_str(t.sizes()) : "undefined"; }

double relative_rms_error(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor a64 = a.detach().to(at::kCPU, at::kDouble), b64 = b.detach().to(at::kCPU, at::kDouble);
  double denom = b64.norm().item<double>();
  double num = (a64 - b64).norm().item<double>();
  return denom == 0.0 ? num : num / denom;
}

}  // namespace hylo
