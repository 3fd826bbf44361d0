// The GDN mixer (FLA GatedDeltaNet layer): registered under MixerKind::kGdn with FLA's parameter names and shapes;
// stateful use is consistent with the stateless forward (split prefill at random points, prefill then one-token
// decode steps); autograd gradients of every parameter and of the input match finite differences in fp64; the
// random initialisation follows FLA's ranges.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "gdn_test_util.h"
#include "hylo/model/mixer.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {
namespace {

ModelConfig gdn_config(int64_t hidden, int64_t heads, int64_t dk, int64_t dv) {
  ModelConfig c;
  c.hidden_size = hidden;
  LayerSpec l;
  l.mixer = MixerKind::kGdn;
  l.gdn.num_heads = heads;
  l.gdn.head_k_dim = dk;
  l.gdn.head_v_dim = dv;
  l.gdn.conv_size = 4;
  c.layers.push_back(l);
  return c;
}

// A mixer built through the registry, FLA-initialised, then given non-default norm weights (FLA's are all 1, which
// would hide a mis-applied weight).
std::unique_ptr<GatedDeltaNetMixer> make_gdn(const ModelConfig& c, at::ScalarType dtype, uint64_t seed) {
  std::unique_ptr<Mixer> m = make_mixer(c, c.layers[0], at::TensorOptions().dtype(dtype));
  EXPECT_EQ(m->kind(), MixerKind::kGdn);
  auto* gdn = dynamic_cast<GatedDeltaNetMixer*>(m.get());
  EXPECT_NE(gdn, nullptr);
  m.release();
  std::unique_ptr<GatedDeltaNetMixer> out(gdn);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  out->init_random(gen);
  out->visit_parameters("", [&](const std::string& name, at::Tensor& t) {
    if (name == "gdn.o_norm.weight") t.copy_(1.0 + 0.1 * at::randn(t.sizes(), gen, at::TensorOptions().dtype(at::kFloat)));
  });
  return out;
}

std::map<std::string, at::Tensor> params_of(Mixer& m) {
  std::map<std::string, at::Tensor> p;
  m.visit_parameters("model.layers.0.", [&](const std::string& n, at::Tensor& t) { p[n] = t; });
  return p;
}

TEST(GatedDeltaNetMixer, RegisteredWithFlaNamesAndShapes) {
  ModelConfig c = gdn_config(12, 2, 4, 8);
  auto m = make_gdn(c, at::kFloat, 1);
  std::map<std::string, std::vector<int64_t>> expected = {
      {"model.layers.0.gdn.q_proj.weight", {8, 12}},    {"model.layers.0.gdn.k_proj.weight", {8, 12}},
      {"model.layers.0.gdn.v_proj.weight", {16, 12}},   {"model.layers.0.gdn.a_proj.weight", {2, 12}},
      {"model.layers.0.gdn.b_proj.weight", {2, 12}},    {"model.layers.0.gdn.A_log", {2}},
      {"model.layers.0.gdn.dt_bias", {2}},              {"model.layers.0.gdn.q_conv1d.weight", {8, 1, 4}},
      {"model.layers.0.gdn.k_conv1d.weight", {8, 1, 4}}, {"model.layers.0.gdn.v_conv1d.weight", {16, 1, 4}},
      {"model.layers.0.gdn.g_proj.weight", {16, 12}},   {"model.layers.0.gdn.o_norm.weight", {8}},
      {"model.layers.0.gdn.o_proj.weight", {12, 16}}};
  auto p = params_of(*m);
  ASSERT_EQ(p.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(p.count(name)) << name;
    EXPECT_EQ(p[name].sizes().vec(), shape) << name;
  }
}

TEST(GatedDeltaNetMixer, InitialisationFollowsFla) {
  ModelConfig c = gdn_config(64, 16, 8, 16);
  std::unique_ptr<Mixer> m = make_mixer(c, c.layers[0], at::TensorOptions().dtype(at::kFloat));
  at::Generator gen = at::detail::createCPUGenerator(3);
  dynamic_cast<GatedDeltaNetMixer&>(*m).init_random(gen);
  auto p = params_of(*m);
  at::Tensor A = p["model.layers.0.gdn.A_log"].exp();
  EXPECT_GE(A.min().item<double>(), 1e-4 * (1 - 1e-6));
  EXPECT_LE(A.max().item<double>(), 16.0);
  at::Tensor dt = at::softplus(p["model.layers.0.gdn.dt_bias"].to(at::kDouble));  // the inverse must round-trip
  EXPECT_GE(dt.min().item<double>(), 1e-3 * (1 - 1e-5));
  EXPECT_LE(dt.max().item<double>(), 1e-1 * (1 + 1e-5));
  EXPECT_EQ(gdn_test::max_abs_diff(p["model.layers.0.gdn.o_norm.weight"], at::ones({16})), 0.0);
  const double lin = 1.0 / std::sqrt(64.0), conv = 1.0 / std::sqrt(4.0);
  EXPECT_LE(gdn_test::max_abs(p["model.layers.0.gdn.q_proj.weight"]), lin);
  EXPECT_GT(gdn_test::max_abs(p["model.layers.0.gdn.q_proj.weight"]), 0.9 * lin);
  EXPECT_LE(gdn_test::max_abs(p["model.layers.0.gdn.o_proj.weight"]), 1.0 / std::sqrt(256.0));
  EXPECT_LE(gdn_test::max_abs(p["model.layers.0.gdn.v_conv1d.weight"]), conv);
  EXPECT_GT(gdn_test::max_abs(p["model.layers.0.gdn.v_conv1d.weight"]), 0.9 * conv);
}

at::Tensor positions(int64_t t0, int64_t n) { return at::arange(t0, t0 + n, at::kLong); }

// Stateful calls over consecutive pieces, each T >= 1; returns the concatenated outputs.
at::Tensor run_pieces(Mixer& m, const at::Tensor& x, const std::vector<int64_t>& lengths, MixerState& st) {
  std::vector<at::Tensor> outs;
  int64_t t0 = 0;
  for (int64_t len : lengths) {
    outs.push_back(m.forward(x.narrow(1, t0, len), positions(t0, len), &st));
    t0 += len;
  }
  return at::cat(outs, 1);
}

TEST(GatedDeltaNetMixer, SplitPrefillAtRandomPointsEqualsOnePrefillFp64) {
  ModelConfig c = gdn_config(16, 3, 4, 6);
  auto m = make_gdn(c, at::kDouble, 5);
  m->set_chunk_size(8);  // several chunks per piece on short inputs
  const int64_t B = 2, T = 57;
  at::manual_seed(6);
  at::Tensor x = at::randn({B, T, 16}, at::kDouble);
  auto st_whole = m->new_state(B, T, at::TensorOptions().dtype(at::kDouble));
  at::Tensor whole = m->forward(x, positions(0, T), st_whole.get());
  at::Tensor stateless = m->forward(x, positions(0, T), nullptr);
  EXPECT_LT(gdn_test::max_abs_diff(whole, stateless) / gdn_test::max_abs(whole), 1e-12);
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<int64_t> lengths;
    for (int64_t left = T; left > 0;) {
      int64_t len = std::min<int64_t>(left, 1 + static_cast<int64_t>(rng() % 20));  // 1-token pieces decode
      lengths.push_back(len);
      left -= len;
    }
    auto st = m->new_state(B, T, at::TensorOptions().dtype(at::kDouble));
    at::Tensor pieces = run_pieces(*m, x, lengths, *st);
    EXPECT_LT(gdn_test::max_abs_diff(pieces, whole) / gdn_test::max_abs(whole), 1e-10) << "trial " << trial;
    auto& a = dynamic_cast<GatedDeltaNetState&>(*st);
    auto& b = dynamic_cast<GatedDeltaNetState&>(*st_whole);
    // Conv states are projected inputs: equal up to the blocking of the projection GEMM over different T.
    EXPECT_LT(gdn_test::max_abs_diff(a.recurrent, b.recurrent) / gdn_test::max_abs(b.recurrent), 1e-10);
    EXPECT_LT(gdn_test::max_abs_diff(a.conv_q, b.conv_q) / gdn_test::max_abs(b.conv_q), 1e-12);
    EXPECT_LT(gdn_test::max_abs_diff(a.conv_k, b.conv_k) / gdn_test::max_abs(b.conv_k), 1e-12);
    EXPECT_LT(gdn_test::max_abs_diff(a.conv_v, b.conv_v) / gdn_test::max_abs(b.conv_v), 1e-12);
  }
}

