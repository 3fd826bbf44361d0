// Dequantization of ggml blocks to f32. The block layouts are ggml's (ggml-common.h); the arithmetic is
// written as the PyPI `gguf` package's gguf/quants.py evaluates it -- each product and sum rounded to f32 in
// the same order, e.g. Q4_K computes (d*sc)*q - (dmin*m) -- so the results are bit-identical to it, which the
// oracle tests check. Contraction into FMA would change the rounding, so it is switched off for this file.
#include <cstring>

#include "hylo/io/dtype.h"
#include "hylo/io/gguf.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace hylo::io {

namespace {

constexpr int kQK = 256;  // super-block size of the K-quants

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q4_0: f16 d, 16 bytes of nibbles; element j (<16) is the low nibble of byte j, element j+16 the high one.
void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(static_cast<int>(qs[j] & 0x0F) - 8);
    y[j + 16] = d * static_cast<float>(static_cast<int>(qs[j] >> 4) - 8);
  }
}

// Q4_1: f16 d, f16 m, nibbles as Q4_0; y = d*q + m.
void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    float lo = d * static_cast<float>(qs[j] & 0x0F);
    float hi = d * static_cast<float>(qs[j] >> 4);
    y[j] = lo + m;
    y[j + 16] = hi + m;
  }
}

// Q5_0: f16 d, u32 of fifth bits (bit j belongs to element j), nibbles as Q4_0; q in [-16, 15].
void dequant_q5_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo - 16);
    y[j + 16] = d * static_cast<float>(hi - 16);
  }
}

// Q5_1: f16 d, f16 m, u32 fifth bits, nibbles; y = d*q + m.
void dequant_q5_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    float a = d * static_cast<float>(lo);
    float c = d * static_cast<float>(hi);
    y[j] = a + m;
    y[j + 16] = c + m;
  }
}

// Q8_0: f16 d, 32 signed bytes.
void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q2_K: 16 bytes of 4-bit scale | 4-bit min per 16 elements, 64 bytes of 2-bit quants, f16 d, f16 dmin.
// Element e = h*128 + k*32 + l takes bits 2k of byte h*32 + l; its sub-block is e / 16.
void dequant_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  float dl[16], ml[16];
  for (int s = 0; s < 16; ++s) {
    dl[s] = d * static_cast<float>(scales[s] & 0x0F);
    ml[s] = dmin * static_cast<float>(scales[s] >> 4);
  }
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        int e = h * 128 + k * 32 + l;
        float q = static_cast<float>((qs[h * 32 + l] >> (2 * k)) & 3);
        float p = dl[e / 16] * q;
        y[e] = p - ml[e / 16];
      }
}

// Q3_K: 32 bytes high-bit mask, 64 bytes 2-bit quants, 12 bytes of 6-bit scales, f16 d.
void dequant_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = half_at(b + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    // Low 4 bits: nibble (i/8) of byte i%8; high 2 bits: bits 2*(i/4) of byte 8 + i%4.
    int lo = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
    int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    dl[i] = d * static_cast<float>((lo | (hi << 4)) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        int e = h * 128 + k * 32 + l;
        int ql = (qs[h * 32 + l] >> (2 * k)) & 3;
        // The high bit is stored inverted: a set mask bit means no -4 offset.
        int hbit = ((hmask[l] >> (e / 32)) & 1) ^ 1;
        y[e] = dl[e / 16] * static_cast<float>(ql - (hbit << 2));
      }
}

// Q4_K/Q5_K 6-bit scales and mins for 8 sub-blocks of 32, packed in 12 bytes.
void k_scale_min(const uint8_t* s, int* sc, int* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 0x3F;
    mn[j] = s[4 + j] & 0x3F;
    sc[4 + j] = (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30);
    mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
  }
}

// Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes; sub-block s = 2h + k uses nibble k of bytes h*32..
void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  int sc[8], mn[8];
  k_scale_min(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    const float ds = d * static_cast<float>(sc[s]);
    const float ms = dmin * static_cast<float>(mn[s]);
    const int h = s / 2, k = s % 2;
    for (int l = 0; l < 32; ++l) {
      float p = ds * static_cast<float>((qs[h * 32 + l] >> (4 * k)) & 0x0F);
      y[s * 32 + l] = p - ms;
    }
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits (bit s of byte l belongs to element s*32 + l).
void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  int sc[8], mn[8];
  k_scale_min(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    const float ds = d * static_cast<float>(sc[s]);
    const float ms = dmin * static_cast<float>(mn[s]);
    const int h = s / 2, k = s % 2;
    for (int l = 0; l < 32; ++l) {
      int q = ((qs[h * 32 + l] >> (4 * k)) & 0x0F) | (((qh[l] >> s) & 1) << 4);
      float p = ds * static_cast<float>(q);
      y[s * 32 + l] = p - ms;
    }
  }
}

// Q6_K: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 signed scales, f16 d.
// Element e = h*128 + r (r < 128): low nibble k = r/64 of byte h*64 + r%64; high bits 2*(r/32) of byte h*32 + r%32.
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  float ds[16];
  for (int s = 0; s < 16; ++s) ds[s] = d * static_cast<float>(scales[s]);
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 128; ++r) {
      int lo = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
      int hi = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
      int e = h * 128 + r;
      y[e] = ds[e / 16] * static_cast<float>((lo | (hi << 4)) - 32);
    }
}

// Q8_K: f32 d, 256 signed bytes, 16 i16 block sums (unused for dequantization).
void dequant_q8_k(const uint8_t* b, float* y) {
  float d;
  std::memcpy(&d, b, 4);
  for (int j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(b[4 + j]));
}

}  // namespace

Status dequantize_ggml(GgmlType type, std::span<const std::byte> src, float* dst, int64_t n) {
  HYLO_TRY(auto geometry, ggml_block_geometry(type));
  auto [block, block_bytes] = geometry;
  if (n < 0 || n % block != 0)
    return make_error(std::string(ggml_type_name(type)) + ": " + std::to_string(n) +
                      " values is not a multiple of the block size " + std::to_string(block));
  const uint64_t n_blocks = static_cast<uint64_t>(n / block);
  if (src.size() != n_blocks * block_bytes)
    return make_error(std::string(ggml_type_name(type)) + ": " + std::to_string(n) + " values need " +
                      std::to_string(n_blocks * block_bytes) + " bytes, got " + std::to_string(src.size()));
  const auto* p = reinterpret_cast<const uint8_t*>(src.data());
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, p, static_cast<std::size_t>(n) * 4);
      return {};
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half_at(p + 2 * i);
      return {};
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return {};
    default: break;
  }
  void (*fn)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case GgmlType::kQ4_0: fn = dequant_q4_0; break;
    case GgmlType::kQ4_1: fn = dequant_q4_1; break;
    case GgmlType::kQ5_0: fn = dequant_q5_0; break;
    case GgmlType::kQ5_1: fn = dequant_q5_1; break;
    case GgmlType::kQ8_0: fn = dequant_q8_0; break;
    case GgmlType::kQ2_K: fn = dequant_q2_k; break;
    case GgmlType::kQ3_K: fn = dequant_q3_k; break;
    case GgmlType::kQ4_K: fn = dequant_q4_k; break;
    case GgmlType::kQ5_K: fn = dequant_q5_k; break;
    case GgmlType::kQ6_K: fn = dequant_q6_k; break;
    case GgmlType::kQ8_K: fn = dequant_q8_k; break;
    default:
      return make_error(std::string("dequantization of ggml type ") + ggml_type_name(type) + " is not supported");
  }
  for (uint64_t i = 0; i < n_blocks; ++i) fn(p + i * block_bytes, dst + i * static_cast<uint64_t>(block));
  return {};
}

}  // namespace hylo::io
