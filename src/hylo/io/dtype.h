// Element types of checkpoint tensors, independent of libtorch (io/ builds without it). Names follow the
// safetensors spelling ("F32", "BF16", ...).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hylo::io {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool, kF8E4M3, kF8E5M2 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);                       // "F32"
std::optional<DType> parse_dtype(std::string_view name);   // "F32" -> kF32; unknown -> nullopt

// bf16/f16 <-> f32 conversions used by dequantization and writers.
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);                         // round to nearest even, NaN preserved
float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);

}  // namespace hylo::io
