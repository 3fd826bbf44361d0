// MLA from the teacher's Q/K/V/O by truncated SVD, exactly HYLO.md 3.1 (X-EcoMLA / Zebra-Llama re_init_q,
// re_init_kv), computed in fp64 on the CPU:
//   query:  W_q = U S V^T;  W_qa = S_r V_r^T [r_q, D];  W_qb = U_r viewed [H, Dh, r_q], per head rows
//           [0, nope) then [Dh - rope, Dh)  -> [H*(nope+rope), r_q].   (q_lora_rank 0: q_proj = those rows of W_q)
//   kv:     W_k, W_v viewed [Hkv, Dh, D], each KV head repeated G/Hkv times -> stacked [W_k; W_v] [2*G*Dh, D]
//           = U S V^T;  W_kva[:r_kv] = S_r V_r^T;  W_kva[r_kv:] = mean over KV heads of W_k[h, Dh-rope:Dh, :];
//           W_kvb = U_r split into K rows (first nope rows of each group) and V rows (all Dh rows),
//           interleaved per group [k_nope(g); v(g)] -> [G*(nope+v), r_kv].
//   out:    out_proj = W_o.
// The rank of the KV factorisation is the plan's kv_lora_rank, or X-EcoMLA's dynamic rank (smallest r holding
// `kv_energy` of the squared singular values, rounded up to a multiple of 8).
#pragma once

#include <optional>
#include <vector>

#include "hylo/upcycle/teacher_attention.h"

namespace hylo::init {

struct MlaInit {
  NamedTensors params;      // "mla.q_a_proj.weight", ... fp64
  int64_t q_rank = 0;       // 0: uncompressed q_proj
  int64_t kv_rank = 0;
  // Relative Frobenius errors of the matrices the MLA really uses, against the teacher rows they replace:
  double q_error = 0;       // ||W_q[kept rows] - W_qb W_qa|| / ||W_q[kept rows]||
  double kv_error = 0;      // ||[W_k nope rows; W_v] - W_kvb W_kva[:r_kv]|| / ||.||  (after the group repeat)
  double k_pe_error = 0;    // ||W_k[h, rope rows] - shared k_pe rows|| / ||W_k rope rows|| (0 with one KV head)
  // Eckart-Young tail energy of each SVD: sum_{i>=r} s_i^2 / sum_i s_i^2 (the squared relative error of the
  // best rank-r approximation of the whole matrix).
  double q_tail = 0;
  double kv_tail = 0;
  std::vector<double> kv_singular_values;
};

// spec.kv_lora_rank is used unless `kv_energy` is given. Throws hylo::Error on dims the plan validation lets
// through only by mistake (apply_plan checks them with messages first).
MlaInit init_mla(const TeacherAttention& teacher, const MlaSpec& spec, std::optional<double> kv_energy = std::nullopt);

}  // namespace hylo::init
