// The fused CUDA attention (ops/fused_attention.h) used by causal_attention and the decompressed MLA form, against
// the fp64 references (ops::causal_attention_reference, the ATen MLA path on the CPU): GQA ratios, query offsets
// 0, 1 and ones that are no multiple of 64, one-token decode, MLA dims of the SmolLM2 and Llama-3.2-1B plans and
// Dv != Dqk, fp32 / bf16 / fp16, gradients for q_offset == 0 (training), a window that cuts the prefix, and the
// memory of a long-prefix chunk (no [T, S] mask or scores). Tolerances are derived: the error against fp64 may be
// at most kSlack times the error of the same math done eagerly in the working dtype (matmuls in the dtype, fp32
// softmax, probabilities rounded to the dtype: HF's eager attention), plus a floor of a few fp32 ulps.
// Skips without a CUDA device.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#ifdef HYLO_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include "hylo/ops/attention.h"
#include "hylo/ops/fused_attention.h"
#include "hylo/ops/mla.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {
namespace {

constexpr double kSlack = 2.0;          // fused error <= kSlack x eager error in the same dtype ...
constexpr double kFloor = 1e-5;         // ... + this relative floor (a few fp32 ulps of accumulated rounding)
constexpr double kGradSlack = 3.0;      // gradients: more rounding steps, and a different summation order

#define SKIP_WITHOUT_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: the fused attention path is CUDA-only"

at::Tensor randn(at::IntArrayRef shape, uint64_t seed, double sd = 1.0) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, g, at::TensorOptions().dtype(at::kDouble)) * sd;
}

at::Tensor cuda(const at::Tensor& t, at::ScalarType dtype) { return t.to(at::kCUDA, dtype); }

// Eager attention in the working dtype: the baseline error of "the same math done in that dtype".
// q [B, Hq, T, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv] on the GPU.
at::Tensor eager_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                           int64_t q_offset) {
  const int64_t rep = q.size(1) / k.size(1), t = q.size(2), s = q_offset + t;
  at::Tensor kr = k.narrow(2, 0, s).repeat_interleave(rep, 1), vr = v.narrow(2, 0, s).repeat_interleave(rep, 1);
  at::Tensor scores = at::matmul(q, kr.transpose(-1, -2)).to(at::kFloat) * scale;  // [B, Hq, T, S]
  at::Tensor mask = ops::causal_mask(t, s, q_offset, std::nullopt, q.device());
  scores = scores.masked_fill(at::logical_not(mask), -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(scores, -1).to(q.scalar_type()), vr);               // [B, Hq, T, Dv]
}

struct GqaCase {
  int64_t b, hq, hkv, t, q_offset, d;
};

const GqaCase kGqaCases[] = {
    {1, 4, 4, 64, 0, 64},      // MHA, training shape
    {2, 8, 2, 37, 0, 64},      // GQA 4:1, T no multiple of 64
    {1, 8, 2, 100, 1, 64},     // one cached key
    {1, 6, 3, 77, 130, 128},   // offsets and T no multiple of 64, head dim 128
    {1, 32, 8, 256, 1000, 64}, // Llama-shaped heads, long prefix
    {2, 9, 3, 65, 63, 64},     // SmolLM2-shaped heads
    {1, 4, 1, 1, 50, 64},      // MQA decode token
    {1, 4, 2, 48, 200, 80},    // head dim 80
};

std::string name(const GqaCase& c, at::ScalarType dt) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "B%lld Hq%lld Hkv%lld T%lld off%lld D%lld %s", (long long)c.b, (long long)c.hq,
                (long long)c.hkv, (long long)c.t, (long long)c.q_offset, (long long)c.d, c10::toString(dt));
  return buf;
}

