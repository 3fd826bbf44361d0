// GGUF reader: every metadata value type (nested arrays included), alignment, tensor infos and the
// dequantization of the simple types against their defining formulas; then a corpus of broken files generated
// here (bad magic, v1, truncation at every byte, hostile lengths, unknown types, misaligned, overlapping and
// out-of-file data, duplicates) -- each an error naming the file and the key or tensor, never a crash.
// Bit-exactness of every quantized type against the `gguf` package is tests/oracles/test_gguf_dequant.py.
#include <gtest/gtest.h>

#include <cmath>

#include "hylo/io/dtype.h"
#include "hylo/io/gguf.h"
#include "io_test_util.h"

namespace hylo::io {
namespace {

using testing::Bytes;
using testing::GgufBuilder;
namespace fs = std::filesystem;

constexpr uint32_t kF32T = 0, kF16T = 1, kQ4_0T = 2, kQ4_1T = 3, kQ8_0T = 8, kQ6_KT = 14, kBF16T = 30;

// A small valid file: every scalar type, a string array, a nested array, and tensors of six types.
GgufBuilder sample() {
  GgufBuilder g;
  g.alignment = 64;
  g.kv_u32("general.alignment", 64);
  g.kv_str("general.architecture", "llama");
  Bytes v;
  testing::put<uint8_t>(v, 200); g.kv_raw("t.u8", testing::kU8, v); v.clear();
  testing::put<int8_t>(v, -5); g.kv_raw("t.i8", testing::kI8, v); v.clear();
  testing::put<uint16_t>(v, 60000); g.kv_raw("t.u16", testing::kU16, v); v.clear();
  testing::put<int16_t>(v, -30000); g.kv_raw("t.i16", testing::kI16, v); v.clear();
  testing::put<int32_t>(v, -7); g.kv_raw("t.i32", testing::kI32, v); v.clear();
  testing::put<uint64_t>(v, 1ull << 40); g.kv_raw("t.u64", testing::kU64, v); v.clear();
  testing::put<int64_t>(v, -(1ll << 40)); g.kv_raw("t.i64", testing::kI64, v); v.clear();
  testing::put<double>(v, 0.1); g.kv_raw("t.f64", testing::kF64, v); v.clear();
  testing::put<uint8_t>(v, 1); g.kv_raw("t.bool", testing::kBool, v); v.clear();
  g.kv_f32("t.f32", 1e-5f);
  g.kv_str_array("t.strs", {"a", "", "\xce\xbb"});
  // [[1, 2], [3]] as nested INT32 arrays.
  testing::put<uint32_t>(v, testing::kArray); testing::put<uint64_t>(v, 2);
  testing::put<uint32_t>(v, testing::kI32); testing::put<uint64_t>(v, 2); testing::put<int32_t>(v, 1); testing::put<int32_t>(v, 2);
  testing::put<uint32_t>(v, testing::kI32); testing::put<uint64_t>(v, 1); testing::put<int32_t>(v, 3);
  g.kv_raw("t.nested", testing::kArray, v); v.clear();

  g.tensor("f32", {3, 2}, kF32T, testing::f32_bytes({1, 2, 3, 4, 5, -6}));
  Bytes f16;
  for (uint16_t h : {0x3c00, 0xc000, 0x0001, 0x7bff}) testing::put<uint16_t>(f16, h);
  g.tensor("f16", {4}, kF16T, f16);
  Bytes bf16;
  for (uint16_t h : {0x3f80, 0xc049}) testing::put<uint16_t>(bf16, h);
  g.tensor("bf16", {2}, kBF16T, bf16);
  // Q8_0: d = 0.5 (f16 0x3800), q = j - 16.
  Bytes q8;
  testing::put<uint16_t>(q8, 0x3800);
  for (int j = 0; j < 32; ++j) q8.push_back(static_cast<uint8_t>(static_cast<int8_t>(j - 16)));
  g.tensor("q8_0", {32}, kQ8_0T, q8);
  // Q4_0: d = 0.25, byte j = (15 - j%16) << 4 | (j % 16).
  Bytes q40;
  testing::put<uint16_t>(q40, 0x3400);
  for (int j = 0; j < 16; ++j) q40.push_back(static_cast<uint8_t>(((15 - j) << 4) | j));
  g.tensor("q4_0", {32}, kQ4_0T, q40);
  // Q4_1: d = 2, m = -1, same nibbles, two blocks as 2 rows of 32.
  Bytes q41;
  for (int blk = 0; blk < 2; ++blk) {
    testing::put<uint16_t>(q41, 0x4000);
    testing::put<uint16_t>(q41, 0xbc00);
    for (int j = 0; j < 16; ++j) q41.push_back(static_cast<uint8_t>(((15 - j) << 4) | j));
  }
  g.tensor("q4_1", {32, 2}, kQ4_1T, q41);
  return g;
}

void expect_error_at(int line, const fs::path& p, const Bytes& b, std::initializer_list<std::string> needles) {
  SCOPED_TRACE("case at line " + std::to_string(line));
  testing::write_bytes(p, b);
  auto f = GgufFile::open(p);
  ASSERT_FALSE(f.ok()) << "accepted a broken file";
  EXPECT_NE(f.error().find(p.string()), std::string::npos) << f.error();
  for (const auto& n : needles) EXPECT_NE(f.error().find(n), std::string::npos) << "missing '" << n << "' in: " << f.error();
}
#define expect_error(...) expect_error_at(__LINE__, __VA_ARGS__)

TEST(Gguf, ReadsEveryValueTypeAndTensor) {
  auto dir = testing::temp_dir();
  fs::path p = dir / "ok.gguf";
  testing::write_bytes(p, sample().build());
  auto f = GgufFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture").value(), "llama");
  EXPECT_EQ(f->get_int("t.u8").value(), 200);
  EXPECT_EQ(f->get_int("t.i8").value(), -5);
  EXPECT_EQ(f->get_int("t.u16").value(), 60000);
  EXPECT_EQ(f->get_int("t.i16").value(), -30000);
  EXPECT_EQ(f->get_int("t.i32").value(), -7);
  EXPECT_EQ(f->get_int("t.u64").value(), 1ll << 40);
  EXPECT_EQ(f->get_int("t.i64").value(), -(1ll << 40));
  EXPECT_EQ(f->get_float("t.f64").value(), 0.1);
  EXPECT_EQ(f->get_float("t.f32").value(), static_cast<double>(1e-5f));
  EXPECT_EQ(f->get_float("t.u8").value(), 200.0);
  EXPECT_TRUE(std::get<bool>(f->metadata().at("t.bool").v));
  EXPECT_EQ(f->get_string_array("t.strs").value(), (std::vector<std::string>{"a", "", "\xce\xbb"}));
  const auto& nested = std::get<GgufArray>(f->metadata().at("t.nested").v);
  ASSERT_EQ(nested.size(), 2u);
  EXPECT_EQ(std::get<GgufArray>(nested[0].v).size(), 2u);
  EXPECT_EQ(std::get<int64_t>(std::get<GgufArray>(nested[1].v)[0].v), 3);

  // Typed access errors name the file, the key and the expected type.
  auto e = f->get_int("general.architecture");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("general.architecture"), std::string::npos);
  EXPECT_NE(e.error().find("integer"), std::string::npos);
  EXPECT_NE(e.error().find(p.string()), std::string::npos);
  EXPECT_FALSE(f->get_string("missing.key").ok());
  EXPECT_FALSE(f->get_string_array("t.nested").ok());

