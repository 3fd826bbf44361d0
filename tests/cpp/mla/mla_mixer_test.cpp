// The MLA mixer: registration and parameter names, stateful forms (split prefill, prefill + absorbed decode)
// against the stateless forward, finite-difference gradients, HyLo shapes and the latent cache size.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "hylo/core/result.h"
#include "hylo/model/mixers/mla.h"
#include "mla_test_util.h"

namespace hylo {
namespace {

using mla_test::config_with;
using mla_test::fill_parameters;
using mla_test::randn;

at::TensorOptions f64() { return at::TensorOptions().dtype(at::kDouble); }
at::Tensor positions(int64_t start, int64_t count) {
  return at::arange(start, start + count, at::TensorOptions().dtype(at::kLong));
}

std::unique_ptr<MlaMixer> make(const MlaSpec& spec, int64_t hidden, uint64_t seed,
                               at::ScalarType dtype = at::kDouble) {
  auto m = std::make_unique<MlaMixer>(config_with(hidden, spec), config_with(hidden, spec).layers[0],
                                      at::TensorOptions().dtype(dtype));
  fill_parameters(*m, seed);
  return m;
}

// The variants the tests sweep: HyLo (grouped, no norms), DeepSeek (norms, one group per head, mscale_all_dim),
// full-rank q with biases, and plain rope.
std::vector<std::pair<std::string, MlaSpec>> variants() {
  std::vector<std::pair<std::string, MlaSpec>> out;
  MlaSpec hylo = mla_test::tiny_spec();
  out.push_back({"hylo", hylo});
  MlaSpec ds = hylo;
  ds.num_kv_groups = ds.num_heads;
  ds.latent_norms = true;
  ds.rope.mscale = 0.8;
  ds.rope.mscale_all_dim = 0.6;
  out.push_back({"deepseek", ds});
  MlaSpec fullq = hylo;
  fullq.q_lora_rank = 0;
  fullq.bias = true;
  fullq.num_kv_groups = 1;
  out.push_back({"full_q_bias", fullq});
  MlaSpec plain = hylo;
  plain.rope = RopeConfig{};
  out.push_back({"plain_rope", plain});
  return out;
}

TEST(MlaMixer, RegisteredWithAmdParameterNames) {
  MlaSpec s = mla_test::tiny_spec();
  ModelConfig cfg = config_with(6, s);
  std::unique_ptr<Mixer> m = make_mixer(cfg, cfg.layers[0], f64());
  ASSERT_NE(dynamic_cast<MlaMixer*>(m.get()), nullptr);
  EXPECT_EQ(m->kind(), MixerKind::kMla);
  std::map<std::string, std::vector<int64_t>> shapes;
  m->visit_parameters("model.layers.1.", [&](const std::string& n, at::Tensor& t) { shapes[n] = t.sizes().vec(); });
  const std::map<std::string, std::vector<int64_t>> want = {
      {"model.layers.1.mla.q_a_proj.weight", {7, 6}},
      {"model.layers.1.mla.q_b_proj.weight", {4 * 6, 7}},
      {"model.layers.1.mla.kv_a_proj_with_mqa.weight", {5 + 4, 6}},
      {"model.layers.1.mla.kv_b_proj.weight", {2 * (2 + 3), 5}},
      {"model.layers.1.mla.out_proj.weight", {6, 4 * 3}}};
  EXPECT_EQ(shapes, want);

  s.latent_norms = true;
  s.bias = true;
  cfg = config_with(6, s);
  std::set<std::string> names;
  make_mixer(cfg, cfg.layers[0], f64())->visit_parameters("", [&](const std::string& n, at::Tensor&) { names.insert(n); });
  EXPECT_EQ(names, (std::set<std::string>{"mla.q_a_proj.weight", "mla.q_a_proj.bias", "mla.q_a_layernorm.weight",
                                          "mla.q_b_proj.weight", "mla.kv_a_proj_with_mqa.weight",
                                          "mla.kv_a_proj_with_mqa.bias", "mla.kv_a_layernorm.weight",
                                          "mla.kv_b_proj.weight", "mla.out_proj.weight", "mla.out_proj.bias"}));
  s.q_lora_rank = 0;
  cfg = config_with(6, s);
  names.clear();
  make_mixer(cfg, cfg.layers[0], f64())->visit_parameters("", [&](const std::string& n, at::Tensor&) { names.insert(n); });
  EXPECT_TRUE(names.count("mla.q_proj.weight") && names.count("mla.q_proj.bias") && !names.count("mla.q_a_proj.weight"));
}

// Stateless forward in either form equals the other (fp64).
TEST(MlaMixer, FormsAgreeStateless) {
  for (auto& [name, spec] : variants()) {
    auto m = make(spec, 6, 1);
    at::Tensor x = randn({2, 7, 6}, 2);
    m->set_form(MlaForm::kDecompressed);
    at::Tensor dec = m->forward(x, positions(3, 7), nullptr);
    m->set_form(MlaForm::kAbsorbed);
    at::Tensor abs = m->forward(x, positions(3, 7), nullptr);
    EXPECT_LT(mla_test::max_abs_diff(dec, abs), 1e-13) << name;
    RecordProperty(name + "_fp64_max_abs_diff", mla_test::sci(mla_test::max_abs_diff(dec, abs)));
  }
}

// Prefill in pieces at random split points == one stateless forward; and the pieces may use either form.
TEST(MlaMixer, SplitPrefillEqualsOnePrefill) {
  std::mt19937 rng(7);
  for (auto& [name, spec] : variants()) {
    auto m = make(spec, 6, 11);
    const int64_t t = 13;
    at::Tensor x = randn({2, t, 6}, 12);
    at::Tensor whole = m->forward(x, positions(0, t), nullptr);  // [B, T, D]
    for (int trial = 0; trial < 4; ++trial) {
      m->set_form(trial == 3 ? MlaForm::kAbsorbed : MlaForm::kAuto);
      auto state = m->new_state(2, t + 3, f64());
      std::vector<at::Tensor> pieces;
      int64_t done = 0;
      while (done < t) {
        const int64_t n = std::min<int64_t>(t - done, 1 + rng() % 5);
        pieces.push_back(m->forward(x.narrow(1, done, n), positions(done, n), state.get()));
        done += n;
      }
      EXPECT_EQ(static_cast<MlaState*>(state.get())->length(), t);
      EXPECT_LT(mla_test::max_abs_diff(at::cat(pieces, 1), whole), 1e-13) << name << " trial " << trial;
    }
  }
}

// prefill(T-1) (decompressed) + one decode step (absorbed, the automatic choice for T == 1) == forward(T).
TEST(MlaMixer, PrefillThenAbsorbedDecodeEqualsForward) {
  for (auto& [name, spec] : variants()) {
    auto m = make(spec, 6, 21);
    const int64_t t = 9;
    at::Tensor x = randn({3, t, 6}, 22);
    at::Tensor whole = m->forward(x, positions(0, t), nullptr);
    auto state = m->new_state(3, t, f64());
    at::Tensor pre = m->forward(x.narrow(1, 0, t - 1), positions(0, t - 1), state.get());
    at::Tensor step = m->forward(x.narrow(1, t - 1, 1), positions(t - 1, 1), state.get());
    EXPECT_LT(mla_test::max_abs_diff(pre, whole.narrow(1, 0, t - 1)), 1e-13) << name;
    EXPECT_LT(mla_test::max_abs_diff(step, whole.narrow(1, t - 1, 1)), 1e-13) << name;
    // The cache was sized for t tokens: one more is an error naming the capacity, not a silent overwrite.
    EXPECT_THROW(m->forward(x.narrow(1, 0, 1), positions(t, 1), state.get()), Error);
  }
}

// fp32: prefill + absorbed decode against the fp64 forward, within a small multiple of what the stateless
// fp32 forward (decompressed, the reference form) gets.
TEST(MlaMixer, Fp32DecodeWithinDerivedTolerance) {
  MlaSpec spec = mla_test::tiny_spec();
  spec.rope.factor = 32.0;
  auto m64 = make(spec, 6, 31);
  auto m32 = make(spec, 6, 31, at::kFloat);
  const int64_t t = 12;
  at::Tensor x = randn({2, t, 6}, 32);
  at::Tensor pos = positions(4000, t);  // long positions: fp64 angles, cast once
  at::Tensor ref = m64->forward(x, pos, nullptr);
  at::Tensor x32 = x.to(at::kFloat);
  const double base = mla_test::rel_rms(m32->forward(x32, pos, nullptr), ref);
  auto state = m32->new_state(2, t, at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> outs;
  outs.push_back(m32->forward(x32.narrow(1, 0, 5), pos.narrow(0, 0, 5), state.get()));
  for (int64_t i = 5; i < t; ++i) outs.push_back(m32->forward(x32.narrow(1, i, 1), pos.narrow(0, i, 1), state.get()));
  const double err = mla_test::rel_rms(at::cat(outs, 1), ref);
  EXPECT_LE(err, 4.0 * base + 8.0 * mla_test::kEps32) << "stateless fp32 " << base << " decode fp32 " << err;
  RecordProperty("fp32_stateless_rel_rms", mla_test::sci(base));
  RecordProperty("fp32_cached_rel_rms", mla_test::sci(err));
  EXPECT_LT(base, 1e-5);
}

// bf16 serving path: bf16 weights and a bf16 latent cache, prefill then absorbed decode, against the fp64
// forward; within a small multiple of what the stateless bf16 forward (decompressed) gets.
TEST(MlaMixer, Bf16CachedDecodeWithinDerivedTolerance) {
  for (auto& [name, spec] : variants()) {
    auto m64 = make(spec, 6, 61);
    auto m16 = make(spec, 6, 61, at::kBFloat16);
    const int64_t t = 10;
    at::Tensor x = randn({2, t, 6}, 62);
    at::Tensor pos = positions(100, t);
    at::Tensor ref = m64->forward(x, pos, nullptr);
    at::Tensor x16 = x.to(at::kBFloat16);
    const double base = mla_test::rel_rms(m16->forward(x16, pos, nullptr), ref);
    auto state = m16->new_state(2, t, at::TensorOptions().dtype(at::kBFloat16));
    std::vector<at::Tensor> outs{m16->forward(x16.narrow(1, 0, 4), pos.narrow(0, 0, 4), state.get())};
    for (int64_t i = 4; i < t; ++i) outs.push_back(m16->forward(x16.narrow(1, i, 1), pos.narrow(0, i, 1), state.get()));
    const double err = mla_test::rel_rms(at::cat(outs, 1), ref);
    EXPECT_EQ(outs.back().scalar_type(), at::kBFloat16);
    EXPECT_LE(err, 4.0 * base) << name << ": stateless bf16 " << base << ", cached decode bf16 " << err;
    RecordProperty(name + "_bf16_stateless_rel_rms", mla_test::sci(base));
    RecordProperty(name + "_bf16_cached_rel_rms", mla_test::sci(err));
  }
}

// On a CUDA device (skipped without one): fp32 and bf16 weights on the GPU, stateless and prefill + absorbed
// decode with the latent cache on the GPU, against the fp64 CPU forward. The stateless fp32 GPU error may be at
// most 4x the CPU's, and each cached run at most 4x its own stateless error (fp32 with an 8-ulp floor).
TEST(MlaMixer, CudaMatchesFp64Reference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (auto& [name, spec] : variants()) {
    auto m64 = make(spec, 6, 71);
    const int64_t t = 12;
    at::Tensor x = randn({2, t, 6}, 72);
    at::Tensor pos = positions(300, t);
    at::Tensor ref = m64->forward(x, pos, nullptr);
    const double cpu32 = mla_test::rel_rms(make(spec, 6, 71, at::kFloat)->forward(x.to(at::kFloat), pos, nullptr), ref);
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      at::TensorOptions opts = at::TensorOptions().dtype(dtype).device(at::kCUDA);
      auto m = std::make_unique<MlaMixer>(config_with(6, spec), config_with(6, spec).layers[0], opts);
      m64->visit_parameters("", [&](const std::string& n, at::Tensor& src) {
        m->visit_parameters("", [&](const std::string& n2, at::Tensor& dst) {
          if (n2 == n) dst.copy_(src);
        });
      });
      at::Tensor xg = x.to(opts);
      at::Tensor pg = pos.to(at::kCUDA);
      at::Tensor whole = m->forward(xg, pg, nullptr);
      ASSERT_TRUE(whole.is_cuda());
      const double base = mla_test::rel_rms(whole.cpu(), ref);
      auto state = m->new_state(2, t, opts);
      std::vector<at::Tensor> outs{m->forward(xg.narrow(1, 0, 5), pg.narrow(0, 0, 5), state.get())};
      for (int64_t i = 5; i < t; ++i) outs.push_back(m->forward(xg.narrow(1, i, 1), pg.narrow(0, i, 1), state.get()));
      const double err = mla_test::rel_rms(at::cat(outs, 1).cpu(), ref);
      const double floor = dtype == at::kFloat ? 8.0 * mla_test::kEps32 : 0.0;
      if (dtype == at::kFloat) EXPECT_LE(base, 4.0 * cpu32 + floor) << name << ": cpu fp32 " << cpu32;
      EXPECT_LE(err, 4.0 * base + floor) << name << " " << c10::toString(dtype) << ": stateless " << base;
      RecordProperty(name + "_cuda_" + c10::toString(dtype) + "_stateless_rel_rms", mla_test::sci(base));
      RecordProperty(name + "_cuda_" + c10::toString(dtype) + "_cached_rel_rms", mla_test::sci(err));
    }
  }
}

// Central differences in fp64 for every parameter tensor and the input (up to 12 seeded entries of each, all of
// the small ones), in both forms.
TEST(MlaMixer, GradientsMatchFiniteDifferences) {
  double worst_all = 0.0;
  for (auto& [name, spec] : variants()) {
    if (name == "plain_rope") continue;  // same graph as "hylo" with other tables
    for (MlaForm form : {MlaForm::kDecompressed, MlaForm::kAbsorbed}) {
      auto m = make(spec, 6, 41);
      m->set_form(form);
      at::Tensor x = randn({2, 4, 6}, 42);
      at::Tensor w = randn({2, 4, 6}, 43);
      at::Tensor pos = positions(2, 4);
      std::vector<std::pair<std::string, at::Tensor*>> targets;
      m->visit_parameters("", [&](const std::string& n, at::Tensor& t) { targets.push_back({n, &t}); });
      targets.push_back({"x", &x});
      for (auto& [n, t] : targets) t->requires_grad_(true);
      at::Tensor loss = (m->forward(x, pos, nullptr) * w).sum();
      loss.backward();
      c10::NoGradGuard no_grad;
      for (auto& [n, t] : targets) {
        at::Tensor grad = t->grad().clone();
        at::Tensor flat = t->view({-1});
        const double h = 1e-6;
        double worst = 0.0;
        std::vector<int64_t> picks;
        for (int64_t i = 0; i < flat.numel(); ++i) picks.push_back(i);
        std::shuffle(picks.begin(), picks.end(), std::mt19937(static_cast<unsigned>(flat.numel())));
        if (picks.size() > 12) picks.resize(12);
        for (int64_t i : picks) {
          const double orig = flat[i].item<double>();
          flat[i] = orig + h;
          const double up = (m->forward(x, pos, nullptr) * w).sum().item<double>();
          flat[i] = orig - h;
          const double down = (m->forward(x, pos, nullptr) * w).sum().item<double>();
          flat[i] = orig;
          const double fd = (up - down) / (2 * h);
          const double g = grad.view({-1})[i].item<double>();
          // Central differences: truncation ~h^2 |f'''| and cancellation ~eps |f| / h, both ~1e-10 here.
          worst = std::max(worst, std::abs(fd - g) / std::max(1.0, std::abs(g)));
        }
        EXPECT_LT(worst, 1e-7) << name << " form " << static_cast<int>(form) << " tensor " << n;
        worst_all = std::max(worst_all, worst);
      }
    }
  }
  RecordProperty("worst_fd_mismatch", mla_test::sci(worst_all));
}

// HyLo geometries at small T: parameter shapes, cache width, and the two forms agreeing.
TEST(MlaMixer, HyloShapes) {
  struct Geo {
    const char* name;
    int64_t d, h, rq, rkv, nope, rope, v, groups;
    double theta, factor;
    int64_t orig;
  };
  const Geo geos[] = {{"llama-1b", 2048, 32, 1344, 128, 32, 32, 64, 8, 500000.0, 32.0, 2048},
                      {"qwen3-1.7b", 2048, 16, 1344, 256, 64, 64, 128, 8, 1e6, 2.0, 32768}};
  for (const Geo& g : geos) {
    MlaSpec s;
    s.num_heads = g.h;
    s.q_lora_rank = g.rq;
    s.kv_lora_rank = g.rkv;
    s.qk_nope_head_dim = g.nope;
    s.qk_rope_head_dim = g.rope;
    s.v_head_dim = g.v;
    s.num_kv_groups = g.groups;
    s.rope.theta = g.theta;
    s.rope.type = "yarn";
    s.rope.factor = g.factor;
    s.rope.original_max_position_embeddings = g.orig;
    auto m = make(s, g.d, 51, at::kFloat);
    std::map<std::string, std::vector<int64_t>> shapes;
    m->visit_parameters("", [&](const std::string& n, at::Tensor& t) { shapes[n] = t.sizes().vec(); });
    EXPECT_EQ(shapes["mla.q_a_proj.weight"], (std::vector<int64_t>{g.rq, g.d})) << g.name;
    EXPECT_EQ(shapes["mla.q_b_proj.weight"], (std::vector<int64_t>{g.h * (g.nope + g.rope), g.rq})) << g.name;
    EXPECT_EQ(shapes["mla.kv_a_proj_with_mqa.weight"], (std::vector<int64_t>{g.rkv + g.rope, g.d})) << g.name;
    EXPECT_EQ(shapes["mla.kv_b_proj.weight"], (std::vector<int64_t>{8 * (g.nope + g.v), g.rkv})) << g.name;
    EXPECT_EQ(shapes["mla.out_proj.weight"], (std::vector<int64_t>{g.d, g.h * g.v})) << g.name;

    const int64_t t = 5;
    at::Tensor x = randn({1, t, g.d}, 52, at::kFloat);
    at::Tensor whole = m->forward(x, positions(0, t), nullptr);
    ASSERT_EQ(whole.sizes(), (std::vector<int64_t>{1, t, g.d}));
    at::Tensor ref = make(s, g.d, 51)->forward(x.to(at::kDouble), positions(0, t), nullptr);  // same weights, fp64
    const double base = mla_test::rel_rms(whole, ref);
    auto state = m->new_state(1, 8, at::TensorOptions().dtype(at::kBFloat16));
    // Cache bytes per token: (r_kv + rope) * sizeof(bf16) -- 320 B for Llama-1B, 640 B for Qwen3-1.7B.
    EXPECT_EQ(state->bytes(), 8 * (g.rkv + g.rope) * 2) << g.name;
    auto st32 = m->new_state(1, t, at::TensorOptions().dtype(at::kFloat));
    EXPECT_EQ(st32->bytes() / t, (g.rkv + g.rope) * 4) << g.name;
    at::Tensor pre = m->forward(x.narrow(1, 0, t - 1), positions(0, t - 1), st32.get());
    at::Tensor step = m->forward(x.narrow(1, t - 1, 1), positions(t - 1, 1), st32.get());
    const double err = mla_test::rel_rms(at::cat({pre, step}, 1), ref);
    EXPECT_LE(err, 4.0 * base + 8.0 * mla_test::kEps32) << g.name << " stateless " << base << " cached " << err;
    RecordProperty(std::string(g.name) + "_fp32_stateless_rel_rms", mla_test::sci(base));
    RecordProperty(std::string(g.name) + "_fp32_cached_rel_rms", mla_test::sci(err));
  }
}

TEST(MlaMixer, SpecErrors) {
  MlaSpec s = mla_test::tiny_spec();
  s.num_kv_groups = 3;  // does not divide 4 heads
  EXPECT_THROW(make(s, 6, 1), Error);
  s = mla_test::tiny_spec();
  s.qk_rope_head_dim = 3;
  EXPECT_THROW(make(s, 6, 1), Error);
  auto m = make(mla_test::tiny_spec(), 6, 1);
  EXPECT_THROW(m->forward(randn({1, 3, 5}, 1), positions(0, 3), nullptr), Error);   // wrong hidden size
  EXPECT_THROW(m->forward(randn({1, 3, 6}, 1), positions(0, 2), nullptr), Error);   // positions length
}

}  // namespace
}  // namespace hylo
