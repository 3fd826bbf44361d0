#include "hylo/upcycle/init_gdn.h"

#include <algorithm>

namespace hylo::init {

GdnInit init_gdn(const TeacherAttention& t, const GdnSpec& g, int64_t d, at::Generator& gen) {
  const int64_t H = t.num_heads, Hkv = t.num_kv_heads, dh = t.head_dim;
  const int64_t kd = g.key_dim(), vd = g.value_dim(), full = H * dh;
  at::Tensor wk = repeat_kv_rows(t.wk, Hkv, H / Hkv);  // [H*Dh, D]
  at::Tensor wv = repeat_kv_rows(t.wv, Hkv, H / Hkv);  // [H*Dh, D]
  GdnInit out;
  const int64_t nk = std::min(kd, full), nv = std::min(vd, full);
  out.key_rows_copied = nk;
  out.value_rows_copied = nv;
  NamedTensors& p = out.params;
  at::Tensor q = linear_default(kd, d, gen);  // [key_dim, D]
  q.slice(0, 0, nk).copy_(t.wq.slice(0, 0, nk));
  at::Tensor k = linear_default(kd, d, gen);  // [key_dim, D]
  k.slice(0, 0, nk).copy_(wk.slice(0, 0, nk));
  at::Tensor v = linear_default(vd, d, gen);  // [value_dim, D]
  v.slice(0, 0, nv).copy_(wv.slice(0, 0, nv));
  at::Tensor o = linear_default(d, vd, gen);  // [D, value_dim]
  o.slice(1, 0, nv).copy_(t.wo.slice(1, 0, nv));
  p["gdn.q_proj.weight"] = q;
  p["gdn.k_proj.weight"] = k;
  p["gdn.v_proj.weight"] = v;
  p["gdn.a_proj.weight"] = linear_default(g.num_heads, d, gen);  // [H_g, D]
  p["gdn.b_proj.weight"] = linear_default(g.num_heads, d, gen);  // [H_g, D]
  p["gdn.A_log"] = a_log_default(g.num_heads, 0.0, 16.0, gen);
  p["gdn.dt_bias"] = dt_bias_default(g.num_heads, gen);
  if (g.use_short_conv) {
    p["gdn.q_conv1d.weight"] = conv_default(kd, g.conv_size, gen);  // [key_dim, K]
    p["gdn.k_conv1d.weight"] = conv_default(kd, g.conv_size, gen);
    p["gdn.v_conv1d.weight"] = conv_default(vd, g.conv_size, gen);  // [value_dim, K]
  }
  if (g.use_gate) p["gdn.g_proj.weight"] = linear_default(vd, d, gen);  // [value_dim, D]
  p["gdn.o_norm.weight"] = at::ones({g.head_v_dim}, at::kDouble);
  p["gdn.o_proj.weight"] = o;
  return out;
}

}  // namespace hylo::init