  ASSERT_EQ(f->tensors().size(), 6u);
  const auto* t = f->find("f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f->dequantize("f32").value(), (std::vector<float>{1, 2, 3, 4, 5, -6}));
  EXPECT_EQ(f->dequantize("f16").value(), (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24), 65504.0f}));
  EXPECT_EQ(f->dequantize("bf16").value(), (std::vector<float>{1.0f, bf16_to_f32(0xc049)}));
  auto q8 = f->dequantize("q8_0").value();
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q8[j], 0.5f * static_cast<float>(j - 16));
  auto q40 = f->dequantize("q4_0").value();
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(q40[j], 0.25f * static_cast<float>(j - 8));
    EXPECT_EQ(q40[j + 16], 0.25f * static_cast<float>(15 - j - 8));
  }
  auto q41 = f->dequantize("q4_1").value();
  ASSERT_EQ(q41.size(), 64u);
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(q41[r * 32 + j], 2.0f * static_cast<float>(j) - 1.0f);
      EXPECT_EQ(q41[r * 32 + j + 16], 2.0f * static_cast<float>(15 - j) - 1.0f);
    }
  for (const auto& ti : f->tensors()) EXPECT_EQ(ti.offset % 64, 0u) << ti.name;
  EXPECT_FALSE(f->dequantize("nope").ok());
}

