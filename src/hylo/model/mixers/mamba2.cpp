#include "hylo/model/mixers/mamba2.h"

#include <ATen/core/grad_mode.h>

#include <string>

#include "hylo/core/result.h"
#include "hylo/ops/causal_conv1d.h"
#include "hylo/ops/gated_rms_norm.h"
#include "hylo/ops/ssd.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {

namespace {

std::string dims_str(const Mamba2Spec& s) {
  return "(d_inner " + std::to_string(s.d_inner) + ", d_xb " + std::to_string(s.d_xb) + ", d_state " +
         std::to_string(s.d_state) + ", n_heads " + std::to_string(s.n_heads) + ", head_dim " +
         std::to_string(s.head_dim) + ", conv_size " + std::to_string(s.conv_size) + ", chunk_size " +
         std::to_string(s.chunk_size) + ", norm_group_size " + std::to_string(s.norm_group_size) + ")";
}

// [B, T, G*W] -> [B, T, G*R*W]: each group of W channels repeated R times in place (repeat_kv order).
at::Tensor repeat_groups(const at::Tensor& t, int64_t groups, int64_t repeats) {
  if (repeats == 1) return t;
  const int64_t b = t.size(0), n = t.size(1), w = t.size(2) / groups;
  return t.view({b, n, groups, 1, w}).expand({b, n, groups, repeats, w}).reshape({b, n, groups * repeats * w});
}

}  // namespace

int64_t Mamba2State::bytes() const {
  int64_t n = 0;
  for (const auto* t : {&conv, &ssm})
    if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  return n;
}

Mamba2Mixer::Mamba2Mixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options)
    : spec_(layer.mamba2), hidden_(config.hidden_size) {
  const Mamba2Spec& s = spec_;
  auto fail = [&](const std::string& why) { throw Error("mamba2: invalid dims " + dims_str(s) + ": " + why); };
  if (hidden_ <= 0) fail("hidden_size must be positive, got " + std::to_string(hidden_));
  if (s.n_heads <= 0 || s.d_state <= 0 || s.head_dim <= 0) fail("n_heads, d_state and head_dim must be positive");
  // Zebra's layer sets headdim = d_state and reshapes both x and B into groups of d_state channels.
  if (s.head_dim != s.d_state) fail("head_dim must equal d_state (Zebra: headdim = d_state)");
  if (s.d_inner != s.n_heads * s.head_dim) fail("d_inner must be n_heads * head_dim");
  if (s.d_xb <= 0 || s.d_xb % s.d_state != 0) fail("d_xb must be a positive multiple of d_state");
  kv_groups_ = s.d_xb / s.d_state;
  if (s.n_heads % kv_groups_ != 0) fail("d_xb / d_state (the x/B groups) must divide n_heads");
  if (s.conv_size < 1) fail("conv_size must be >= 1");
  if (s.chunk_size < 1) fail("chunk_size must be >= 1");
  norm_group_ = s.norm_group_size > 0 ? s.norm_group_size : s.d_inner / s.n_heads;
  if (s.d_inner % norm_group_ != 0) fail("norm_group_size must divide d_inner");
  conv_dim_ = s.repeat_kv_before_conv ? 3 * s.d_inner : s.d_inner + 2 * s.d_xb;

  in_w_ = at::empty({2 * s.d_inner + 2 * s.d_xb + s.n_heads, hidden_}, options);
  conv_w_ = at::empty({conv_dim_, 1, s.conv_size}, options);
  if (s.conv_bias) conv_b_ = at::empty({conv_dim_}, options);
  dt_bias_ = at::empty({s.n_heads}, options);
  a_log_ = at::empty({s.n_heads}, options);
  d_ = at::empty({s.n_heads}, options);
  norm_w_ = at::empty({s.d_inner}, options);
  out_w_ = at::empty({hidden_, s.d_inner}, options);
}

void Mamba2Mixer::visit_parameters(const std::string& prefix, const ParamVisitor& visit) {
  const std::string p = prefix + "mamba.";
  visit(p + "in_proj.weight", in_w_);
  visit(p + "conv1d.weight", conv_w_);
  if (conv_b_.defined()) visit(p + "conv1d.bias", conv_b_);
  visit(p + "dt_bias", dt_bias_);
  visit(p + "A_log", a_log_);
  visit(p + "D", d_);
  visit(p + "norm.weight", norm_w_);
  visit(p + "out_proj.weight", out_w_);
}

std::unique_ptr<MixerState> Mamba2Mixer::new_state(int64_t batch, int64_t /*max_tokens*/,
                                                   const at::TensorOptions& options) const {
  auto st = std::make_unique<Mamba2State>();
  st->conv = at::zeros({batch, conv_dim_, spec_.conv_size - 1}, options);
  const at::ScalarType ssm_type = compute_type(options.dtype().toScalarType());
  st->ssm = at::zeros({batch, spec_.n_heads, spec_.head_dim, spec_.d_state}, options.dtype(ssm_type));
  return st;
}

