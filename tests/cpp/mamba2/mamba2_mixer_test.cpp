// The Mamba2 mixer: parameter names and shapes (mamba_ssm / Zebra layout), the layer's math against an
// independent re-derivation from Zebra's hybrid_mamba_layer.py semantics (nn.Conv1d, repeat_kv, naive SSD,
// RMSNormGated), seams (split prefill, prefill + decode), and finite-difference gradients for every parameter
// and the input.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "hylo/model/mixer.h"
#include "hylo/model/mixers/mamba2.h"
#include "hylo/ops/ssd.h"
#include "test_util.h"

namespace hylo {
namespace {

using test::max_rel_error;

struct Dims {
  int64_t hidden, heads, kv_groups, dstate, conv, chunk;
  bool repeat_before_conv = false;
};

ModelConfig make_config(const Dims& d) {
  ModelConfig c;
  c.hidden_size = d.hidden;
  LayerSpec l;
  l.mixer = MixerKind::kMamba2;
  Mamba2Spec& m = l.mamba2;
  m.n_heads = d.heads;
  m.head_dim = d.dstate;
  m.d_state = d.dstate;
  m.d_inner = d.heads * d.dstate;
  m.d_xb = d.kv_groups * d.dstate;
  m.conv_size = d.conv;
  m.chunk_size = d.chunk;
  m.norm_group_size = d.dstate;  // Zebra: d_inner / ngroups with ngroups = n_heads
  m.repeat_kv_before_conv = d.repeat_before_conv;
  c.layers.push_back(l);
  return c;
}

// Parameters with the magnitudes of an initialised layer (HYLO.md 2.4), perturbed so that D and the norm
// weight are not exactly 1 (a gradient through them would otherwise be hard to tell from zero).
void randomize(Mixer& mixer, uint64_t seed) {
  at::manual_seed(seed);
  mixer.visit_parameters("", [](const std::string& name, at::Tensor& p) {
    auto o = p.options();
    if (name == "mamba.A_log") {
      p = at::log(at::rand(p.sizes(), o) * 15 + 1);
    } else if (name == "mamba.dt_bias") {
      at::Tensor dt = at::exp(at::rand(p.sizes(), o) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
      p = dt + at::log(-at::expm1(-dt));
    } else if (name == "mamba.D" || name == "mamba.norm.weight") {
      p = 1 + 0.3 * at::randn(p.sizes(), o);
    } else if (name == "mamba.conv1d.weight" || name == "mamba.conv1d.bias") {
      const double bound = 1.0 / std::sqrt(static_cast<double>(p.size(-1) > 1 ? p.size(-1) : 4));
      p = (at::rand(p.sizes(), o) * 2 - 1) * bound;
    } else {
      p = at::randn(p.sizes(), o) / std::sqrt(static_cast<double>(p.size(1)));
    }
  });
}

std::map<std::string, at::Tensor> params_of(Mixer& m) {
  std::map<std::string, at::Tensor> out;
  m.visit_parameters("", [&](const std::string& name, at::Tensor& p) { out[name] = p; });
  return out;
}

const auto kF64 = at::TensorOptions().dtype(at::kDouble);

TEST(Mamba2Mixer, RegisteredWithZebraParameterNamesAndShapes) {
  Dims d{12, 4, 2, 3, 4, 8};
  ModelConfig c = make_config(d);
  auto mixer = make_mixer(c, c.layers[0], kF64);
  ASSERT_EQ(mixer->kind(), MixerKind::kMamba2);
  std::map<std::string, std::vector<int64_t>> shapes;
  mixer->visit_parameters("model.layers.3.",
                          [&](const std::string& n, at::Tensor& p) { shapes[n] = p.sizes().vec(); });
  const int64_t di = 12, dxb = 6, H = 4, conv_dim = di + 2 * dxb;
  std::map<std::string, std::vector<int64_t>> want = {
      {"model.layers.3.mamba.in_proj.weight", {2 * di + 2 * dxb + H, 12}},
      {"model.layers.3.mamba.conv1d.weight", {conv_dim, 1, 4}},
      {"model.layers.3.mamba.conv1d.bias", {conv_dim}},
      {"model.layers.3.mamba.dt_bias", {H}},
      {"model.layers.3.mamba.A_log", {H}},
      {"model.layers.3.mamba.D", {H}},
      {"model.layers.3.mamba.norm.weight", {di}},
      {"model.layers.3.mamba.out_proj.weight", {12, di}},
  };
  EXPECT_EQ(shapes, want);

  auto state = mixer->new_state(2, 100, kF64);
  auto* st = dynamic_cast<Mamba2State*>(state.get());
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->conv.sizes().vec(), (std::vector<int64_t>{2, conv_dim, 3}));
  EXPECT_EQ(st->ssm.sizes().vec(), (std::vector<int64_t>{2, H, 3, 3}));
  EXPECT_EQ(state->bytes(), (2 * conv_dim * 3 + 2 * H * 9) * 8);
  auto st32 = mixer->new_state(1, 1, at::TensorOptions().dtype(at::kBFloat16));
  EXPECT_EQ(dynamic_cast<Mamba2State*>(st32.get())->ssm.scalar_type(), at::kFloat);  // state stays fp32

  Dims bad = d;
  bad.kv_groups = 3;  // 3 x/B groups cannot be repeated to 4 heads
  ModelConfig cb = make_config(bad);
  EXPECT_THROW(make_mixer(cb, cb.layers[0], kF64), std::exception);
}

// Zebra's Mamba2.forward written out step by step with different building blocks than the mixer uses:
// nn.Conv1d (at::conv1d with K-1 left padding, cut to T), repeat_interleave for repeat_kv, the naive SSD
// recurrence, and mamba_ssm's rms_norm_ref(norm_before_gate=False) by hand.
at::Tensor zebra_reference(Mixer& mixer, const Mamba2Spec& s, const at::Tensor& u) {
  auto p = params_of(mixer);
  const int64_t b = u.size(0), t = u.size(1), di = s.d_inner, dxb = s.d_xb, H = s.n_heads, N = s.d_state;
  const int64_t hkv = dxb / N, rep = H / hkv;
  at::Tensor zxbcdt = at::matmul(u, p["mamba.in_proj.weight"].t());
  auto split = zxbcdt.split_with_sizes({di, di + 2 * dxb, H}, -1);
  at::Tensor z = split[0], xBC = split[1], dt = split[2];
  auto rep_kv = [&](const at::Tensor& v) {  // [b, t, hkv*N] -> [b, t, H, N]
    return v.reshape({b, t, hkv, N}).repeat_interleave(rep, 2);
  };
  if (s.repeat_kv_before_conv) {
    auto parts = xBC.split_with_sizes({dxb, dxb, di}, -1);
    xBC = at::cat({rep_kv(parts[0]).reshape({b, t, di}), rep_kv(parts[1]).reshape({b, t, di}), parts[2]}, -1);
  }
  const int64_t C = xBC.size(-1), K = s.conv_size;
  xBC = at::conv1d(xBC.transpose(1, 2), p["mamba.conv1d.weight"], p["mamba.conv1d.bias"], 1, K - 1, 1, C)
            .narrow(2, 0, t)
            .transpose(1, 2);
  xBC = xBC * at::sigmoid(xBC);
  at::Tensor x, B, Cm;
  if (s.repeat_kv_before_conv) {
    auto parts = xBC.split_with_sizes({di, di, di}, -1);
    x = parts[0].reshape({b, t, H, N});
    B = parts[1].reshape({b, t, H, N});
    Cm = parts[2].reshape({b, t, H, N});
  } else {
    auto parts = xBC.split_with_sizes({dxb, dxb, di}, -1);
    x = rep_kv(parts[0]);
    B = rep_kv(parts[1]);
    Cm = parts[2].reshape({b, t, H, N});
  }
  at::Tensor delta = at::log1p(at::exp(dt + p["mamba.dt_bias"]));
  at::Tensor A = -at::exp(p["mamba.A_log"]);
  at::Tensor y = ssd_naive(x, delta, A, B, Cm, p["mamba.D"], at::Tensor()).y.reshape({b, t, di});
  at::Tensor g = (y * (z * at::sigmoid(z))).reshape({b, t, di / s.norm_group_size, s.norm_group_size});
  g = g * at::rsqrt(g.pow(2).mean(-1, true) + s.norm_eps);
  y = g.reshape({b, t, di}) * p["mamba.norm.weight"];
  return at::matmul(y, p["mamba.out_proj.weight"].t());
}

TEST(Mamba2Mixer, ForwardEqualsZebraLayerMath) {
  at::NoGradGuard no_grad;
  for (bool before : {false, true}) {
    Dims d{10, 6, 2, 4, 4, 8, before};
    ModelConfig c = make_config(d);
    auto mixer = make_mixer(c, c.layers[0], kF64);
    randomize(*mixer, 5);
    at::Tensor u = at::randn({2, 29, 10}, kF64);
    at::Tensor got = mixer->forward(u, at::arange(29), nullptr);
    at::Tensor want = zebra_reference(*mixer, c.layers[0].mamba2, u);
    EXPECT_LE(max_rel_error(got, want), 1e-12) << "repeat_kv_before_conv=" << before;
  }
}

// Prefill in random pieces (pieces of one token take the recurrent path) == one stateless forward, and the
// state after the pieces == the state after one prefill.
TEST(Mamba2Mixer, SplitPrefillEqualsOnePass) {
  at::NoGradGuard no_grad;
  std::mt19937 rng(7);
  for (bool before : {false, true}) {
    Dims d{8, 4, 2, 4, 4, 8, before};
    ModelConfig c = make_config(d);
    auto mixer = make_mixer(c, c.layers[0], kF64);
    randomize(*mixer, 9);
    const int64_t T = 45;
    at::Tensor u = at::randn({2, T, 8}, kF64);
    at::Tensor whole = mixer->forward(u, at::arange(T), nullptr);
    auto one = mixer->new_state(2, T, kF64);
    mixer->forward(u, at::arange(T), one.get());
    for (int trial = 0; trial < 4; ++trial) {
      auto state = mixer->new_state(2, T, kF64);
      std::vector<at::Tensor> outs;
      std::string cuts;
      for (int64_t pos = 0; pos < T;) {
        int64_t n = std::min<int64_t>(T - pos, trial == 0 ? 1 : 1 + static_cast<int64_t>(rng() % 17));
        outs.push_back(mixer->forward(u.narrow(1, pos, n), at::arange(pos, pos + n), state.get()));
        cuts += std::to_string(n) + " ";
        pos += n;
      }
      EXPECT_LE(max_rel_error(at::cat(outs, 1), whole), 1e-12) << "pieces " << cuts << " before=" << before;
      auto* a = dynamic_cast<Mamba2State*>(state.get());
      auto* b = dynamic_cast<Mamba2State*>(one.get());
      EXPECT_LE(max_rel_error(a->ssm, b->ssm), 1e-12) << "pieces " << cuts;
      EXPECT_LE(max_rel_error(a->conv, b->conv), 1e-15) << "pieces " << cuts;
    }
  }
}

TEST(Mamba2Mixer, PrefillThenDecodeStepEqualsForward) {
  at::NoGradGuard no_grad;
  for (int64_t T : {2, 3, 9, 17}) {
    Dims d{8, 4, 1, 4, 4, 8};
    ModelConfig c = make_config(d);
    auto mixer = make_mixer(c, c.layers[0], kF64);
    randomize(*mixer, 13);
    at::Tensor u = at::randn({3, T, 8}, kF64);
    at::Tensor whole = mixer->forward(u, at::arange(T), nullptr);
    auto state = mixer->new_state(3, T, kF64);
    mixer->forward(u.narrow(1, 0, T - 1), at::arange(T - 1), state.get());
    at::Tensor last = mixer->forward(u.narrow(1, T - 1, 1), at::arange(T - 1, T), state.get());
    EXPECT_LE(max_rel_error(last, whole.narrow(1, T - 1, 1)), 1e-12) << "T=" << T;
  }
}

// fp32 and bf16 models against the fp64 model with the same (rounded) parameters and input: the error must stay
// within a small multiple of what the fp64 reference itself loses when its input and output are rounded to the
// working dtype (the unavoidable part), plus a floor.
TEST(Mamba2Mixer, LowPrecisionWithinDerivedTolerance) {
  at::NoGradGuard no_grad;
  Dims d{16, 4, 2, 8, 4, 16};
  ModelConfig c = make_config(d);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    auto lo = make_mixer(c, c.layers[0], at::TensorOptions().dtype(dtype));
    randomize(*lo, 17);
    auto hi = make_mixer(c, c.layers[0], kF64);
    auto lp = params_of(*lo);
    hi->visit_parameters("", [&](const std::string& n, at::Tensor& p) { p = lp[n].to(at::kDouble); });
    at::Tensor u = at::randn({1, 70, 16}, kF64).to(dtype);
    at::Tensor ref = hi->forward(u.to(at::kDouble), at::arange(70), nullptr);
    at::Tensor got = lo->forward(u, at::arange(70), nullptr);
    const double err = max_rel_error(got, ref);
    const double rounding = max_rel_error(ref.to(dtype), ref);
    std::printf("[mamba2 mixer %s] err %.3g, output rounding %.3g\n", at::toString(dtype), err, rounding);
    EXPECT_LE(err, 8 * rounding + 8 * test::eps_of(dtype)) << at::toString(dtype);
  }
}

TEST(Mamba2Mixer, GradientsMatchFiniteDifferences) {
  for (bool before : {false, true}) {
    Dims d{4, 2, 1, 2, 3, 2, before};
    ModelConfig c = make_config(d);
    auto mixer = make_mixer(c, c.layers[0], kF64);
    randomize(*mixer, 23);
    std::vector<std::string> names{"x"};
    std::vector<at::Tensor> inputs{at::randn({1, 5, 4}, kF64)};
    for (auto& [n, p] : params_of(*mixer)) {
      names.push_back(n);
      inputs.push_back(p);
    }
    at::Tensor w = at::randn({1, 5, 4}, kF64);
    test::expect_gradients_match_finite_differences(
        [&](const std::vector<at::Tensor>& v) {
          size_t i = 1;
          std::map<std::string, at::Tensor> by_name;
          for (; i < v.size(); ++i) by_name[names[i]] = v[i];
          mixer->visit_parameters("", [&](const std::string& n, at::Tensor& p) { p = by_name.at(n); });
          return (mixer->forward(v[0], at::arange(5), nullptr) * w).sum();
        },
        inputs, names);
  }
}

}  // namespace
}  // namespace hylo