TEST(Gguf, Version2AndDefaultAlignment) {
  auto dir = testing::temp_dir();
  GgufBuilder g;
  g.version = 2;
  g.kv_str("general.architecture", "llama");
  g.tensor("a", {4}, kF32T, testing::f32_bytes({1, 2, 3, 4}));
  g.tensor("b", {4}, kF32T, testing::f32_bytes({5, 6, 7, 8}));
  testing::write_bytes(dir / "v2.gguf", g.build());
  auto f = GgufFile::open(dir / "v2.gguf");
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_EQ(f->find("b")->offset, 32u);
  EXPECT_EQ(f->dequantize("b").value(), (std::vector<float>{5, 6, 7, 8}));
}

TEST(Gguf, DequantizeRejectsWrongSizes) {
  Bytes b(34);
  EXPECT_FALSE(dequantize_ggml(GgmlType::kQ8_0, std::as_bytes(std::span<const uint8_t>(b)), nullptr, 31).ok());
  std::vector<float> out(64);
  EXPECT_FALSE(dequantize_ggml(GgmlType::kQ8_0, std::as_bytes(std::span<const uint8_t>(b)), out.data(), 64).ok());
  EXPECT_TRUE(dequantize_ggml(GgmlType::kQ8_0, std::as_bytes(std::span<const uint8_t>(b)), out.data(), 32).ok());
}

TEST(Gguf, TruncatedAtEveryByte) {
  auto dir = testing::temp_dir();
  Bytes raw = sample().build();
  fs::path p = dir / "cut.gguf";
  for (std::size_t n = 0; n < raw.size(); ++n) {
    Bytes cut(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(n));
    expect_error(p, cut, {});
  }
}

