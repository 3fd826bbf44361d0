// Property tests that pin the initialisers (issue 4 acceptance):
//  * full-rank MLA init reproduces the teacher attention output to fp64 precision (one KV head, rotation off);
//  * at truncated rank the factor error equals the Eckart-Young tail energy, and the written factors are the rows
//    of the best rank-r approximation that the MLA keeps;
//  * Mamba2 init with decay, conv, gate and norm off (A = 0, dt = 1, D = 0) is causal linear attention on the
//    teacher's Q/K/V;
//  * GDN init: every copied block equals its source slice after GQA expansion.
//
// Tolerance for fp64 identities: the same math in fp64 has rounding error of order n * eps * ||.|| with n <= 64
// accumulated products and an SVD backward error of order n * eps (eps = 2.2e-16), i.e. <= ~1e-13 relative.
// kFp64Tol = 1e-10 leaves three orders of margin, while any bookkeeping error (a wrong row, head or order)
// gives O(1) relative errors.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "hylo/config/layer_plan.h"
#include "hylo/model/mixer.h"
#include "hylo/ops/ssd.h"
#include "hylo/upcycle/init_gdn.h"
#include "hylo/upcycle/init_mamba2.h"
#include "hylo/upcycle/init_mla.h"

namespace hylo {
namespace {

constexpr double kFp64Tol = 1e-10;
const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

double rel(const at::Tensor& a, const at::Tensor& b) { return init::relative_frobenius_error(a, b); }

// A teacher attention with random fp64 weights (scaled like trained projections: entries ~ 1/sqrt(D)).
init::TeacherAttention random_attention(int64_t d, int64_t h, int64_t hkv, int64_t dh, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  init::TeacherAttention t;
  t.num_heads = h;
  t.num_kv_heads = hkv;
  t.head_dim = dh;
  const double s = 1.0 / std::sqrt(double(d));
  t.wq = at::randn({h * dh, d}, g, kF64) * s;    // [H*Dh, D]
  t.wk = at::randn({hkv * dh, d}, g, kF64) * s;  // [Hkv*Dh, D]
  t.wv = at::randn({hkv * dh, d}, g, kF64) * s;  // [Hkv*Dh, D]
  t.wo = at::randn({d, h * dh}, g, kF64) * s;    // [D, H*Dh]
  return t;
}

ModelConfig teacher_config(int64_t d, int64_t h, int64_t hkv, int64_t dh) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 11;
  c.hidden_size = d;
  c.rope.theta = 10000.0;
  LayerSpec l;
  l.mixer = MixerKind::kGqa;
  l.gqa.num_heads = h;
  l.gqa.num_kv_heads = hkv;
  l.gqa.head_dim = dh;
  l.intermediate_size = 8;
  c.layers = {l};
  c.backbone_attention = l.gqa;
  c.backbone_intermediate_size = 8;
  return c;
}

// Assigns `params` (names relative to the layer) to a mixer's parameters; every mixer parameter must be given.
void load_mixer(Mixer& m, const init::NamedTensors& params) {
  int n = 0;
  m.visit_parameters("", [&](const std::string& name, at::Tensor& t) {
    auto it = params.find(name);
    ASSERT_NE(it, params.end()) << "no value for " << name;
    t = it->second.reshape(t.sizes()).to(t.scalar_type()).clone();
    ++n;
  });
  EXPECT_EQ(n, static_cast<int>(params.size()));
}

struct FullRankCase {
  int64_t groups;
  int64_t q_rank;  // 0: uncompressed q_proj; else full rank min(H*Dh, D)
};

class MlaFullRank : public ::testing::TestWithParam<FullRankCase> {};

TEST_P(MlaFullRank, ReproducesTeacherAttention) {
  const int64_t d = 64, h = 4, hkv = 1, dh = 16;
  init::TeacherAttention t = random_attention(d, h, hkv, dh, 7);
  ModelConfig tc = teacher_config(d, h, hkv, dh);

  MlaSpec m;
  m.num_heads = h;
  m.qk_nope_head_dim = 8;
  m.qk_rope_head_dim = 8;
  m.v_head_dim = dh;
  m.num_kv_groups = GetParam().groups;
  m.q_lora_rank = GetParam().q_rank;
  m.kv_lora_rank = std::min(2 * m.num_kv_groups * dh, d);  // full rank of the stacked [W_k; W_v]
  m.rope.type = "yarn";
  m.rope.factor = 1.0;                                       // YaRN factor 1: plain rotation
  m.rope.theta = tc.rope.theta;
  init::MlaInit mi = init::init_mla(t, m);
  EXPECT_LT(mi.kv_error, kFp64Tol);
  EXPECT_LT(mi.k_pe_error, kFp64Tol);  // one KV head: the head mean is that head
  if (m.q_lora_rank) EXPECT_LT(mi.q_error, kFp64Tol);

  ModelConfig sc = tc;
  sc.layers[0].mixer = MixerKind::kMla;
  sc.layers[0].mla = m;
  auto gqa = make_mixer(tc, tc.layers[0], kF64);
  auto mla = make_mixer(sc, sc.layers[0], kF64);
  load_mixer(*gqa, {{"self_attn.q_proj.weight", t.wq}, {"self_attn.k_proj.weight", t.wk},
                    {"self_attn.v_proj.weight", t.wv}, {"self_attn.o_proj.weight", t.wo}});
  load_mixer(*mla, mi.params);

  at::Generator g = at::detail::createCPUGenerator(3);
  at::Tensor x = at::randn({2, 9, d}, g, kF64);                 // [B, T, D]
  at::Tensor positions = at::zeros({9}, at::kLong);             // rotation off: every angle 0
  at::Tensor got = mla->forward(x, positions, nullptr);         // [B, T, D]
  // The teacher's attention in fp64, written out (at position 0 RoPE is the identity): softmax(q k^T / sqrt(Dh)
  // + causal) v per head, every head reading the one KV head.
  at::Tensor q = at::linear(x, t.wq).view({2, 9, h, dh}).transpose(1, 2);  // [B, H, T, Dh]
  at::Tensor k = at::linear(x, t.wk).view({2, 9, 1, dh}).transpose(1, 2);  // [B, 1, T, Dh]
  at::Tensor v = at::linear(x, t.wv).view({2, 9, 1, dh}).transpose(1, 2);  // [B, 1, T, Dh]
  at::Tensor scores = at::matmul(q, k.transpose(2, 3)) / std::sqrt(double(dh));  // [B, H, T, T]
  scores = scores.masked_fill(at::ones({9, 9}, at::kBool).triu(1), -INFINITY);
  at::Tensor o = at::matmul(scores.softmax(-1), v).transpose(1, 2).reshape({2, 9, h * dh});  // [B, T, H*Dh]
  at::Tensor want = at::linear(o, t.wo);                        // [B, T, D]
  EXPECT_LT(rel(got, want), kFp64Tol);
  // The teacher's own mixer computes its attention in fp32 (ops::causal_attention_reference), so it agrees to
  // fp32 precision only: a few units of 2^-24 relative, far from the O(1) of a wrong init.
  EXPECT_LT(rel(gqa->forward(x, positions, nullptr), want), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Init, MlaFullRank,
                         ::testing::Values(FullRankCase{1, 64}, FullRankCase{1, 0}, FullRankCase{2, 64},
                                           FullRankCase{4, 64}));

TEST(MlaInit, TruncatedRankErrorIsEckartYoungTail) {
  const int64_t d = 64, h = 4, hkv = 2, dh = 16, nope = 8, rope = 8, groups = 4, rq = 20, rkv = 24;
  init::TeacherAttention t = random_attention(d, h, hkv, dh, 11);
  MlaSpec m;
  m.num_heads = h;
  m.qk_nope_head_dim = nope;
  m.qk_rope_head_dim = rope;
  m.v_head_dim = dh;
  m.num_kv_groups = groups;
  m.q_lora_rank = rq;
  m.kv_lora_rank = rkv;
  init::MlaInit mi = init::init_mla(t, m);

  // Query: nope + rope = Dh keeps every row, so ||W_q - W_qb W_qa||^2 / ||W_q||^2 is the tail of sigma^2.
  at::Tensor sq = at::linalg_svdvals(t.wq);  // [min(H*Dh, D)]
  const double q_tail = (sq.slice(0, rq) * sq.slice(0, rq)).sum().item<double>() / (sq * sq).sum().item<double>();
  EXPECT_NEAR(mi.q_tail, q_tail, kFp64Tol * q_tail);
  EXPECT_NEAR(mi.q_error * mi.q_error, q_tail, kFp64Tol * q_tail);
  EXPECT_GT(q_tail, 1e-3);  // the case really truncates

  // KV: build the stacked matrix with explicit loops (group g reads KV head g / (G / Hkv)).
  const int64_t rep = groups / hkv;
  at::Tensor stacked = at::empty({2 * groups * dh, d}, kF64);  // [2*G*Dh, D]
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = 0; i < dh; ++i) {
      stacked[g * dh + i] = t.wk[(g / rep) * dh + i];
      stacked[groups * dh + g * dh + i] = t.wv[(g / rep) * dh + i];
    }
  auto [u, s, vh] = at::linalg_svd(stacked, false);
  at::Tensor best = at::matmul(u.slice(1, 0, rkv) * s.slice(0, 0, rkv), vh.slice(0, 0, rkv));  // [2*G*Dh, D]
  const double kv_tail = (s.slice(0, rkv) * s.slice(0, rkv)).sum().item<double>() / (s * s).sum().item<double>();
  EXPECT_NEAR(mi.kv_tail, kv_tail, kFp64Tol * kv_tail);
  EXPECT_NEAR(rel(best, stacked) * rel(best, stacked), kv_tail, kFp64Tol * kv_tail);
  // The written factors are the kept rows of the best rank-r approximation, in [k_nope(g); v(g)] order.
  at::Tensor wkva = mi.params.at("mla.kv_a_proj_with_mqa.weight");  // [r_kv + rope, D]
  at::Tensor wkvb = mi.params.at("mla.kv_b_proj.weight");            // [G*(nope+Dh), r_kv]
  ASSERT_EQ(wkva.size(0), rkv + rope);
  ASSERT_EQ(wkvb.size(0), groups * (nope + dh));
  at::Tensor product = at::matmul(wkvb, wkva.slice(0, 0, rkv));      // [G*(nope+Dh), D]
  at::Tensor expected = at::empty_like(product);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t i = 0; i < nope; ++i) expected[g * (nope + dh) + i] = best[g * dh + i];
    for (int64_t i = 0; i < dh; ++i) expected[g * (nope + dh) + nope + i] = best[groups * dh + g * dh + i];
  }
  EXPECT_LT(rel(product, expected), kFp64Tol);
  // k_pe rows: the mean over the teacher's KV heads of the last `rope` rows of W_k.
  at::Tensor kpe = at::zeros({rope, d}, kF64);
  for (int64_t hh = 0; hh < hkv; ++hh) kpe += t.wk.slice(0, hh * dh + dh - rope, hh * dh + dh) / double(hkv);
  EXPECT_LT(rel(wkva.slice(0, rkv), kpe), kFp64Tol);
  // W_qb per head: rows [0, nope) then [Dh - rope, Dh) of U_r; with nope + rope = Dh that is U_r itself.
  EXPECT_LT(rel(at::matmul(mi.params.at("mla.q_b_proj.weight"), mi.params.at("mla.q_a_proj.weight")),
                at::matmul(std::get<0>(at::linalg_svd(t.wq, false)).slice(1, 0, rq) * sq.slice(0, 0, rq),
                           std::get<2>(at::linalg_svd(t.wq, false)).slice(0, 0, rq))),
            kFp64Tol);
  EXPECT_LT(rel(mi.params.at("mla.out_proj.weight"), t.wo), kFp64Tol);

  // Dynamic rank: the smallest multiple of 8 holding the energy.
  std::vector<double> sv(s.data_ptr<double>(), s.data_ptr<double>() + s.size(0));
  init::MlaInit dyn = init::init_mla(t, m, 0.9);
  EXPECT_EQ(dyn.kv_rank, energy_rank(sv, 0.9));
  EXPECT_EQ(dyn.kv_rank % 8, 0);
  EXPECT_LE(dyn.kv_tail, 0.1 + kFp64Tol);
  EXPECT_EQ(dyn.params.at("mla.kv_b_proj.weight").size(1), dyn.kv_rank);
}