TEST(FusedAttention, GqaMatchesFp64Reference) {
  SKIP_WITHOUT_CUDA();
  uint64_t seed = 10;
  for (const GqaCase& c : kGqaCases)
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
      const int64_t s = c.q_offset + c.t + 3;  // 3 keys past the chunk that no query may see
      at::Tensor q = randn({c.b, c.hq, c.t, c.d}, seed++, 1.5), k = randn({c.b, c.hkv, s, c.d}, seed++),
                 v = randn({c.b, c.hkv, s, c.d}, seed++);
      const double scale = 1.0 / std::sqrt(double(c.d));
      at::Tensor want = ops::causal_attention_reference(q, k, v, scale, c.q_offset);  // fp64 on the CPU
      at::Tensor got = ops::causal_attention(cuda(q, dt), cuda(k, dt), cuda(v, dt), scale, c.q_offset);
      at::Tensor eager = eager_attention(cuda(q, dt), cuda(k, dt), cuda(v, dt), scale, c.q_offset);
      ASSERT_EQ(got.sizes(), want.sizes()) << name(c, dt);
      ASSERT_EQ(got.scalar_type(), dt) << name(c, dt);
      const double err = relative_rms_error(got, want), base = relative_rms_error(eager, want);
      std::printf("  %-40s fused %.3e  eager %.3e\n", name(c, dt).c_str(), err, base);
      EXPECT_LE(err, kSlack * base + kFloor) << name(c, dt);
    }
}

TEST(FusedAttention, WindowThatCutsThePrefixFallsBackExactly) {
  SKIP_WITHOUT_CUDA();
  const int64_t t = 40, q_offset = 90, s = q_offset + t;
  at::Tensor q = randn({1, 4, t, 64}, 1), k = randn({1, 2, s, 64}, 2), v = randn({1, 2, s, 64}, 3);
  for (int64_t window : {16, 64, 129, 130, 500}) {  // cuts inside the chunk, the prefix, key 0 only, none, none
    at::Tensor want = ops::causal_attention_reference(q, k, v, 0.125, q_offset, window);
    at::Tensor got = ops::causal_attention(cuda(q, at::kFloat), cuda(k, at::kFloat), cuda(v, at::kFloat), 0.125,
                                           q_offset, window);
    EXPECT_LT(relative_rms_error(got, want), 1e-5) << "window " << window;
  }
}

// Gradients of sum(out * w) for q_offset == 0 (training) against fp64 autograd of the reference.
TEST(FusedAttention, GqaGradientsAtOffsetZero) {
  SKIP_WITHOUT_CUDA();
  const GqaCase cases[] = {{1, 8, 2, 96, 0, 64}, {2, 9, 3, 33, 0, 64}};
  uint64_t seed = 500;
  for (const GqaCase& c : cases) {
    at::Tensor q = randn({c.b, c.hq, c.t, c.d}, seed++, 1.5), k = randn({c.b, c.hkv, c.t, c.d}, seed++),
               v = randn({c.b, c.hkv, c.t, c.d}, seed++), w = randn({c.b, c.hq, c.t, c.d}, seed++);
    const double scale = 1.0 / std::sqrt(double(c.d));
    auto grads = [&](auto&& fn, at::Device dev, at::ScalarType dt) {
      // detach(): .to() of a fp64 CPU tensor to fp64 CPU returns the tensor itself, which must stay a constant.
      at::Tensor qq = q.to(dev, dt).detach().requires_grad_(), kk = k.to(dev, dt).detach().requires_grad_(),
                 vv = v.to(dev, dt).detach().requires_grad_();
      (fn(qq, kk, vv).to(at::kDouble) * w.to(dev)).sum().backward();
      return std::array<at::Tensor, 3>{qq.grad(), kk.grad(), vv.grad()};
    };
    auto want = grads([&](auto& a, auto& b, auto& d) { return ops::causal_attention_reference(a, b, d, scale, 0); },
                      at::kCPU, at::kDouble);
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      auto got = grads([&](auto& a, auto& b, auto& d) { return ops::causal_attention(a, b, d, scale, 0); },
                       at::kCUDA, dt);
      auto eager = grads([&](auto& a, auto& b, auto& d) { return eager_attention(a, b, d, scale, 0); }, at::kCUDA, dt);
      const char* names[] = {"dq", "dk", "dv"};
      for (int i = 0; i < 3; ++i) {
        const double err = relative_rms_error(got[i], want[i]), base = relative_rms_error(eager[i], want[i]);
        std::printf("  %-40s %s fused %.3e  eager %.3e\n", name(c, dt).c_str(), names[i], err, base);
        EXPECT_LE(err, kGradSlack * base + kFloor) << name(c, dt) << " " << names[i];
      }
    }
  }
}

