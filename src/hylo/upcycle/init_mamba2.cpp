#include "hylo/upcycle/init_mamba2.h"

#include "hylo/core/result.h"

namespace hylo::init {

NamedTensors init_mamba2(const TeacherAttention& t, const Mamba2Spec& m, int64_t d, at::Generator& gen) {
  const int64_t H = t.num_heads, Hkv = t.num_kv_heads, dh = t.head_dim;
  if (m.d_inner != H * dh || m.d_xb != Hkv * dh || m.d_state != dh || m.head_dim != dh || m.n_heads != H)
    throw Error("init_mamba2: Mamba2 dims (d_inner " + std::to_string(m.d_inner) + ", d_xb " + std::to_string(m.d_xb) +
                ", d_state " + std::to_string(m.d_state) + ") do not match the teacher (H*Dh " + std::to_string(H * dh) +
                ", Hkv*Dh " + std::to_string(Hkv * dh) + ", Dh " + std::to_string(dh) + ")");
  const int64_t di = m.d_inner, dxb = m.d_xb;
  NamedTensors p;
  // One nn.Linear default draw for the whole in_proj (as mamba_ssm creates it), then the teacher blocks.
  at::Tensor in_proj = linear_default(2 * di + 2 * dxb + m.n_heads, d, gen);  // [z | x | B | C | dt] x D
  in_proj.slice(0, di, di + dxb).copy_(t.wv);                                // x <- W_v  [Hkv*Dh, D]
  in_proj.slice(0, di + dxb, di + 2 * dxb).copy_(t.wk);                      // B <- W_k  [Hkv*Dh, D]
  in_proj.slice(0, di + 2 * dxb, 2 * di + 2 * dxb).copy_(t.wq);              // C <- W_q  [H*Dh, D]
  p["mamba.in_proj.weight"] = in_proj;
  const int64_t conv_dim = di + 2 * dxb;
  p["mamba.conv1d.weight"] = conv_default(conv_dim, m.conv_size, gen);       // [C, K]
  if (m.conv_bias) p["mamba.conv1d.bias"] = conv_bias_default(conv_dim, m.conv_size, gen);
  p["mamba.dt_bias"] = dt_bias_default(m.n_heads, gen);
  p["mamba.A_log"] = a_log_default(m.n_heads, 1.0, 16.0, gen);
  p["mamba.D"] = at::ones({m.n_heads}, at::kDouble);
  p["mamba.norm.weight"] = at::ones({di}, at::kDouble);
  p["mamba.out_proj.weight"] = t.wo.clone();                                 // [D, H*Dh]
  return p;
}

}  // namespace hylo::init