TEST(GatedDeltaNetMixer, PrefillThenDecodeEqualsForwardFp64) {
  ModelConfig c = gdn_config(16, 2, 8, 8);
  auto m = make_gdn(c, at::kDouble, 8);
  const int64_t B = 1, T = 70;  // the prefill crosses the 64-token chunk boundary
  at::manual_seed(9);
  at::Tensor x = at::randn({B, T, 16}, at::kDouble);
  at::Tensor ref = m->forward(x, positions(0, T), nullptr);
  for (int64_t prefill : {T - 1, T - 3}) {
    auto st = m->new_state(B, T, at::TensorOptions().dtype(at::kDouble));
    std::vector<int64_t> lengths = {prefill};
    for (int64_t t = prefill; t < T; ++t) lengths.push_back(1);
    at::Tensor got = run_pieces(*m, x, lengths, *st);
    EXPECT_LT(gdn_test::max_abs_diff(got, ref) / gdn_test::max_abs(ref), 1e-10) << "prefill " << prefill;
    EXPECT_LT(gdn_test::max_abs_diff(got.narrow(1, T - 1, 1), ref.narrow(1, T - 1, 1)) /
                  gdn_test::max_abs(ref.narrow(1, T - 1, 1)),
              1e-10);
  }
}

// fp32 and bf16 models: decode after prefill against the fp64 model with the same (rounded) weights, within a
// derived tolerance: 4x the error of the stateless forward in that dtype, plus one rounding to the dtype.
TEST(GatedDeltaNetMixer, LowPrecisionDecodeWithinDerivedTolerance) {
  ModelConfig c = gdn_config(32, 2, 16, 16);
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    auto m = make_gdn(c, dt, 10);
    auto m64 = make_gdn(c, at::kDouble, 10);
    auto p = params_of(*m);
    m64->visit_parameters("model.layers.0.", [&](const std::string& n, at::Tensor& t) { t.copy_(p[n]); });
    const int64_t B = 2, T = 40;
    at::manual_seed(11);
    at::Tensor x = at::randn({B, T, 32}).to(dt);
    at::Tensor ref = m64->forward(x.to(at::kDouble), positions(0, T), nullptr);
    const double e_whole = relative_rms_error(m->forward(x, positions(0, T), nullptr), ref);
    auto st = m->new_state(B, T, at::TensorOptions().dtype(dt));
    EXPECT_EQ(dynamic_cast<GatedDeltaNetState&>(*st).recurrent.scalar_type(), at::kFloat);
    std::vector<int64_t> lengths = {17, 1, 1, 20, 1};
    const double e_split = relative_rms_error(run_pieces(*m, x, lengths, *st), ref);
    EXPECT_LE(e_split, 4 * e_whole + gdn_test::unit_roundoff(dt)) << at::toString(dt) << " whole " << e_whole;
  }
}

