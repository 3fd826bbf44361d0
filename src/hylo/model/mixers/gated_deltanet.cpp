#include "hylo/model/mixers/gated_deltanet.h"

#include <cmath>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/causal_conv1d.h"
#include "hylo/ops/gated_delta.h"
#include "hylo/ops/gated_rms_norm.h"
#include "hylo/ops/tensor_util.h"
#ifdef HYLO_HAVE_CUDA
#include <ATen/core/grad_mode.h>

#include <atomic>

#include "hylo/kernels/gated_delta/gdn_decode_fused.h"
#endif

namespace hylo {

namespace {

std::string dims_str(const GdnSpec& s) {
  return "(num_heads " + std::to_string(s.num_heads) + ", head_k_dim " + std::to_string(s.head_k_dim) +
         ", head_v_dim " + std::to_string(s.head_v_dim) + ", conv_size " + std::to_string(s.conv_size) + ")";
}

// FLA's l2norm (fla/modules/norm/l2norm.py): x / sqrt(sum(x^2) + eps) over the head dim, eps = 1e-6.
at::Tensor l2_normalize(const at::Tensor& x) {
  return x * at::rsqrt(x.pow(2).sum(-1, /*keepdim=*/true) + 1e-6);
}

}  // namespace

int64_t GatedDeltaNetState::bytes() const {
  int64_t n = 0;
  for (const auto* t : {&conv_q, &conv_k, &conv_v, &recurrent})
    if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  return n;
}

GatedDeltaNetMixer::GatedDeltaNetMixer(const ModelConfig& config, const LayerSpec& layer,
                                       const at::TensorOptions& options)
    : spec_(layer.gdn), hidden_(config.hidden_size) {
  const GdnSpec& s = spec_;
  auto fail = [&](const std::string& why) { throw Error("gdn: invalid dims " + dims_str(s) + ": " + why); };
  if (hidden_ <= 0) fail("hidden_size must be positive, got " + std::to_string(hidden_));
  if (s.num_heads <= 0 || s.head_k_dim <= 0 || s.head_v_dim <= 0)
    fail("num_heads, head_k_dim and head_v_dim must be positive");
  if (s.use_short_conv && s.conv_size < 1) fail("conv_size must be >= 1");
  const int64_t kd = s.key_dim(), vd = s.value_dim(), H = s.num_heads;
  q_w_ = at::empty({kd, hidden_}, options);
  k_w_ = at::empty({kd, hidden_}, options);
  v_w_ = at::empty({vd, hidden_}, options);
  a_w_ = at::empty({H, hidden_}, options);
  b_w_ = at::empty({H, hidden_}, options);
  a_log_ = at::empty({H}, options);
  dt_bias_ = at::empty({H}, options);
  if (s.use_short_conv) {
    q_conv_ = at::empty({kd, 1, s.conv_size}, options);
    k_conv_ = at::empty({kd, 1, s.conv_size}, options);
    v_conv_ = at::empty({vd, 1, s.conv_size}, options);
  }
  if (s.use_gate) g_w_ = at::empty({vd, hidden_}, options);
  norm_w_ = at::empty({s.head_v_dim}, options);
  o_w_ = at::empty({hidden_, vd}, options);
}

void GatedDeltaNetMixer::set_chunk_size(int64_t chunk_size) {
  if (chunk_size < 1) throw Error("gdn: chunk size must be >= 1, got " + std::to_string(chunk_size));
  chunk_size_ = chunk_size;
}

void GatedDeltaNetMixer::visit_parameters(const std::string& prefix, const ParamVisitor& visit) {
  const std::string p = prefix + "gdn.";
  visit(p + "q_proj.weight", q_w_);
  visit(p + "k_proj.weight", k_w_);
  visit(p + "v_proj.weight", v_w_);
  visit(p + "a_proj.weight", a_w_);
  visit(p + "b_proj.weight", b_w_);
  visit(p + "A_log", a_log_);
  visit(p + "dt_bias", dt_bias_);
  if (spec_.use_short_conv) {
    visit(p + "q_conv1d.weight", q_conv_);
    visit(p + "k_conv1d.weight", k_conv_);
    visit(p + "v_conv1d.weight", v_conv_);
  }
  if (spec_.use_gate) visit(p + "g_proj.weight", g_w_);
  visit(p + "o_norm.weight", norm_w_);
  visit(p + "o_proj.weight", o_w_);
}

void GatedDeltaNetMixer::init_random(at::Generator& gen) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto uniform = [&](at::IntArrayRef shape, double lo, double hi) {  // U(lo, hi) in fp32, like torch's init
    return at::empty(shape, f32).uniform_(lo, hi, gen);
  };
  // Written through a detached alias: initialising a (possibly grad-requiring) leaf is not a differentiable op.
  auto fill = [](at::Tensor& dst, const at::Tensor& src) { dst.detach().copy_(src); };
  // nn.Linear / nn.Conv1d reset_parameters: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  auto default_init = [&](at::Tensor& w) {
    if (!w.defined()) return;
    const int64_t fan_in = w.numel() / w.size(0);
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    fill(w, uniform(w.sizes(), -bound, bound));
  };
  for (at::Tensor* w : {&q_w_, &k_w_, &v_w_, &a_w_, &b_w_, &q_conv_, &k_conv_, &v_conv_, &g_w_, &o_w_})
    default_init(*w);
  const int64_t H = spec_.num_heads;
  fill(a_log_, at::log(uniform({H}, 0.0, 16.0).clamp_min(1e-4)));
  const double dt_min = 1e-3, dt_max = 1e-1, dt_floor = 1e-4;
  at::Tensor dt = at::exp(uniform({H}, 0.0, 1.0) * (std::log(dt_max) - std::log(dt_min)) + std::log(dt_min))
                      .clamp_min(dt_floor);                                   // [H]
  fill(dt_bias_, dt + at::log(-at::expm1(-dt)));                              // softplus^-1(dt)
  fill(norm_w_, at::ones({spec_.head_v_dim}, f32));
}

