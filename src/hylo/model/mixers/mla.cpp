#include "hylo/model/mixers/mla.h"

#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/mla.h"
#include "hylo/ops/rms_norm.h"

namespace hylo {
namespace {

// DeepSeek builds q_a_layernorm / kv_a_layernorm with the RMSNorm's default eps, not config.rms_norm_eps
// (DeepseekV3RMSNorm(q_lora_rank) in both DeepSeek's and transformers' code).
constexpr double kLatentNormEps = 1e-6;

void check_spec(const MlaSpec& s, int64_t hidden) {
  auto fail = [](const std::string& what) { throw Error("mla mixer: " + what); };
  if (hidden <= 0) fail("hidden_size must be positive");
  if (s.num_heads <= 0 || s.kv_lora_rank <= 0 || s.qk_nope_head_dim <= 0 || s.qk_rope_head_dim <= 0 ||
      s.v_head_dim <= 0 || s.q_lora_rank < 0)
    fail("num_heads, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim must be positive and "
         "q_lora_rank >= 0");
  if (s.qk_rope_head_dim % 2 != 0) fail("qk_rope_head_dim must be even, got " + std::to_string(s.qk_rope_head_dim));
  if (s.num_kv_groups <= 0 || s.num_heads % s.num_kv_groups != 0)
    fail("num_kv_groups " + std::to_string(s.num_kv_groups) + " must divide num_heads " +
         std::to_string(s.num_heads));
}

}  // namespace

at::Tensor MlaState::append(const at::Tensor& entry) {
  const int64_t t = entry.size(1);
  if (entry.dim() != 3 || entry.size(0) != cache_.size(0) || entry.size(2) != cache_.size(2))
    throw Error("mla state: new entry " + c10::str(entry.sizes()) + " does not fit cache " +
                c10::str(cache_.sizes()));
  if (length_ + t > capacity())
    throw Error("mla state: " + std::to_string(length_) + " cached + " + std::to_string(t) + " new tokens exceed "
                "the cache capacity of " + std::to_string(capacity()) + " tokens");
  cache_.narrow(1, length_, t).copy_(entry);
  length_ += t;
  return cache_.narrow(1, 0, length_);
}

MlaMixer::MlaMixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options)
    : spec_(layer.mla) {
  const MlaSpec& s = spec_;
  const int64_t d = config.hidden_size;
  check_spec(s, d);
  softmax_scale_ = ops::mla_softmax_scale(s);
  rope_inv_freq_ = ops::mla_rope_inv_freq(s.rope, s.qk_rope_head_dim).to(options.device());
  rope_scale_ = ops::mla_rope_cos_sin_scale(s.rope);
  const int64_t q_out = s.num_heads * s.q_head_dim();
  if (s.q_lora_rank == 0) {
    q_proj_w_ = at::empty({q_out, d}, options);
    if (s.bias) q_proj_b_ = at::empty({q_out}, options);
  } else {
    q_a_w_ = at::empty({s.q_lora_rank, d}, options);
    if (s.bias) q_a_b_ = at::empty({s.q_lora_rank}, options);
    if (s.latent_norms) q_a_norm_w_ = at::ones({s.q_lora_rank}, options);
    q_b_w_ = at::empty({q_out, s.q_lora_rank}, options);
  }
  kv_a_w_ = at::empty({s.cache_width(), d}, options);
  if (s.bias) kv_a_b_ = at::empty({s.cache_width()}, options);
  if (s.latent_norms) kv_a_norm_w_ = at::ones({s.kv_lora_rank}, options);
  kv_b_w_ = at::empty({s.num_kv_groups * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank}, options);
  out_w_ = at::empty({d, s.num_heads * s.v_head_dim}, options);
  if (s.bias) out_b_ = at::empty({d}, options);
}

void MlaMixer::visit_parameters(const std::string& prefix, const ParamVisitor& visit) {
  const std::string p = prefix + "mla.";
  auto both = [&](const std::string& name, at::Tensor& w, at::Tensor& b) {
    if (w.defined()) visit(p + name + ".weight", w);
    if (b.defined()) visit(p + name + ".bias", b);
  };
  both("q_proj", q_proj_w_, q_proj_b_);
  both("q_a_proj", q_a_w_, q_a_b_);
  if (q_a_norm_w_.defined()) visit(p + "q_a_layernorm.weight", q_a_norm_w_);
  if (q_b_w_.defined()) visit(p + "q_b_proj.weight", q_b_w_);
  both("kv_a_proj_with_mqa", kv_a_w_, kv_a_b_);
  if (kv_a_norm_w_.defined()) visit(p + "kv_a_layernorm.weight", kv_a_norm_w_);
  visit(p + "kv_b_proj.weight", kv_b_w_);
  both("out_proj", out_w_, out_b_);
}

std::unique_ptr<MixerState> MlaMixer::new_state(int64_t batch, int64_t max_tokens,
                                                const at::TensorOptions& options) const {
  if (batch <= 0 || max_tokens <= 0)
    throw Error("mla state: batch and max_tokens must be positive, got " + std::to_string(batch) + " and " +
                std::to_string(max_tokens));
  at::Tensor cache = at::zeros({batch, max_tokens, spec_.cache_width()}, options);  // [B, S, Rkv+Dr]
  return std::make_unique<MlaState>(std::move(cache), spec_.kv_lora_rank);
}