// The long-prefix chunk the engine runs: 4K queries after 124K cached keys. A [T, S] bool mask alone would be
// 512 MiB and fp32 scores 16 GiB; the fused path's working set is the merge's fp32 buffers (a few MiB).
TEST(FusedAttention, LongPrefixChunkNeedsNoTxSMemory) {
  SKIP_WITHOUT_CUDA();
#ifdef HYLO_HAVE_CUDA
  const int64_t t = 4096, s = 131072, hq = 8, hkv = 2, d = 64;
  auto opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::randn({1, hq, t, d}, opts), k = at::randn({1, hkv, s, d}, opts), v = at::randn({1, hkv, s, d}, opts);
  c10::cuda::device_synchronize();
  const auto stat = [] {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(0)
        .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  };
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  const int64_t before = stat().current;
  at::Tensor out = ops::causal_attention(q, k, v, 0.125, s - t);
  c10::cuda::device_synchronize();
  const double extra_mib = double(stat().peak - before) / (1 << 20);
  std::printf("  extra peak %.1f MiB (output %.1f MiB)\n", extra_mib, double(out.numel() * 2) / (1 << 20));
  EXPECT_LT(extra_mib, 128.0);
  // And the values: the last 64 rows against the fp32 reference on the GPU (a [64, S] problem).
  at::Tensor q_tail = q.narrow(2, t - 64, 64);
  at::Tensor want = ops::causal_attention_reference(q_tail.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), 0.125,
                                                    s - 64);
  at::Tensor eager = eager_attention(q_tail, k, v, 0.125, s - 64);
  const double err = relative_rms_error(out.narrow(2, t - 64, 64), want), base = relative_rms_error(eager, want);
  std::printf("  tail rows: fused %.3e  eager %.3e\n", err, base);
  EXPECT_LE(err, kSlack * base + kFloor);
#endif
}

struct MlaCase {
  const char* label;
  int64_t b, t, q_offset, h, g, p, r, v, c;
};

const MlaCase kMlaCases[] = {
    {"SmolLM2 plan, train", 1, 96, 0, 9, 3, 32, 32, 64, 128},
    {"SmolLM2 plan, chunk", 2, 70, 130, 9, 3, 32, 32, 64, 128},
    {"Llama-1B plan, train", 1, 128, 0, 32, 8, 32, 32, 64, 128},
    {"Llama-1B plan, chunk", 1, 64, 1, 32, 8, 32, 32, 64, 128},
    {"Llama-1B plan, decode", 1, 1, 300, 32, 8, 32, 32, 64, 128},
    {"Dv < Dqk, dims no mult of 8", 1, 45, 77, 6, 2, 36, 16, 40, 96},
    {"Dv > Dqk", 1, 50, 0, 4, 4, 16, 16, 96, 64},
    {"Dv > Dqk, chunk", 1, 50, 200, 4, 1, 16, 16, 96, 64},
};

struct MlaInputs {
  at::Tensor q_nope, q_pe, c_kv, k_pe, w;  // [B,T,H,P] [B,T,H,R] [B,S,C] [B,S,R] [G*(P+V),C], fp64 on the CPU
};

MlaInputs mla_inputs(const MlaCase& m, uint64_t seed) {
  const int64_t s = m.q_offset + m.t;
  return {randn({m.b, m.t, m.h, m.p}, seed, 1.5), randn({m.b, m.t, m.h, m.r}, seed + 1, 1.5),
          randn({m.b, s, m.c}, seed + 2), randn({m.b, s, m.r}, seed + 3),
          randn({m.g * (m.p + m.v), m.c}, seed + 4, 1.0 / std::sqrt(double(m.c)))};
}