std::unique_ptr<MixerState> GatedDeltaNetMixer::new_state(int64_t batch, int64_t /*max_tokens*/,
                                                          const at::TensorOptions& options) const {
  const GdnSpec& s = spec_;
  auto st = std::make_unique<GatedDeltaNetState>();
  if (s.use_short_conv) {
    st->conv_q = at::zeros({batch, s.key_dim(), s.conv_size - 1}, options);
    st->conv_k = at::zeros({batch, s.key_dim(), s.conv_size - 1}, options);
    st->conv_v = at::zeros({batch, s.value_dim(), s.conv_size - 1}, options);
  }
  const at::ScalarType rt = compute_type(options.dtype().toScalarType());
  st->recurrent = at::zeros({batch, s.num_heads, s.head_v_dim, s.head_k_dim}, options.dtype(rt));
  return st;
}

GatedDeltaNetMixer::Projections GatedDeltaNetMixer::project(const at::Tensor& x) {
  const std::vector<const at::Tensor*> ws = spec_.use_gate
                                                ? std::vector<const at::Tensor*>{&q_w_, &k_w_, &v_w_, &a_w_, &b_w_, &g_w_}
                                                : std::vector<const at::Tensor*>{&q_w_, &k_w_, &v_w_, &a_w_, &b_w_};
  Projections p;
  if (ops::PackedLinear::applies(x, ws)) {
    std::vector<at::Tensor> y = in_proj_(x, ws);  // views of one [.., sum] GEMM output
    p.q = y[0], p.k = y[1], p.v = y[2], p.a = y[3], p.b = y[4];
    if (spec_.use_gate) p.g = y[5];
    return p;
  }
  p.q = at::linear(x, q_w_);
  p.k = at::linear(x, k_w_);
  p.v = at::linear(x, v_w_);
  p.a = at::linear(x, a_w_);
  p.b = at::linear(x, b_w_);
  if (spec_.use_gate) p.g = at::linear(x, g_w_);
  return p;
}

