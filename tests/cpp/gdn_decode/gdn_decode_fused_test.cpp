// The fused GDN decode step (kernels/gated_delta/gdn_decode_fused.cu, routed from GatedDeltaNetMixer::forward and
// decode_fused) equals the ATen decode path of the same mixer, on the two plan shapes (SmolLM2 6MLA24GDN: 3 heads,
// Dk 128, Dv 256; Llama-1B 4MLA12GDN: 6 heads, Dk 256, Dv 512), B = 1, 3, 64, three steps in a row with the states
// carried, fresh random inputs and states, kernel outputs NaN-poisoned.
// Tolerance: the reference is the same mixer in fp64 (on the GPU, ATen forms) with the bf16 weights, inputs and
// initial states upcast exactly. The bf16 ATen path rounds at the same points as the kernel (projections, conv
// outputs, the delta-rule readout o, the normed output, o_proj), so its error against fp64 is what those roundings
// cost; the fused path must land within 2x that plus one bf16 unit roundoff u = 2^-8 (the output's own rounding).
// States: within 2x the ATen state error plus 1e-5 (fp32 arithmetic). Direct comparisons with the ATen path (slot
// indirection, graphs) allow 2u on outputs (a conv output or o whose fp32 value differs in its last bits can round
// to the neighbouring bf16) and u on states.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "hylo/model/mixer.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "kernels_gdn/cuda_test_util.h"
#ifdef HYLO_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include "hylo/core/result.h"
#include "hylo/kernels/gated_delta/gdn_decode_fused.h"
#endif