// Every parameter and the input, element by element, by central differences in fp64 (chunk size 2 so that the
// 5-token input crosses chunk boundaries and pads the last chunk).
TEST(GatedDeltaNetMixer, GradientsMatchFiniteDifferencesFp64) {
  ModelConfig c = gdn_config(4, 2, 3, 2);
  auto m = make_gdn(c, at::kDouble, 12);
  m->set_chunk_size(2);
  const int64_t B = 1, T = 5;
  at::manual_seed(13);
  at::Tensor x = at::randn({B, T, 4}, at::kDouble);
  at::Tensor up = at::randn({B, T, 4}, at::kDouble);
  auto loss = [&](const at::Tensor& xx) { return (m->forward(xx, positions(0, T), nullptr) * up).sum(); };

  std::vector<std::pair<std::string, at::Tensor*>> leaves;
  m->visit_parameters("", [&](const std::string& n, at::Tensor& t) {
    t.requires_grad_(true);
    leaves.push_back({n, &t});
  });
  at::Tensor xg = x.clone().requires_grad_(true);
  loss(xg).backward();
  leaves.push_back({"x", &xg});
  const double h = 1e-6;
  int checked = 0;
  for (auto& [name, t] : leaves) {
    ASSERT_TRUE(t->grad().defined()) << name << " got no gradient";
    at::Tensor grad = t->grad().clone();
    for (int64_t e = 0; e < t->numel(); ++e) {
      at::Tensor flat = t->detach().view(-1);  // perturb in place through a detached alias
      const double orig = flat[e].item<double>();
      flat[e] = orig + h;
      const double lp = loss(name == "x" ? xg.detach() : x).item<double>();
      flat[e] = orig - h;
      const double lm = loss(name == "x" ? xg.detach() : x).item<double>();
      flat[e] = orig;
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(grad.view(-1)[e].item<double>(), fd, 1e-7 * (1.0 + std::abs(fd))) << name << "[" << e << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 200);
}

TEST(GatedDeltaNetMixer, RejectsWrongStateAndShapes) {
  ModelConfig c = gdn_config(8, 2, 4, 4);
  auto m = make_gdn(c, at::kFloat, 14);
  EXPECT_ANY_THROW(m->forward(at::randn({1, 3, 7}), positions(0, 3), nullptr));
  auto st = m->new_state(2, 8, at::TensorOptions().dtype(at::kFloat));
  EXPECT_ANY_THROW(m->forward(at::randn({1, 3, 8}), positions(0, 3), st.get()));  // batch 1 vs state batch 2
  ModelConfig bad = gdn_config(8, 0, 4, 4);
  EXPECT_ANY_THROW(make_mixer(bad, bad.layers[0], at::TensorOptions()));
}

}  // namespace
}  // namespace hylo

