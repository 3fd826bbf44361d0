// Mamba2 (Zebra / MambaInLlama form) from the teacher's attention, HYLO.md 3.2 and 2.4: in_proj rows are laid
// out [z (d_inner) | x (d_xb) | B (d_xb) | C (d_inner) | dt (n_heads)] and x <- W_v, B <- W_k, C <- W_q,
// out_proj <- W_o. Without softmax, attention is a state-space model with no decay, so these copies make the
// block start as causal linear attention over the teacher's own Q/K/V (the teacher's RoPE is dropped). The
// rest as mamba_ssm initialises it: z and dt rows and the conv as nn.Linear / nn.Conv1d defaults,
// A_log = log U(1, 16), dt_bias = softplus^-1(exp U(ln 1e-3, ln 1e-1)) floored at 1e-4, D = 1, norm = 1.
#pragma once

#include "hylo/upcycle/teacher_attention.h"

namespace hylo::init {

// Names under "mamba.": in_proj.weight, conv1d.weight [C, K], conv1d.bias, dt_bias, A_log, D, norm.weight,
// out_proj.weight; all fp64. d_inner must be H*Dh, d_xb Hkv*Dh and d_state = head_dim = Dh (apply_plan checks).
NamedTensors init_mamba2(const TeacherAttention& teacher, const Mamba2Spec& spec, int64_t hidden_size,
                         at::Generator& gen);

}  // namespace hylo::init
