// Element types of checkpoint tensors and the exact half-precision conversions every reader and writer uses.
// The f16/bf16 -> f32 directions are exact (every half value is representable in f32); the f32 -> half
// directions round to nearest even like numpy's astype(float16) and ggml's fp32_to_bf16.
#include "hylo/io/dtype.h"

#include <array>
#include <bit>
#include <cstring>

namespace hylo::io {

namespace {
struct DTypeEntry {
  DType dtype;
  const char* name;
  std::size_t size;
};
// The safetensors spellings (safetensors/src/tensor.rs Dtype).
constexpr std::array<DTypeEntry, 15> kDTypes{{
    {DType::kF64, "F64", 8},   {DType::kF32, "F32", 4},   {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8},   {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},     {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4},   {DType::kU16, "U16", 2},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
}};

const DTypeEntry* entry(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return &e;
  return nullptr;
}
}  // namespace

std::size_t dtype_size(DType dtype) {
  const DTypeEntry* e = entry(dtype);
  return e != nullptr ? e->size : 0;
}

const char* dtype_name(DType dtype) {
  const DTypeEntry* e = entry(dtype);
  return e != nullptr ? e->name : "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes)
    if (name == e.name) return e.dtype;
  return std::nullopt;
}

float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_bf16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  // NaN: keep sign and the top payload bits, force the quiet bit so truncation cannot turn it into Inf.
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Round to nearest, ties to even (overflow into the exponent yields Inf, as it should).
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((static_cast<uint64_t>(u) + rounding) >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf or NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: value = mant * 2^-24; normalise the mantissa into an f32 normal.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: keep the top payload bits, make sure it stays a NaN
    uint16_t payload = static_cast<uint16_t>((abs >> 13) & 0x3ffu);
    return static_cast<uint16_t>(sign | 0x7c00u | 0x200u | payload);
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: Inf
  int32_t exp = static_cast<int32_t>(abs >> 23) - 127;
  if (exp >= -14) {
    // Normal half. Round the 23-bit mantissa to 10 bits, ties to even; a carry bumps the exponent correctly.
    uint32_t h = (static_cast<uint32_t>(exp + 15) << 10) | ((abs >> 13) & 0x3ffu);
    uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (exp < -25) return sign;  // below half the smallest subnormal: rounds to zero
  // Subnormal half: value / 2^-24, rounded to nearest even integer.
  uint32_t mant = (abs & 0x7fffffu) | 0x800000u;   // 24-bit significand, value = mant * 2^(exp-23)
  int shift = -exp - 14 + 13;                       // bits dropped to express in units of 2^-24
  uint32_t h = mant >> shift;
  uint32_t rest = mant & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

}  // namespace hylo::io