TEST(Gguf, BrokenFiles) {
  auto dir = testing::temp_dir();
  fs::path p = dir / "bad.gguf";
  {
    auto g = sample();
    g.magic = 0x46554746;
    expect_error(p, g.build(), {"not a GGUF file"});
  }
  {
    auto g = sample();
    g.version = 1;
    expect_error(p, g.build(), {"version 1"});
  }
  {
    auto g = sample();
    g.version = 4;
    expect_error(p, g.build(), {"version 4"});
  }
  {
    auto g = sample();
    g.version = 0x03000000;  // a big-endian file read little-endian
    expect_error(p, g.build(), {"big-endian"});
  }
  {
    auto g = sample();
    g.kv_count_override = 1ull << 60;
    expect_error(p, g.build(), {"metadata count"});
  }
  {
    auto g = sample();
    g.tensor_count_override = ~0ull;
    expect_error(p, g.build(), {"tensor count"});
  }
  {
    auto g = sample();
    g.tensor_count_override = 7;  // one more than written: runs into the data section and then past the end
    expect_error(p, g.build(), {});
  }
  {  // A string whose length is far beyond the file.
    GgufBuilder g;
    Bytes v;
    testing::put<uint64_t>(v, 1ull << 62);
    v.insert(v.end(), {'a', 'b'});
    g.kv_raw("general.name", testing::kString, v);
    expect_error(p, g.build(), {"general.name", "string length"});
  }
  {  // An array whose count could never fit.
    GgufBuilder g;
    Bytes v;
    testing::put<uint32_t>(v, testing::kU32);
    testing::put<uint64_t>(v, 1ull << 61);
    g.kv_raw("tokenizer.ggml.token_type", testing::kArray, v);
    expect_error(p, g.build(), {"tokenizer.ggml.token_type", "array length"});
  }
  {  // An array that fits in the file (64 MiB + 1 one-byte elements) but exceeds the total element cap.
    GgufBuilder g;
    Bytes v;
    testing::put<uint32_t>(v, testing::kU8);
    testing::put<uint64_t>(v, (64ull << 20) + 1);
    v.resize(v.size() + (64ull << 20) + 1);
    g.kv_raw("tokenizer.ggml.scores", testing::kArray, v);
    expect_error(p, g.build(), {"tokenizer.ggml.scores", "array length 67108865", "limit of 67108864"});
  }
  {  // ... of strings too.
    GgufBuilder g;
    Bytes v;
    testing::put<uint32_t>(v, testing::kString);
    testing::put<uint64_t>(v, 1000);
    g.kv_raw("tokenizer.ggml.tokens", testing::kArray, v);
    expect_error(p, g.build(), {"tokenizer.ggml.tokens", "array length"});
  }
  {  // Arrays nested 100 deep.
    GgufBuilder g;
    Bytes v;
    for (int i = 0; i < 100; ++i) {
      testing::put<uint32_t>(v, testing::kArray);
      testing::put<uint64_t>(v, 1);
    }
    testing::put<uint32_t>(v, testing::kU8);
    testing::put<uint64_t>(v, 0);
    g.kv_raw("deep", testing::kArray, v);
    expect_error(p, g.build(), {"deep", "nested"});
  }
  {
    GgufBuilder g;
    g.kv_raw("weird", 13, Bytes{0, 0, 0, 0});
    expect_error(p, g.build(), {"weird", "unknown value type 13"});
  }
  {
    GgufBuilder g;
    Bytes v;
    testing::put<uint32_t>(v, 99);
    testing::put<uint64_t>(v, 1);
    g.kv_raw("weird", testing::kArray, v);
    expect_error(p, g.build(), {"weird", "unknown array element type 99"});
  }
  {
    GgufBuilder g;
    g.kv_raw("flag", testing::kBool, Bytes{7});
    expect_error(p, g.build(), {"flag", "BOOL"});
  }
  {
    auto g = sample();
    g.kv_str("general.architecture", "qwen2");
    expect_error(p, g.build(), {"general.architecture", "twice"});
  }
  {
    auto g = sample();
    g.tensors[1].name = "f32";
    expect_error(p, g.build(), {"\"f32\"", "twice"});
  }
  {
    auto g = sample();
    g.tensors[0].type = 16;  // IQ2_XXS: not supported
    expect_error(p, g.build(), {"\"f32\"", "unsupported ggml tensor type 16"});
  }
  {
    auto g = sample();
    g.tensors[0].type = 1000;
    expect_error(p, g.build(), {"\"f32\"", "1000"});
  }
  {
    auto g = sample();
    g.tensors[0].dims = {1, 1, 1, 1, 6};
    expect_error(p, g.build(), {"\"f32\"", "n_dims = 5"});
  }
  {
    auto g = sample();
    g.tensors[0].dims = {};
    expect_error(p, g.build(), {"\"f32\"", "n_dims = 0"});
  }
  {
    auto g = sample();
    g.tensors[0].dims = {6, 0};
    expect_error(p, g.build(), {"\"f32\"", "positive"});
  }
  {
    auto g = sample();
    g.tensors[0].dims = {1ull << 32, 1ull << 32};
    expect_error(p, g.build(), {"\"f32\"", "overflow"});
  }
  {
    auto g = sample();
    g.tensors[3].dims = {16};  // Q8_0 rows must be multiples of 32
    expect_error(p, g.build(), {"\"q8_0\"", "block size 32"});
  }
  {
    auto g = sample();
    g.tensors[1].offset_override = 65;
    expect_error(p, g.build(), {"\"f16\"", "alignment"});
  }
  {
    auto g = sample();
    g.tensors[1].offset_override = 0;  // on top of "f32"
    expect_error(p, g.build(), {"\"f32\"", "\"f16\"", "overlap"});
  }
  {
    auto g = sample();
    g.tensors[1].offset_override = 64 * 1000;
    expect_error(p, g.build(), {"\"f16\"", "past the end"});
  }
  {
    auto g = sample();
    g.kvs[0].second = Bytes{4, 0, 0, 0, 48, 0, 0, 0};  // general.alignment = 48
    expect_error(p, g.build(), {"general.alignment"});
  }
  {
    auto g = sample();
    g.tensors[0].name = "";
    expect_error(p, g.build(), {"empty name"});
  }
  // A file that is only a header with no tensors and no metadata is valid.
  testing::write_bytes(p, GgufBuilder().build());
  EXPECT_TRUE(GgufFile::open(p).ok());
}

}  // namespace
}  // namespace hylo::io
