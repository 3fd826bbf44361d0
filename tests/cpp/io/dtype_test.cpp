// Half-precision conversions against exact math: every f16/bf16 bit pattern decodes to the value its fields
// define (computed with ldexp, exact in double), and f32 -> half rounds to nearest even at every midpoint.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>

#include "hylo/io/dtype.h"

namespace hylo::io {
namespace {

double f16_exact(uint16_t h) {
  int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

TEST(DType, NamesSizesParse) {
  const DType all[] = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI16,
                       DType::kI8, DType::kU64, DType::kU32, DType::kU16, DType::kU8, DType::kBool, DType::kF8E4M3,
                       DType::kF8E5M2};
  for (DType d : all) {
    auto parsed = parse_dtype(dtype_name(d));
    ASSERT_TRUE(parsed.has_value()) << dtype_name(d);
    EXPECT_EQ(*parsed, d);
    EXPECT_GT(dtype_size(d), 0u);
  }
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF64), 8u);
  EXPECT_FALSE(parse_dtype("f32").has_value());  // the spelling is case-sensitive, as in safetensors
  EXPECT_FALSE(parse_dtype("Q4_0").has_value());
}

TEST(DType, F16DecodeEveryPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    int exp = (h >> 10) & 0x1f;
    if (exp == 0x1f) {
      if ((h & 0x3ff) == 0) {
        EXPECT_TRUE(std::isinf(f)) << h;
        EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0);
      } else {
        EXPECT_TRUE(std::isnan(f)) << h;
        EXPECT_EQ((std::bit_cast<uint32_t>(f) >> 13) & 0x3ff, h & 0x3ff) << "NaN payload kept";
      }
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), f16_exact(static_cast<uint16_t>(h))) << h;
    EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    EXPECT_EQ(f32_to_f16(f), h) << "round trip of " << h;
  }
}

TEST(DType, F16RoundsToNearestEven) {
  // Between consecutive finite halves a < b (same sign), the midpoint goes to the even one, and the f32
  // neighbours of the midpoint go to the nearer one.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    for (uint32_t s : {0u, 0x8000u}) {
      uint16_t a = static_cast<uint16_t>(h | s), b = static_cast<uint16_t>((h + 1) | s);
      double mid = (f16_exact(a) + f16_exact(b)) / 2;  // exact in double and in f32 (<= 12 significant bits)
      float m = static_cast<float>(mid);
      ASSERT_EQ(static_cast<double>(m), mid);
      uint16_t even = (h & 1) == 0 ? a : b;
      EXPECT_EQ(f32_to_f16(m), even) << h;
      float below = std::nextafter(m, 0.0f), above = std::nextafter(m, s ? -1e9f : 1e9f);
      EXPECT_EQ(f32_to_f16(below), a) << h;
      EXPECT_EQ(f32_to_f16(above), b) << h;
    }
  }
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.99f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the midpoint to "65536" rounds to even = Inf
  EXPECT_EQ(f32_to_f16(-1e30f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);                         // half of the smallest subnormal: tie to 0
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);  // just above: rounds up
  EXPECT_EQ(f32_to_f16(1e-30f), 0x0000);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
}

TEST(DType, BF16EveryPatternAndRounding) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(std::bit_cast<uint32_t>(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
    } else {
      EXPECT_EQ(f32_to_bf16(f), h);
    }
  }
  // Midpoints: low 16 bits 0x8000 round to even; one ulp either side rounds to the nearer.
  for (uint32_t hi : {0x3f80u, 0x3f81u, 0x4049u, 0xc2c8u, 0x0001u}) {
    uint32_t mid = (hi << 16) | 0x8000u;
    uint16_t even = static_cast<uint16_t>((hi & 1) ? hi + 1 : hi);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(mid)), even);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(mid - 1)), hi);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(mid + 1)), hi + 1);
  }
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to Inf
  // A NaN whose payload sits only in the low bits must stay NaN, not become Inf.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
}

}  // namespace
}  // namespace hylo::io
