#include "hylo/upcycle/teacher_attention.h"

#include <cmath>

#include "hylo/core/result.h"

namespace hylo::init {

namespace {
at::Tensor f64(const at::Tensor& t) { return t.to(at::kCPU, at::kDouble).contiguous(); }
at::TensorOptions opts() { return at::TensorOptions().dtype(at::kDouble); }
}  // namespace

TeacherAttention teacher_attention(const GqaSpec& spec, const std::string& prefix,
                                   const std::function<at::Tensor(const std::string&)>& get) {
  const std::string p = prefix + "self_attn.";
  TeacherAttention t;
  t.num_heads = spec.num_heads;
  t.num_kv_heads = spec.num_kv_heads;
  t.head_dim = spec.head_dim;
  const int64_t dh = spec.head_dim;
  t.wq = f64(get(p + "q_proj.weight"));  // [H*Dh, D]
  t.wk = f64(get(p + "k_proj.weight"));  // [Hkv*Dh, D]
  t.wv = f64(get(p + "v_proj.weight"));  // [Hkv*Dh, D]
  t.wo = f64(get(p + "o_proj.weight"));  // [D, H*Dh]
  if (t.wq.size(0) != spec.num_heads * dh || t.wk.size(0) != spec.num_kv_heads * dh ||
      t.wv.size(0) != spec.num_kv_heads * dh || t.wo.size(1) != spec.num_heads * dh)
    throw Error(p + "*: attention weight shapes do not match the config's heads x head_dim");
  if (spec.qk_norm) {
    // q_h = rmsnorm(W_q,h x) * g: the gain g [Dh] is a per-row scale of every head's block.
    at::Tensor gq = f64(get(p + "q_norm.weight"));  // [Dh]
    at::Tensor gk = f64(get(p + "k_norm.weight"));  // [Dh]
    t.wq = (t.wq.view({spec.num_heads, dh, -1}) * gq.view({1, dh, 1})).reshape({spec.num_heads * dh, -1});
    t.wk = (t.wk.view({spec.num_kv_heads, dh, -1}) * gk.view({1, dh, 1})).reshape({spec.num_kv_heads * dh, -1});
    t.folded_qk_norm = true;
  }
  t.dropped_bias = spec.qkv_bias || spec.o_bias;
  return t;
}

at::Tensor repeat_kv_rows(const at::Tensor& w, int64_t kv_heads, int64_t rep) {
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t dh = rows / kv_heads;
  // [Hkv, Dh, D] -> [Hkv, rep, Dh, D] -> [Hkv*rep*Dh, D]
  return w.view({kv_heads, 1, dh, cols}).expand({kv_heads, rep, dh, cols}).reshape({kv_heads * rep * dh, cols});
}

at::Tensor linear_default(int64_t out, int64_t in, at::Generator& gen) {
  // kaiming_uniform_(a = sqrt(5)) of nn.Linear reduces to U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  return at::empty({out, in}, opts()).uniform_(-bound, bound, gen);
}

at::Tensor conv_default(int64_t channels, int64_t kernel, at::Generator& gen) {
  // Depthwise Conv1d: fan_in = (in_channels / groups) * kernel = kernel.
  const double bound = 1.0 / std::sqrt(static_cast<double>(kernel));
  return at::empty({channels, kernel}, opts()).uniform_(-bound, bound, gen);
}

at::Tensor conv_bias_default(int64_t channels, int64_t kernel, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(kernel));
  return at::empty({channels}, opts()).uniform_(-bound, bound, gen);
}

at::Tensor dt_bias_default(int64_t heads, at::Generator& gen, double dt_min, double dt_max) {
  at::Tensor u = at::empty({heads}, opts()).uniform_(0.0, 1.0, gen);
  at::Tensor dt = at::exp(u * (std::log(dt_max) - std::log(dt_min)) + std::log(dt_min)).clamp_min(1e-4);  // [H]
  return dt + at::log(-at::expm1(-dt));  // softplus^-1(dt)
}

at::Tensor a_log_default(int64_t heads, double lo, double hi, at::Generator& gen) {
  return at::log(at::empty({heads}, opts()).uniform_(lo, hi, gen).clamp_min(1e-4));
}

double relative_frobenius_error(const at::Tensor& approx, const at::Tensor& ref) {
  const double num = (approx.to(at::kDouble) - ref.to(at::kDouble)).norm().item<double>();
  const double den = ref.to(at::kDouble).norm().item<double>();
  if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
  return num / den;
}

}  // namespace hylo::init