namespace hylo {
namespace {

// FLA's switches: use_short_conv = false (plain SiLU, no conv parameters or state) and use_gate = false (no g_proj,
// plain RMSNorm): the parameter set shrinks accordingly and stateful use still equals the stateless forward.
TEST(GatedDeltaNetMixer, WithoutShortConvAndGate) {
  ModelConfig c = gdn_config(12, 2, 4, 6);
  c.layers[0].gdn.use_short_conv = false;
  c.layers[0].gdn.use_gate = false;
  auto m = make_gdn(c, at::kDouble, 15);
  auto p = params_of(*m);
  EXPECT_EQ(p.size(), 9u);
  for (const char* absent : {"q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight", "g_proj.weight"})
    EXPECT_EQ(p.count(std::string("model.layers.0.gdn.") + absent), 0u) << absent;
  const int64_t B = 2, T = 20;
  at::manual_seed(16);
  at::Tensor x = at::randn({B, T, 12}, at::kDouble);
  at::Tensor ref = m->forward(x, positions(0, T), nullptr);
  auto st = m->new_state(B, T, at::TensorOptions().dtype(at::kDouble));
  EXPECT_FALSE(dynamic_cast<GatedDeltaNetState&>(*st).conv_q.defined());
  at::Tensor got = run_pieces(*m, x, {7, 1, 11, 1}, *st);
  EXPECT_LT(gdn_test::max_abs_diff(got, ref) / gdn_test::max_abs(ref), 1e-10);
}

}  // namespace
}  // namespace hylo