namespace hylo {
namespace {

using kernels_test::all_finite;
using kernels_test::rel_err;

#ifdef HYLO_HAVE_CUDA
constexpr double kU = 1.0 / 256.0;  // bf16 unit roundoff

struct Plan {
  const char* name;
  int64_t hidden, H, Dk, Dv;
};
const Plan kSmol{"smollm2-6mla24gdn", 576, 3, 128, 256};
const Plan kLlama{"llama1b-4mla12gdn", 2048, 6, 256, 512};

ModelConfig config_of(const Plan& p) {
  ModelConfig c;
  c.hidden_size = p.hidden;
  LayerSpec l;
  l.mixer = MixerKind::kGdn;
  l.gdn.num_heads = p.H;
  l.gdn.head_k_dim = p.Dk;
  l.gdn.head_v_dim = p.Dv;
  l.gdn.conv_size = 4;
  c.layers.push_back(l);
  return c;
}

std::unique_ptr<GatedDeltaNetMixer> make(const ModelConfig& c, at::ScalarType dt) {
  std::unique_ptr<Mixer> m = make_mixer(c, c.layers[0], at::TensorOptions().dtype(dt).device(at::kCUDA));
  auto* g = dynamic_cast<GatedDeltaNetMixer*>(m.release());
  return std::unique_ptr<GatedDeltaNetMixer>(g);
}

// A bf16 mixer on the GPU (FLA init, non-unit norm weights) and its exact fp64 copy.
struct Pair {
  std::unique_ptr<GatedDeltaNetMixer> bf, f64;
};
Pair make_mixers(const Plan& p, uint64_t seed) {
  const ModelConfig c = config_of(p);
  Pair out{make(c, at::kBFloat16), make(c, at::kDouble)};
  at::Generator gen = at::detail::createCPUGenerator(seed);
  out.bf->init_random(gen);
  std::map<std::string, at::Tensor> bf;
  out.bf->visit_parameters("", [&](const std::string& n, at::Tensor& t) {
    if (n == "gdn.o_norm.weight") t.copy_(1.0 + 0.1 * at::randn(t.sizes(), gen, at::TensorOptions().dtype(at::kFloat)));
    bf[n] = t;
  });
  out.f64->visit_parameters("", [&](const std::string& n, at::Tensor& t) { t.copy_(bf.at(n)); });
  return out;
}

// A state for `rows` rows with random conv inputs (bf16) and a random fp32 recurrent state.
std::unique_ptr<GatedDeltaNetState> random_state(const GatedDeltaNetMixer& m, int64_t rows) {
  auto st = m.new_state(rows, 1, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
  auto* g = dynamic_cast<GatedDeltaNetState*>(st.release());
  for (at::Tensor* t : {&g->conv_q, &g->conv_k, &g->conv_v}) t->copy_(at::randn(t->sizes(), t->options()));
  g->recurrent.copy_(0.5 * at::randn(g->recurrent.sizes(), g->recurrent.options()));
  return std::unique_ptr<GatedDeltaNetState>(g);
}

std::unique_ptr<GatedDeltaNetState> copy_state(const GatedDeltaNetState& s, at::ScalarType conv_t,
                                               at::ScalarType rec_t) {
  auto o = std::make_unique<GatedDeltaNetState>();
  o->conv_q = s.conv_q.to(conv_t, false, true);
  o->conv_k = s.conv_k.to(conv_t, false, true);
  o->conv_v = s.conv_v.to(conv_t, false, true);
  o->recurrent = s.recurrent.to(rec_t, false, true);
  return o;
}

// Runs `steps` decode steps of the fused path, the bf16 ATen path and the fp64 reference from one random state.
void check_steps(const Plan& p, int64_t B, int steps, uint64_t seed) {
  at::manual_seed(seed);
  Pair m = make_mixers(p, seed);
  auto st_f = random_state(*m.bf, B);
  auto st_a = copy_state(*st_f, at::kBFloat16, at::kFloat);
  auto st_r = copy_state(*st_f, at::kDouble, at::kDouble);
  const void* rec_ptr = st_f->recurrent.data_ptr();
  const void* cq_ptr = st_f->conv_q.data_ptr();
  {  // the fused path covers this call (checked on a scratch copy so the states stay in step)
    auto scratch = copy_state(*st_f, at::kBFloat16, at::kFloat);
    at::Tensor x = at::randn({B, 1, p.hidden}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
    ASSERT_TRUE(m.bf->decode_fused(x, *scratch, at::Tensor()).defined()) << p.name << " B=" << B;
  }
  for (int s = 0; s < steps; ++s) {
    at::Tensor x = at::randn({B, 1, p.hidden}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
    GatedDeltaNetMixer::set_fused_decode(true);
    const at::Tensor yf = m.bf->forward(x, at::Tensor(), st_f.get());  // [B, 1, D]
    GatedDeltaNetMixer::set_fused_decode(false);
    const at::Tensor ya = m.bf->forward(x, at::Tensor(), st_a.get());
    GatedDeltaNetMixer::set_fused_decode(true);
    const at::Tensor yr = m.f64->forward(x.to(at::kDouble), at::Tensor(), st_r.get());
    const std::string t = std::string(p.name) + " B=" + std::to_string(B) + " step " + std::to_string(s);
    ASSERT_EQ(yf.sizes(), ya.sizes()) << t;
    ASSERT_EQ(yf.scalar_type(), at::kBFloat16) << t;
    EXPECT_TRUE(all_finite(yf)) << t;
    EXPECT_EQ(st_f->recurrent.data_ptr(), rec_ptr) << t << ": the state must be updated in place";
    EXPECT_EQ(st_f->conv_q.data_ptr(), cq_ptr) << t << ": the conv state must be updated in place";
    const double eo = rel_err(yf, yr), ao = rel_err(ya, yr), fa = rel_err(yf, ya);
    const double es = rel_err(st_f->recurrent, st_r->recurrent), as = rel_err(st_a->recurrent, st_r->recurrent);
    double ec = 0, ac = 0;
    for (auto [f, a, r] : {std::tuple{&st_f->conv_q, &st_a->conv_q, &st_r->conv_q},
                           std::tuple{&st_f->conv_k, &st_a->conv_k, &st_r->conv_k},
                           std::tuple{&st_f->conv_v, &st_a->conv_v, &st_r->conv_v}}) {
      ec = std::max(ec, rel_err(*f, *r));
      ac = std::max(ac, rel_err(*a, *r));
    }
    std::printf("  %-34s out %.2e (aten %.2e, fused-aten %.2e)  state %.2e (aten %.2e)  conv %.2e (aten %.2e)\n",
                t.c_str(), eo, ao, fa, es, as, ec, ac);
    EXPECT_LE(eo, 2.0 * ao + kU) << t;
    EXPECT_LE(fa, 2.0 * kU) << t;
    EXPECT_LE(es, 2.0 * as + 1e-5) << t;
    EXPECT_LE(ec, 2.0 * ac + kU) << t;
  }
}

TEST(GdnDecodeFused, SmolPlanEqualsAtenAndFp64OverSteps) {
  HYLO_REQUIRE_CUDA();
  for (int64_t B : {1, 3, 64}) check_steps(kSmol, B, 3, 100 + B);
}

TEST(GdnDecodeFused, LlamaPlanEqualsAtenAndFp64OverSteps) {
  HYLO_REQUIRE_CUDA();
  for (int64_t B : {1, 3, 64}) check_steps(kLlama, B, 3, 200 + B);
}

// The engine's form: pools of S rows, the batch's rows addressed by shuffled, non-contiguous slot indices; the
// addressed rows are updated in place as the ATen path updates gathered copies, every other row is untouched, and a
// slot outside the pool gives a NaN output row and writes nothing.
void check_slots(const Plan& p, int64_t B, uint64_t seed) {
  at::manual_seed(seed);
  Pair m = make_mixers(p, seed);
  const int64_t S = 2 * B + 5;
  auto pools = random_state(*m.bf, S);
  auto before = copy_state(*pools, at::kBFloat16, at::kFloat);
  const at::Tensor slots = at::randperm(S, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, B).to(at::kCUDA);
  auto gathered = std::make_unique<GatedDeltaNetState>();
  gathered->conv_q = pools->conv_q.index_select(0, slots);
  gathered->conv_k = pools->conv_k.index_select(0, slots);
  gathered->conv_v = pools->conv_v.index_select(0, slots);
  gathered->recurrent = pools->recurrent.index_select(0, slots);
  const at::Tensor x = at::randn({B, 1, p.hidden}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
  GatedDeltaNetMixer::set_fused_decode(false);
  const at::Tensor ya = m.bf->forward(x, at::Tensor(), gathered.get());
  GatedDeltaNetMixer::set_fused_decode(true);
  const at::Tensor yf = m.bf->decode_fused(x, *pools, slots);
  const std::string t = std::string(p.name) + " slots B=" + std::to_string(B);
  ASSERT_TRUE(yf.defined()) << t;
  EXPECT_TRUE(all_finite(yf)) << t;
  const double eo = rel_err(yf, ya), es = rel_err(pools->recurrent.index_select(0, slots), gathered->recurrent);
  const double ec = rel_err(pools->conv_v.index_select(0, slots), gathered->conv_v);
  std::printf("  %-34s out %.2e  state %.2e  conv_v %.2e\n", t.c_str(), eo, es, ec);
  EXPECT_LE(eo, 2.0 * kU) << t;
  EXPECT_LE(es, kU) << t;
  EXPECT_LE(ec, kU) << t;
  // Rows no slot names keep their exact contents.
  at::Tensor untouched = at::ones({S}, at::TensorOptions().dtype(at::kBool).device(at::kCUDA));
  untouched.index_fill_(0, slots, false);
  for (auto [now, was] : {std::pair{&pools->recurrent, &before->recurrent}, std::pair{&pools->conv_q, &before->conv_q},
                          std::pair{&pools->conv_k, &before->conv_k}, std::pair{&pools->conv_v, &before->conv_v}})
    EXPECT_TRUE(at::equal(now->index({untouched}), was->index({untouched}))) << t;

  // An out-of-range slot: that row's output is NaN and it writes nothing (its old slot row keeps its contents).
  auto pools2 = copy_state(*pools, at::kBFloat16, at::kFloat);
  at::Tensor bad = slots.clone();
  bad.index_fill_(0, at::zeros({1}, bad.options()), S);  // row 0 -> slot S (outside)
  const at::Tensor yb = m.bf->decode_fused(x, *pools2, bad);
  EXPECT_TRUE(at::isnan(yb.select(0, 0)).all().item<bool>()) << t;
  EXPECT_TRUE(at::equal(pools2->recurrent.select(0, slots[0].item<int64_t>()),
                        pools->recurrent.select(0, slots[0].item<int64_t>())))
      << t;
  if (B > 1) {
    EXPECT_TRUE(all_finite(yb.narrow(0, 1, B - 1))) << t;
  }
}

TEST(GdnDecodeFused, SlotIndirectionUpdatesOnlyAddressedRows) {
  HYLO_REQUIRE_CUDA();
  for (int64_t B : {1, 3, 64}) {
    check_slots(kSmol, B, 300 + B);
    check_slots(kLlama, B, 400 + B);
  }
}

// Captured once in a CUDA graph, replays equal eager calls (with a new input copied in between).
TEST(GdnDecodeFused, GraphReplayEqualsEager) {
  HYLO_REQUIRE_CUDA();
  for (const Plan& p : {kSmol, kLlama}) {
    at::manual_seed(7);
    Pair m = make_mixers(p, 7);
    const int64_t B = 3, S = 9;
    auto pools_g = random_state(*m.bf, S);
    auto pools_e = copy_state(*pools_g, at::kBFloat16, at::kFloat);
    const at::Tensor slots = at::tensor({7, 2, 4}, at::TensorOptions().dtype(at::kLong)).to(at::kCUDA);
    const auto xo = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
    at::Tensor x = at::randn({B, 1, p.hidden}, xo);
    const at::Tensor x1 = x.clone(), x2 = at::randn({B, 1, p.hidden}, xo);
    at::cuda::CUDAGraph graph;
    at::Tensor y_static;
    at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
    side.synchronize();
    at::cuda::getCurrentCUDAStream().synchronize();
    {
      c10::cuda::CUDAStreamGuard guard(side);
      m.bf->decode_fused(x, *pools_g, slots);  // warm-up (cuBLAS handles, workspaces)
      graph.capture_begin();
      y_static = m.bf->decode_fused(x, *pools_g, slots);
      graph.capture_end();
      side.synchronize();
    }
    graph.replay();                  // second step on x1
    at::Tensor y1 = y_static.clone();
    x.copy_(x2);
    graph.replay();                  // third step on x2
    at::Tensor y2 = y_static.clone();
    m.bf->decode_fused(x1, *pools_e, slots);
    const at::Tensor e1 = m.bf->decode_fused(x1, *pools_e, slots);
    const at::Tensor e2 = m.bf->decode_fused(x2, *pools_e, slots);
    const double d1 = rel_err(y1, e1), d2 = rel_err(y2, e2), ds = rel_err(pools_g->recurrent, pools_e->recurrent);
    std::printf("  graph %-28s replay1 %.2e replay2 %.2e state %.2e\n", p.name, d1, d2, ds);
    EXPECT_LE(d1, kU) << p.name;
    EXPECT_LE(d2, kU) << p.name;
    EXPECT_LE(ds, 1e-5) << p.name;
    EXPECT_LE(rel_err(pools_g->conv_k, pools_e->conv_k), kU) << p.name;
    EXPECT_GT(rel_err(y2, y1), 10 * kU) << p.name << ": the replay must read the new input";
  }
}

TEST(GdnDecodeFused, UnsupportedFallsBackAndBadArgumentsThrow) {
  HYLO_REQUIRE_CUDA();
  const Plan odd{"dk64", 64, 2, 64, 64};  // Dk 64: no fused kernel; forward runs the ATen path
  Pair m = make_mixers(odd, 3);
  auto st = random_state(*m.bf, 2);
  const at::Tensor x = at::randn({2, 1, 64}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
  EXPECT_FALSE(m.bf->decode_fused(x, *st, at::Tensor()).defined());
  EXPECT_TRUE(all_finite(m.bf->forward(x, at::Tensor(), st.get())));

  Pair s = make_mixers(kSmol, 4);
  auto pools = random_state(*s.bf, 4);
  const at::Tensor xs = at::randn({2, 1, kSmol.hidden}, x.options());
  const at::Tensor int_slots = at::tensor({0, 1}, at::TensorOptions().dtype(at::kInt)).to(at::kCUDA);
  EXPECT_THROW(s.bf->decode_fused(xs, *pools, int_slots), Error);  // slots must be int64
  EXPECT_THROW(s.bf->decode_fused(xs, *pools, at::Tensor()), Error);  // 4 pool rows, 2 inputs, no slots
}

// Timing of one decode step of one layer (projections + the step + o_proj), captured in a CUDA graph, fused vs the
// ATen path; only with HYLO_GDN_DECODE_BENCH=1 (numbers for docs/benchmarks.md, no assertion).
TEST(GdnDecodeFused, BenchOneLayerStep) {
  HYLO_REQUIRE_CUDA();
  if (!std::getenv("HYLO_GDN_DECODE_BENCH")) GTEST_SKIP() << "set HYLO_GDN_DECODE_BENCH=1";
  kernels::set_poison_outputs(false);
  for (const Plan& p : {kSmol, kLlama})
    for (int64_t B : {1, 64}) {
      Pair m = make_mixers(p, 9);
      auto st = random_state(*m.bf, B);
      const at::Tensor x = at::randn({B, 1, p.hidden}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
      double us[2];
      for (int fused = 0; fused < 2; ++fused) {
        GatedDeltaNetMixer::set_fused_decode(fused == 1);
        at::cuda::CUDAGraph graph;
        at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
        {
          c10::cuda::CUDAStreamGuard guard(side);
          for (int i = 0; i < 3; ++i) m.bf->forward(x, at::Tensor(), st.get());
          graph.capture_begin();
          for (int i = 0; i < 10; ++i) m.bf->forward(x, at::Tensor(), st.get());  // 10 steps per replay
          graph.capture_end();
          side.synchronize();
        }
        for (int i = 0; i < 5; ++i) graph.replay();
        at::cuda::CUDAEvent t0(cudaEventDefault), t1(cudaEventDefault);
        const int reps = 30;
        t0.record();
        for (int i = 0; i < reps; ++i) graph.replay();
        t1.record();
        t1.synchronize();
        us[fused] = t0.elapsed_time(t1) * 1000.0 / (reps * 10);
      }
      GatedDeltaNetMixer::set_fused_decode(true);
      std::printf("BENCH %-20s B=%-3ld one GDN layer decode step: aten %.1f us, fused %.1f us (%.2fx)\n", p.name,
                  static_cast<long>(B), us[0], us[1], us[0] / us[1]);
    }
}
#else
TEST(GdnDecodeFused, SkippedWithoutCuda) { HYLO_REQUIRE_CUDA(); }
#endif

}  // namespace
}  // namespace hylo