at::Tensor Mamba2Mixer::forward(const at::Tensor& x, const at::Tensor& /*positions*/, MixerState* state) {
  const Mamba2Spec& s = spec_;
  if (x.dim() != 3 || x.size(2) != hidden_)
    throw Error("mamba2: input must be [B, T, D=" + std::to_string(hidden_) + "], got " + std::to_string(x.dim()) +
                "-d tensor");
  Mamba2State* st = nullptr;
  if (state) {
    st = dynamic_cast<Mamba2State*>(state);
    if (!st) throw Error("mamba2: the state passed is not a Mamba2State (made by another mixer kind?)");
    if (st->conv.size(0) != x.size(0))
      throw Error("mamba2: state is for batch " + std::to_string(st->conv.size(0)) + ", input has batch " +
                  std::to_string(x.size(0)));
  }
  const int64_t b = x.size(0), t = x.size(1);
  if (t == 0) return at::zeros({b, 0, hidden_}, x.options());
  const int64_t H = s.n_heads, P = s.head_dim, N = s.d_state, di = s.d_inner, dxb = s.d_xb;
  const int64_t R = H / kv_groups_;

  at::Tensor zxbcdt = at::linear(x, in_w_);                                       // [B, T, 2di+2dxb+H]
  at::Tensor z = zxbcdt.narrow(-1, 0, di);                                        // [B, T, di]
  at::Tensor xbc = zxbcdt.narrow(-1, di, di + 2 * dxb);                           // [B, T, di+2dxb]
  at::Tensor dt = zxbcdt.narrow(-1, 2 * di + 2 * dxb, H);                         // [B, T, H]
  if (s.repeat_kv_before_conv)
    xbc = at::cat({repeat_groups(xbc.narrow(-1, 0, dxb), kv_groups_, R),          // [B, T, 3di]
                   repeat_groups(xbc.narrow(-1, dxb, dxb), kv_groups_, R), xbc.narrow(-1, 2 * dxb, di)},
                  -1);

  auto [conv_out, conv_state] = causal_conv1d(xbc, conv_w_.view({conv_dim_, s.conv_size}), conv_b_,
                                              st ? st->conv : at::Tensor(), /*silu=*/true);  // [B, T, conv_dim]
  at::Tensor xs, bs, cs;
  if (s.repeat_kv_before_conv) {
    xs = conv_out.narrow(-1, 0, di).reshape({b, t, H, P});                        // [B, T, H, P]
    bs = conv_out.narrow(-1, di, di).reshape({b, t, H, N});                       // [B, T, H, N]
    cs = conv_out.narrow(-1, 2 * di, di).reshape({b, t, H, N});                   // [B, T, H, N]
  } else {
    xs = repeat_groups(conv_out.narrow(-1, 0, dxb), kv_groups_, R).reshape({b, t, H, P});  // [B, T, H, P]
    bs = conv_out.narrow(-1, dxb, dxb).reshape({b, t, kv_groups_, N});            // [B, T, Hkv, N] (ssd repeats)
    cs = conv_out.narrow(-1, 2 * dxb, di).reshape({b, t, H, N});                  // [B, T, H, N]
  }

  // Step sizes and decay rates in fp32 (fp64 for an fp64 model), as mamba_ssm does "to avoid -inf in fp16".
  const at::ScalarType ct = compute_type(x.scalar_type());
  at::Tensor delta = at::softplus(dt.to(ct) + dt_bias_.to(ct));                  // [B, T, H]
  at::Tensor A = -at::exp(a_log_.to(ct));                                         // [H]

  SsdOutput ssd;
  if (st && t == 1) {
    // Without autograd the step writes the state in place (the CUDA kernel reads and writes it once); with it,
    // a new state joins the graph.
    const bool in_place = !at::GradMode::is_enabled() && !st->ssm.requires_grad() && st->ssm.scalar_type() == ct;
    ssd = ssd_recurrent(xs.select(1, 0), delta.select(1, 0), A, bs.select(1, 0), cs.select(1, 0), d_, st->ssm,
                        in_place ? st->ssm : at::Tensor());
    ssd.y = ssd.y.unsqueeze(1);                                                   // [B, 1, H, P]
  } else {
    ssd = ssd_chunk(xs, delta, A, bs, cs, d_, st ? st->ssm : at::Tensor(), s.chunk_size);  // y [B, T, H, P]
  }
  if (st) {
    store_state(st->conv, conv_state);
    if (!ssd.final_state.is_same(st->ssm)) store_state(st->ssm, ssd.final_state.to(st->ssm.scalar_type()));
  }

  at::Tensor y = ssd.y.reshape({b, t, di});                                       // [B, T, di]
  y = gated_rms_norm(y, z, norm_w_, s.norm_eps, /*norm_before_gate=*/false, norm_group_);
  return at::linear(y, out_w_);                                                   // [B, T, D]
}

namespace {
const bool kRegistered = [] {
  register_mixer(MixerKind::kMamba2, [](const ModelConfig& c, const LayerSpec& l, const at::TensorOptions& o) {
    return std::unique_ptr<Mixer>(new Mamba2Mixer(c, l, o));
  });
  return true;
}();
}  // namespace

}  // namespace hylo
