#include "hylo/upcycle/init_mla.h"

#include <algorithm>

#include "hylo/config/layer_plan.h"
#include "hylo/core/result.h"

namespace hylo::init {

namespace {

double tail_energy(const at::Tensor& s, int64_t r) {
  const double total = (s * s).sum().item<double>();
  if (total == 0.0) return 0.0;
  return (s.slice(0, r) * s.slice(0, r)).sum().item<double>() / total;
}

// Per head block of `rows` rows, keep [0, nope) then [dh - rope, dh). m: [heads*dh, C] -> [heads*(nope+rope), C].
at::Tensor keep_nope_rope_rows(const at::Tensor& m, int64_t heads, int64_t dh, int64_t nope, int64_t rope) {
  at::Tensor v = m.reshape({heads, dh, m.size(1)});  // [H, Dh, C]
  return at::cat({v.slice(1, 0, nope), v.slice(1, dh - rope, dh)}, 1).reshape({heads * (nope + rope), m.size(1)});
}

}  // namespace

MlaInit init_mla(const TeacherAttention& t, const MlaSpec& spec, std::optional<double> kv_energy) {
  const int64_t H = t.num_heads, Hkv = t.num_kv_heads, dh = t.head_dim, D = t.wq.size(1);
  const int64_t nope = spec.qk_nope_head_dim, rope = spec.qk_rope_head_dim, G = spec.num_kv_groups;
  if (spec.num_heads != H || spec.v_head_dim != dh || nope + rope > dh || G % Hkv != 0)
    throw Error("init_mla: MLA dims do not fit the teacher (heads " + std::to_string(spec.num_heads) + " vs " +
                std::to_string(H) + ", v_head_dim " + std::to_string(spec.v_head_dim) + " vs head_dim " +
                std::to_string(dh) + ", groups " + std::to_string(G) + " vs KV heads " + std::to_string(Hkv) + ")");
  MlaInit out;

  // ---- query ------------------------------------------------------------------------------------------------
  at::Tensor wq_kept = keep_nope_rope_rows(t.wq, H, dh, nope, rope);  // [H*(nope+rope), D]
  if (spec.q_lora_rank == 0) {
    out.params["mla.q_proj.weight"] = wq_kept;
  } else {
    const int64_t r = spec.q_lora_rank;
    auto [u, s, vh] = at::linalg_svd(t.wq, /*full_matrices=*/false);  // [H*Dh, k], [k], [k, D]
    if (r > s.size(0)) throw Error("init_mla: q_lora_rank " + std::to_string(r) + " exceeds the rank bound");
    at::Tensor wqa = s.slice(0, 0, r).unsqueeze(1) * vh.slice(0, 0, r);          // [r_q, D]
    at::Tensor wqb = keep_nope_rope_rows(u.slice(1, 0, r), H, dh, nope, rope);  // [H*(nope+rope), r_q]
    out.params["mla.q_a_proj.weight"] = wqa;
    out.params["mla.q_b_proj.weight"] = wqb;
    out.q_rank = r;
    out.q_error = relative_frobenius_error(at::matmul(wqb, wqa), wq_kept);
    out.q_tail = tail_energy(s, r);
    if (spec.latent_norms) out.params["mla.q_a_layernorm.weight"] = at::ones({r}, at::kDouble);
  }

  // ---- key / value, jointly -------------------------------------------------------------------------------------
  const int64_t rep = G / Hkv;
  at::Tensor wk = repeat_kv_rows(t.wk, Hkv, rep);  // [G*Dh, D]
  at::Tensor wv = repeat_kv_rows(t.wv, Hkv, rep);  // [G*Dh, D]
  at::Tensor wkv = at::cat({wk, wv}, 0);           // [2*G*Dh, D]
  auto [u, s, vh] = at::linalg_svd(wkv, /*full_matrices=*/false);  // [2*G*Dh, k], [k], [k, D]
  out.kv_singular_values.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.size(0));
  const int64_t r = kv_energy ? energy_rank(out.kv_singular_values, *kv_energy) : spec.kv_lora_rank;
  if (r < 1 || r > s.size(0))
    throw Error("init_mla: kv_lora_rank " + std::to_string(r) + " outside 1.." + std::to_string(s.size(0)));
  out.kv_rank = r;
  out.kv_tail = tail_energy(s, r);
  at::Tensor c_rows = s.slice(0, 0, r).unsqueeze(1) * vh.slice(0, 0, r);                        // [r_kv, D]
  at::Tensor k_pe = t.wk.view({Hkv, dh, D}).slice(1, dh - rope, dh).mean(0);                    // [rope, D]
  out.params["mla.kv_a_proj_with_mqa.weight"] = at::cat({c_rows, k_pe}, 0);                     // [r_kv+rope, D]
  at::Tensor u_r = u.slice(1, 0, r);                                                             // [2*G*Dh, r_kv]
  at::Tensor u_k = u_r.slice(0, 0, G * dh).view({G, dh, r}).slice(1, 0, nope);                   // [G, nope, r_kv]
  at::Tensor u_v = u_r.slice(0, G * dh, 2 * G * dh).view({G, dh, r});                            // [G, Dh, r_kv]
  at::Tensor wkvb = at::cat({u_k, u_v}, 1).reshape({G * (nope + dh), r});                        // [G*(nope+v), r_kv]
  out.params["mla.kv_b_proj.weight"] = wkvb;
  at::Tensor kv_kept = at::cat({wk.view({G, dh, D}).slice(1, 0, nope), wv.view({G, dh, D})}, 1)
                           .reshape({G * (nope + dh), D});                                       // [G*(nope+v), D]
  out.kv_error = relative_frobenius_error(at::matmul(wkvb, c_rows), kv_kept);
  at::Tensor k_rope_rows = t.wk.view({Hkv, dh, D}).slice(1, dh - rope, dh);                     // [Hkv, rope, D]
  out.k_pe_error = relative_frobenius_error(k_pe.unsqueeze(0).expand_as(k_rope_rows), k_rope_rows);
  if (spec.latent_norms) out.params["mla.kv_a_layernorm.weight"] = at::ones({r}, at::kDouble);

  // ---- output ---------------------------------------------------------------------------------------------------
  out.params["mla.out_proj.weight"] = t.wo.clone();  // [D, H*Dh]
  return out;
}

}  // namespace hylo::init
