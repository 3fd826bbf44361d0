// llama.cpp's rope_freqs.weight read back as llama3 RoPE scaling (config/rope_freq_factors.h): the factors the
// converter writes for real Llama-3.x configs are recognised, with the parameters they imply; anything that is not
// a llama3 profile is refused with the tensor named.
#include <gtest/gtest.h>

#include <cmath>

#include "hylo/config/rope_freq_factors.h"

namespace hylo {
namespace {

RopeConfig llama3(double theta, double factor, double low, double high, int64_t orig) {
  RopeConfig r;
  r.theta = theta;
  r.type = "llama3";
  r.factor = factor;
  r.low_freq_factor = low;
  r.high_freq_factor = high;
  r.original_max_position_embeddings = orig;
  return r;
}

std::vector<float> as_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

TEST(RopeFreqFactors, Llama31And32ProfilesAreRecognised) {
  // Llama-3.1-8B (head 128, factor 8) and Llama-3.2-1B (head 64, factor 32), both original context 8192.
  for (auto [dim, factor] : {std::pair<int64_t, double>{128, 8.0}, {64, 32.0}}) {
    const RopeConfig truth = llama3(500000.0, factor, 1.0, 4.0, 8192);
    const std::vector<float> f = as_f32(llama3_freq_factors(truth, dim));
    RopeConfig r = rope_from_freq_factors(f, 500000.0, dim, "x.gguf: rope_freqs.weight").value_or_throw();
    EXPECT_EQ(r.type, "llama3");
    EXPECT_EQ(r.factor, factor);
    EXPECT_NEAR(r.high_freq_factor, 4.0, 1e-4);
    EXPECT_EQ(r.original_max_position_embeddings, 8192);
    EXPECT_EQ(r.freq_factors, f);  // applied as stored, as llama.cpp does
  }
}

TEST(RopeFreqFactors, OtherLowHighGiveTheSameProfile) {
  // Any (low, high, original) with the same line s(freq) gives equal factors; one of them (low 1) is reported,
  // and it reproduces the factors.
  const RopeConfig truth = llama3(500000.0, 8.0, 2.0, 5.0, 4096);
  const std::vector<float> f = as_f32(llama3_freq_factors(truth, 128));
  RopeConfig r = rope_from_freq_factors(f, 500000.0, 128, "x").value_or_throw();
  const std::vector<double> back = llama3_freq_factors(r, 128);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(back[i], f[i], 1e-5 * f[i]) << i;
}

TEST(RopeFreqFactors, FewInterpolatedFrequencies) {
  // Tiny heads: one or no frequency in the interpolated band still reads back to the same factors.
  for (int64_t orig : {30, 64, 100}) {  // none, one, one interpolated frequency
    const RopeConfig truth = llama3(500000.0, 32.0, 1.0, 4.0, orig);
    const std::vector<float> f = as_f32(llama3_freq_factors(truth, 16));
    RopeConfig r = rope_from_freq_factors(f, 500000.0, 16, "x").value_or_throw();
    const std::vector<double> back = llama3_freq_factors(r, 16);
    for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(back[i], f[i], 1e-5 * f[i]) << orig << " " << i;
  }
}

TEST(RopeFreqFactors, NotALlama3ProfileIsRefused) {
  const RopeConfig truth = llama3(500000.0, 8.0, 1.0, 4.0, 8192);
  std::vector<float> f = as_f32(llama3_freq_factors(truth, 128));
  int64_t mid = -1;
  for (size_t i = 0; i < f.size(); ++i)
    if (f[i] > 1.01f && f[i] < 7.9f) mid = static_cast<int64_t>(i);
  ASSERT_GE(mid, 0);
  f[mid] *= 1.01f;
  auto r = rope_from_freq_factors(f, 500000.0, 128, "m.gguf: tensor \"rope_freqs.weight\"");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("m.gguf: tensor \"rope_freqs.weight\""), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("not llama3 scaling"), std::string::npos) << r.error();

  auto wrong_len = rope_from_freq_factors(std::vector<float>(10, 1.0f), 500000.0, 128, "m.gguf");
  ASSERT_FALSE(wrong_len.ok());
  EXPECT_NE(wrong_len.error().find("expected one per RoPE frequency (64"), std::string::npos) << wrong_len.error();
  std::vector<float> below(64, 1.0f);
  below[3] = 0.5f;
  EXPECT_FALSE(rope_from_freq_factors(below, 500000.0, 128, "m.gguf").ok());
  EXPECT_FALSE(rope_from_freq_factors(std::vector<float>(64, 1.0f), 500000.0, 128, "m.gguf").ok());  // no scaling
  std::vector<float> nan(64, 2.0f);
  nan[0] = std::nanf("");
  EXPECT_FALSE(rope_from_freq_factors(nan, 500000.0, 128, "m.gguf").ok());
}

}  // namespace
}  // namespace hylo