TEST(Mamba2Init, NoDecayNoConvNoGateIsCausalLinearAttention) {
  const int64_t d = 32, h = 4, hkv = 2, dh = 8, T = 9;
  init::TeacherAttention t = random_attention(d, h, hkv, dh, 5);
  Mamba2Spec m;
  m.n_heads = h;
  m.head_dim = dh;
  m.d_state = dh;
  m.d_inner = h * dh;
  m.d_xb = hkv * dh;
  m.norm_group_size = dh;
  at::Generator gen = at::detail::createCPUGenerator(1);
  init::NamedTensors p = init::init_mamba2(t, m, d, gen);
  const int64_t di = m.d_inner, dxb = m.d_xb;
  at::Tensor in_proj = p.at("mamba.in_proj.weight");  // [2*di + 2*dxb + H, D]
  ASSERT_EQ(in_proj.size(0), 2 * di + 2 * dxb + h);

  at::Generator g = at::detail::createCPUGenerator(9);
  at::Tensor u = at::randn({1, T, d}, g, kF64);                        // [1, T, D]
  at::Tensor zxbcdt = at::linear(u, in_proj);                          // [1, T, 2di+2dxb+H]
  at::Tensor x = zxbcdt.slice(2, di, di + dxb).reshape({1, T, hkv, dh});             // [1, T, Hkv, P]
  at::Tensor B = zxbcdt.slice(2, di + dxb, di + 2 * dxb).reshape({1, T, hkv, dh});   // [1, T, Hkv, N]
  at::Tensor C = zxbcdt.slice(2, di + 2 * dxb, 2 * di + 2 * dxb).reshape({1, T, h, dh});  // [1, T, H, N]
  x = x.repeat_interleave(h / hkv, 2);                                 // [1, T, H, P] (Zebra's repeat_kv of x)
  // Decay off (A = 0), dt = 1, D = 0 (undefined), no conv / gate / norm.
  SsdOutput y = ssd_naive(x, at::ones({1, T, h}, kF64), at::zeros({h}, kF64), B, C, at::Tensor(), at::Tensor());
  at::Tensor got = at::linear(y.y.reshape({1, T, h * dh}), p.at("mamba.out_proj.weight"));  // [1, T, D]

  // Causal linear attention on the teacher's own projections, written as loops over heads and positions.
  at::Tensor q = at::linear(u, t.wq).view({T, h, dh}), k = at::linear(u, t.wk).view({T, hkv, dh}),
             v = at::linear(u, t.wv).view({T, hkv, dh});
  at::Tensor o = at::zeros({T, h, dh}, kF64);
  for (int64_t hh = 0; hh < h; ++hh)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j <= i; ++j) o[i][hh] += at::dot(q[i][hh], k[j][hh / (h / hkv)]) * v[j][hh / (h / hkv)];
  at::Tensor want = at::linear(o.reshape({1, T, h * dh}), t.wo);
  EXPECT_LT(rel(got, want), kFp64Tol);

  // The parameters without a teacher counterpart follow mamba_ssm's init.
  at::Tensor a = at::exp(p.at("mamba.A_log"));
  EXPECT_TRUE(at::all(a >= 1.0 - 1e-12).item<bool>() && at::all(a <= 16.0 + 1e-12).item<bool>());
  at::Tensor dt = at::softplus(p.at("mamba.dt_bias"));
  EXPECT_TRUE(at::all(dt >= 1e-3 - 1e-12).item<bool>() && at::all(dt <= 1e-1 + 1e-12).item<bool>());
  EXPECT_TRUE(at::equal(p.at("mamba.D"), at::ones({h}, kF64)));
  EXPECT_TRUE(at::equal(p.at("mamba.norm.weight"), at::ones({di}, kF64)));
  EXPECT_EQ(p.at("mamba.conv1d.weight").sizes(), at::IntArrayRef({di + 2 * dxb, 4}));
}