at::Tensor GatedDeltaNetMixer::forward(const at::Tensor& x, const at::Tensor& /*positions*/, MixerState* state) {
  const GdnSpec& s = spec_;
  if (x.dim() != 3 || x.size(2) != hidden_)
    throw Error("gdn: input must be [B, T, D=" + std::to_string(hidden_) + "], got " + c10::str(x.sizes()));
  GatedDeltaNetState* st = nullptr;
  if (state) {
    st = dynamic_cast<GatedDeltaNetState*>(state);
    if (!st) throw Error("gdn: the state passed is not a GatedDeltaNetState (made by another mixer kind?)");
    if (st->recurrent.size(0) != x.size(0))
      throw Error("gdn: state is for batch " + std::to_string(st->recurrent.size(0)) + ", input has batch " +
                  std::to_string(x.size(0)));
  }
  const int64_t B = x.size(0), T = x.size(1), H = s.num_heads, Dk = s.head_k_dim, Dv = s.head_v_dim;
  if (T == 0) return at::zeros({B, 0, hidden_}, x.options());
  if (st && T == 1 && x.is_cuda()) {  // one fused kernel for the decode step when it covers this call
    at::Tensor y = decode_fused(x, *st, at::Tensor());
    if (y.defined()) return y;
  }

  Projections pr = project(x);
  at::Tensor q = pr.q;                 // [B, T, H*Dk]
  at::Tensor k = pr.k;                 // [B, T, H*Dk]
  at::Tensor v = pr.v;                 // [B, T, H*Dv]
  at::Tensor new_cq, new_ck, new_cv;   // [B, C, K-1] each
  if (s.use_short_conv) {
    const int64_t K = s.conv_size;
    std::tie(q, new_cq) = causal_conv1d(q, q_conv_.view({-1, K}), at::Tensor(), st ? st->conv_q : at::Tensor(), true);
    std::tie(k, new_ck) = causal_conv1d(k, k_conv_.view({-1, K}), at::Tensor(), st ? st->conv_k : at::Tensor(), true);
    std::tie(v, new_cv) = causal_conv1d(v, v_conv_.view({-1, K}), at::Tensor(), st ? st->conv_v : at::Tensor(), true);
  } else {
    q = at::silu(q);
    k = at::silu(k);
    v = at::silu(v);
  }
  // Gates, norms and the state in fp32 (fp64 for an fp64 model), as FLA's kernels compute them.
  const at::ScalarType ct = compute_type(x.scalar_type());
  at::Tensor qh = l2_normalize(q.to(ct).view({B, T, H, Dk}));                               // [B, T, H, Dk]
  at::Tensor kh = l2_normalize(k.to(ct).view({B, T, H, Dk}));                               // [B, T, H, Dk]
  at::Tensor vh = v.view({B, T, H, Dv});                                                    // [B, T, H, Dv]
  at::Tensor g = -at::exp(a_log_.to(ct)) * at::softplus(pr.a.to(ct) + dt_bias_.to(ct));   // [B, T, H]
  at::Tensor beta = at::sigmoid(pr.b.to(ct));                                               // [B, T, H]
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dk));

  at::Tensor h0 = st ? st->recurrent : at::Tensor();                                        // [B, H, Dv, Dk]
  GatedDeltaOutput rule = (st && T == 1) ? gated_delta_recurrent(qh, kh, vh, g, beta, scale, h0)
                                         : gated_delta_chunk(qh, kh, vh, g, beta, scale, h0, chunk_size_);
  if (st) {
    if (s.use_short_conv) {
      store_state(st->conv_q, new_cq);
      store_state(st->conv_k, new_ck);
      store_state(st->conv_v, new_cv);
    }
    store_state(st->recurrent, rule.final_state.to(st->recurrent.scalar_type()));
  }

  at::Tensor o;                                                                             // [B, T, H, Dv]
  if (s.use_gate) {
    at::Tensor gate = pr.g.view({B, T, H, Dv});                                             // [B, T, H, Dv]
    o = gated_rms_norm(rule.o, gate, norm_w_, s.norm_eps, /*norm_before_gate=*/true);
  } else {
    at::Tensor of = rule.o.to(ct);                                                          // [B, T, H, Dv]
    o = (of * at::rsqrt(of.pow(2).mean(-1, true) + s.norm_eps) * norm_w_.to(ct)).to(x.scalar_type());
  }
  return at::linear(o.reshape({B, T, H * Dv}), o_w_);                                       // [B, T, D]
}