MlaProjection MlaMixer::project(const at::Tensor& x, const at::Tensor& positions) const {
  const MlaSpec& s = spec_;
  if (x.dim() != 3 || x.size(2) != hidden_size())
    throw Error("mla mixer: x must be [B, T, " + std::to_string(hidden_size()) + "], got " + c10::str(x.sizes()));
  const int64_t b = x.size(0), t = x.size(1), h = s.num_heads;
  const int64_t p = s.qk_nope_head_dim, r = s.qk_rope_head_dim, c = s.kv_lora_rank;
  if (positions.dim() != 1 || positions.size(0) != t)
    throw Error("mla mixer: positions must be [T] = [" + std::to_string(t) + "], got " +
                c10::str(positions.sizes()));

  // The two projections of x: the query's (q_a, or q_proj for full rank) and the latent's (kv_a). One GEMM
  // against the packed weights when no gradient is needed (ops/packed_linear.h), the separate calls otherwise.
  const bool low_rank = s.q_lora_rank > 0;
  const at::Tensor& xq_w = low_rank ? q_a_w_ : q_proj_w_;
  const at::Tensor& xq_b = low_rank ? q_a_b_ : q_proj_b_;
  const std::vector<const at::Tensor*> ws{&xq_w, &kv_a_w_}, bs{&xq_b, &kv_a_b_};
  at::Tensor xq, ckv;                                                              // [B, T, Rq or H*(Dn+Dr)], [B, T, Rkv+Dr]
  if (ops::PackedLinear::applies(x, ws, bs)) {
    std::vector<at::Tensor> y = x_proj_(x, ws, bs);                                // column views of one GEMM
    xq = y[0], ckv = y[1];
  } else {
    xq = at::linear(x, xq_w, xq_b);
    ckv = at::linear(x, kv_a_w_, kv_a_b_);
  }

  // Queries: low-rank (optionally normalised latent) or full-rank projection.
  at::Tensor q = xq;                                                               // [B, T, H*(Dn+Dr)]
  if (low_rank) {
    at::Tensor c_q = xq;                                                           // [B, T, Rq]
    if (q_a_norm_w_.defined()) c_q = ops::rms_norm(c_q, q_a_norm_w_, kLatentNormEps);
    q = at::linear(c_q, q_b_w_);
  }
  q = q.reshape({b, t, h, p + r});                                                 // [B, T, H, Dn+Dr]
  at::Tensor q_nope = q.narrow(3, 0, p);                                           // [B, T, H, Dn]
  at::Tensor q_pe = q.narrow(3, p, r);                                             // [B, T, H, Dr]

  // Latent and the shared rope key of the new tokens.
  at::Tensor c_kv = ckv.narrow(2, 0, c);                                           // [B, T, Rkv]
  if (kv_a_norm_w_.defined()) c_kv = ops::rms_norm(c_kv, kv_a_norm_w_, kLatentNormEps);
  at::Tensor k_pe = ckv.narrow(2, c, r).unsqueeze(2);                              // [B, T, 1, Dr]

  ops::RotaryTables tables = ops::mla_rope_tables(rope_inv_freq_, rope_scale_, positions, x.scalar_type(), x.device());
  q_pe = ops::apply_mla_rope(q_pe, tables, pair_order_);                          // [B, T, H, Dr]
  k_pe = ops::apply_mla_rope(k_pe, tables, pair_order_).squeeze(2);               // [B, T, Dr]
  return {q_nope, q_pe, at::cat({c_kv, k_pe}, 2)};                                 // entry [B, T, Rkv+Dr]
}

at::Tensor MlaMixer::project_out(const at::Tensor& o) const {
  const int64_t h = spec_.num_heads, v = spec_.v_head_dim;
  if (o.dim() != 4 || o.size(2) != h || o.size(3) != v)
    throw Error("mla mixer: attention output must be [B, T, " + std::to_string(h) + ", " + std::to_string(v) +
                "], got " + c10::str(o.sizes()));
  return at::linear(o.reshape({o.size(0), o.size(1), h * v}), out_w_, out_b_);    // [B, T, D]
}

at::Tensor MlaMixer::forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) {
  const MlaSpec& s = spec_;
  MlaProjection pr = project(x, positions);
  const int64_t t = x.size(1), c = s.kv_lora_rank, r = s.qk_rope_head_dim;

  at::Tensor keys = pr.entry;                                                      // [B, T, Rkv+Dr]
  int64_t q_offset = 0;
  if (state != nullptr) {
    auto* st = dynamic_cast<MlaState*>(state);
    if (st == nullptr) throw Error("mla mixer: the state passed is not an MLA latent cache");
    q_offset = st->length();
    keys = st->append(keys.to(st->cache().scalar_type())).to(x.scalar_type());    // [B, S, Rkv+Dr]
  }
  at::Tensor keys_c = keys.narrow(2, 0, c);                                        // [B, S, Rkv]
  at::Tensor keys_pe = keys.narrow(2, c, r);                                       // [B, S, Dr]

  bool absorbed = form_ == MlaForm::kAbsorbed || (form_ == MlaForm::kAuto && state != nullptr && t == 1);
  at::Tensor o = absorbed ? ops::mla_attention_absorbed(pr.q_nope, pr.q_pe, keys_c, keys_pe, kv_b_w_,
                                                        s.num_kv_groups, softmax_scale_, q_offset)
                          : ops::mla_attention_decompressed(pr.q_nope, pr.q_pe, keys_c, keys_pe, kv_b_w_,
                                                            s.num_kv_groups, softmax_scale_, q_offset);  // [B, T, H, Dv]
  return project_out(o);                                                           // [B, T, D]
}

namespace {
const bool kRegistered = [] {
  register_mixer(MixerKind::kMla, [](const ModelConfig& config, const LayerSpec& layer,
                                      const at::TensorOptions& options) -> std::unique_ptr<Mixer> {
    return std::make_unique<MlaMixer>(config, layer, options);
  });
  return true;
}();
}  // namespace

}  // namespace hylo