struct GdnCase {
  int64_t heads, dk, dv;
};
class GdnInitBlocks : public ::testing::TestWithParam<GdnCase> {};

TEST_P(GdnInitBlocks, CopiedBlocksEqualTheirExpandedSourceSlices) {
  const int64_t d = 32, h = 4, hkv = 2, dh = 8, rep = h / hkv, full = h * dh;
  init::TeacherAttention t = random_attention(d, h, hkv, dh, 21);
  GdnSpec gs;
  gs.num_heads = GetParam().heads;
  gs.head_k_dim = GetParam().dk;
  gs.head_v_dim = GetParam().dv;
  at::Generator gen = at::detail::createCPUGenerator(2);
  init::GdnInit gi = init::init_gdn(t, gs, d, gen);
  const auto& p = gi.params;
  const int64_t kd = gs.key_dim(), vd = gs.value_dim();
  const int64_t nk = std::min(kd, full), nv = std::min(vd, full);
  EXPECT_EQ(gi.key_rows_copied, nk);
  EXPECT_EQ(gi.value_rows_copied, nv);
  const double bound = 1.0 / std::sqrt(double(d));  // nn.Linear default for the rest
  at::Tensor q = p.at("gdn.q_proj.weight"), k = p.at("gdn.k_proj.weight"), v = p.at("gdn.v_proj.weight"),
             o = p.at("gdn.o_proj.weight");
  ASSERT_EQ(q.sizes(), at::IntArrayRef({kd, d}));
  ASSERT_EQ(v.sizes(), at::IntArrayRef({vd, d}));
  ASSERT_EQ(o.sizes(), at::IntArrayRef({d, vd}));
  for (int64_t r = 0; r < kd; ++r) {
    if (r < nk) {
      // Expanded row r belongs to query head r / Dh, which reads KV head (r / Dh) / rep.
      const int64_t src = ((r / dh) / rep) * dh + r % dh;
      EXPECT_TRUE(at::equal(q[r], t.wq[r])) << "q row " << r;
      EXPECT_TRUE(at::equal(k[r], t.wk[src])) << "k row " << r;
    } else {
      EXPECT_LE(q[r].abs().max().item<double>(), bound);
      EXPECT_LE(k[r].abs().max().item<double>(), bound);
    }
  }
  for (int64_t r = 0; r < vd; ++r) {
    if (r < nv) {
      const int64_t src = ((r / dh) / rep) * dh + r % dh;
      EXPECT_TRUE(at::equal(v[r], t.wv[src])) << "v row " << r;
      EXPECT_TRUE(at::equal(o.select(1, r), t.wo.select(1, r))) << "o column " << r;
    } else {
      EXPECT_LE(v[r].abs().max().item<double>(), bound);
      EXPECT_LE(o.select(1, r).abs().max().item<double>(), 1.0 / std::sqrt(double(vd)));
    }
  }
  // Gates, decay, beta and convs: FLA defaults.
  at::Tensor a = at::exp(p.at("gdn.A_log"));
  EXPECT_TRUE(at::all(a >= 1e-4 - 1e-15).item<bool>() && at::all(a <= 16.0 + 1e-12).item<bool>());
  EXPECT_EQ(p.at("gdn.q_conv1d.weight").sizes(), at::IntArrayRef({kd, 4}));
  EXPECT_EQ(p.at("gdn.v_conv1d.weight").sizes(), at::IntArrayRef({vd, 4}));
  EXPECT_TRUE(at::equal(p.at("gdn.o_norm.weight"), at::ones({gs.head_v_dim}, kF64)));
}

// HyLo's shape (key dim < H*Dh < value dim) and the reverse (key dim > H*Dh: extra key rows stay default).
INSTANTIATE_TEST_SUITE_P(Init, GdnInitBlocks, ::testing::Values(GdnCase{2, 12, 24}, GdnCase{2, 20, 8}));

}  // namespace
}  // namespace hylo