#ifdef HYLO_HAVE_CUDA
namespace {
std::atomic<bool> g_fused_decode{true};
}  // namespace
void GatedDeltaNetMixer::set_fused_decode(bool on) { g_fused_decode = on; }
bool GatedDeltaNetMixer::fused_decode() { return g_fused_decode; }

at::Tensor GatedDeltaNetMixer::decode_fused(const at::Tensor& x, GatedDeltaNetState& pools, const at::Tensor& slots) {
  const GdnSpec& s = spec_;
  if (!g_fused_decode || !x.is_cuda() || x.dim() != 3 || x.size(1) != 1 || x.size(2) != hidden_ ||
      !s.use_short_conv)
    return {};
  if (at::GradMode::is_enabled()) {  // the kernel has no backward
    bool grad = x.requires_grad();
    visit_parameters("", [&](const std::string&, at::Tensor& t) { grad = grad || t.requires_grad(); });
    for (const at::Tensor* t : {&pools.conv_q, &pools.conv_k, &pools.conv_v, &pools.recurrent})
      grad = grad || (t->defined() && t->requires_grad());
    if (grad) return {};
  }
  const kernels::GdnDecodePools pool{pools.conv_q, pools.conv_k, pools.conv_v, pools.recurrent};
  if (!kernels::gdn_decode_fused_supported(x, s.num_heads, s.head_k_dim, s.head_v_dim, s.conv_size, pool)) return {};
  if (q_conv_.scalar_type() != k_conv_.scalar_type() || q_conv_.scalar_type() != v_conv_.scalar_type()) return {};
  const int64_t B = x.size(0), K = s.conv_size;
  at::Tensor x2 = x.reshape({B, hidden_});                                                // [B, D]
  Projections pr = project(x2);  // [B, H*Dk] x2, [B, H*Dv], [B, H] x2, [B, H*Dv]: rows may be strided views
  kernels::GdnDecodeParams prm{q_conv_.view({-1, K}), k_conv_.view({-1, K}), v_conv_.view({-1, K}),
                               a_log_,               dt_bias_,              norm_w_,
                               s.norm_eps,           1.0 / std::sqrt(static_cast<double>(s.head_k_dim))};
  at::Tensor o = kernels::gdn_decode_fused_cuda(pr.q, pr.k, pr.v, pr.a, pr.b, pr.g, prm, pool, slots);  // [B, H*Dv]
  return at::linear(o, o_w_).view({B, 1, hidden_});                                      // [B, 1, D]
}
#else
void GatedDeltaNetMixer::set_fused_decode(bool) {}
bool GatedDeltaNetMixer::fused_decode() { return false; }
at::Tensor GatedDeltaNetMixer::decode_fused(const at::Tensor&, GatedDeltaNetState&, const at::Tensor&) { return {}; }
#endif

namespace {
const bool kRegistered = [] {
  register_mixer(MixerKind::kGdn, [](const ModelConfig& c, const LayerSpec& l, const at::TensorOptions& o) {
    return std::unique_ptr<Mixer>(new GatedDeltaNetMixer(c, l, o));
  });
  return true;
}();
}  // namespace

}  // namespace hylo