at::Tensor run_mla(const MlaInputs& in, const MlaCase& m, at::Device dev, at::ScalarType dt, double scale) {
  return ops::mla_attention_decompressed(in.q_nope.to(dev, dt), in.q_pe.to(dev, dt), in.c_kv.to(dev, dt),
                                         in.k_pe.to(dev, dt), in.w.to(dev, dt), m.g, scale, m.q_offset);
}

TEST(FusedAttention, MlaDecompressedMatchesFp64Reference) {
  SKIP_WITHOUT_CUDA();
  uint64_t seed = 1000;
  for (const MlaCase& m : kMlaCases) {
    MlaInputs in = mla_inputs(m, seed += 10);
    const double scale = 1.0 / std::sqrt(double(m.p + m.r));
    at::Tensor want = run_mla(in, m, at::kCPU, at::kDouble, scale);  // the ATen reference in fp64
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      at::Tensor got = run_mla(in, m, at::kCUDA, dt, scale);
      at::Tensor eager = run_mla(in, m, at::kCPU, dt, scale);        // the same ATen math in the dtype
      ASSERT_EQ(got.sizes(), want.sizes()) << m.label;
      const double err = relative_rms_error(got, want), base = relative_rms_error(eager, want);
      std::printf("  %-30s %-9s fused %.3e  eager %.3e\n", m.label, c10::toString(dt), err, base);
      EXPECT_LE(err, kSlack * base + kFloor) << m.label << " " << c10::toString(dt);
    }
  }
}

TEST(FusedAttention, MlaDecompressedGradientsAtOffsetZero) {
  SKIP_WITHOUT_CUDA();
  uint64_t seed = 2000;
  for (const MlaCase& m : kMlaCases) {
    if (m.q_offset != 0) continue;
    MlaInputs in = mla_inputs(m, seed += 10);
    at::Tensor w = randn({m.b, m.t, m.h, m.v}, seed + 7);
    const double scale = 1.0 / std::sqrt(double(m.p + m.r));
    auto grads = [&](at::Device dev, at::ScalarType dt) {
      std::array<at::Tensor, 5> x = {in.q_nope.to(dev, dt), in.q_pe.to(dev, dt), in.c_kv.to(dev, dt),
                                     in.k_pe.to(dev, dt), in.w.to(dev, dt)};
      for (auto& t : x) t = t.detach().requires_grad_();  // leaves, never the shared fp64 inputs themselves
      at::Tensor out = ops::mla_attention_decompressed(x[0], x[1], x[2], x[3], x[4], m.g, scale, 0);
      (out.to(at::kDouble) * w.to(dev)).sum().backward();
      std::array<at::Tensor, 5> g;
      for (int i = 0; i < 5; ++i) g[i] = x[i].grad();
      return g;
    };
    auto want = grads(at::kCPU, at::kDouble);
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      auto got = grads(at::kCUDA, dt), eager = grads(at::kCPU, dt);
      const char* names[] = {"d q_nope", "d q_pe", "d c_kv", "d k_pe", "d kv_b_w"};
      for (int i = 0; i < 5; ++i) {
        const double err = relative_rms_error(got[i], want[i]), base = relative_rms_error(eager[i], want[i]);
        std::printf("  %-30s %-9s %-9s fused %.3e  eager %.3e\n", m.label, c10::toString(dt), names[i], err, base);
        EXPECT_LE(err, kGradSlack * base + kFloor) << m.label << " " << c10::toString(dt) << " " << names[i];
      }
    }
  }
}

TEST(FusedAttention, BadShapesNameTheProblem) {
  SKIP_WITHOUT_CUDA();
  auto opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::zeros({1, 4, 8, 64}, opts), k = at::zeros({1, 3, 8, 64}, opts);
  try {
    ops::fused_causal_attention(q, k, k, 0.125, 0);
    FAIL() << "Hkv 3 does not divide Hq 4";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("Hkv | Hq"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hylo
