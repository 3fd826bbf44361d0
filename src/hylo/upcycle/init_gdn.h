// Gated DeltaNet (FLA) from the teacher's attention, HYLO.md 3.3: the KV heads are expanded to the query heads
// (Llama's repeat_kv), so W_k and W_v have H*Dh rows like W_q; then the overlapping leading blocks are copied:
//   q_proj[:n_k] <- W_q[:n_k],  k_proj[:n_k] <- W_k_expanded[:n_k],  n_k = min(key_dim, H*Dh)
//   v_proj[:n_v] <- W_v_expanded[:n_v],  o_proj[:, :n_v] <- W_o[:, :n_v],  n_v = min(value_dim, H*Dh)
// Rows / columns beyond the overlap, and g_proj, a_proj, b_proj and the three short convs keep the defaults
// (nn.Linear / nn.Conv1d), A_log = log U(0, 16) (FLA, floored at 1e-4), dt_bias as Mamba's, o_norm = 1.
#pragma once

#include "hylo/upcycle/teacher_attention.h"

namespace hylo::init {

struct GdnInit {
  NamedTensors params;  // under "gdn.": q_proj, k_proj, v_proj, a_proj, b_proj, A_log, dt_bias, q_conv1d,
                        // k_conv1d, v_conv1d ([C, K]), g_proj, o_norm, o_proj; fp64
  int64_t key_rows_copied = 0;    // n_k
  int64_t value_rows_copied = 0;  // n_v
};

GdnInit init_gdn(const TeacherAttention& teacher, const GdnSpec& spec, int64_t hidden_size, at::Generator& gen);

}  // namespace hylo::init
