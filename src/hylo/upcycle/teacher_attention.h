// The teacher's attention weights of one layer in the form every initialiser starts from (HYLO.md 3.1-3.3):
// fp64 on the CPU, torch Linear layout [out, in], with Qwen3's per-head q/k RMSNorm gains folded into the rows
// of W_q / W_k (the normalisation itself cannot be folded into a linear map; see docs/upcycling.md), plus the
// default initialisers of the parameters that have no teacher counterpart (PyTorch / mamba_ssm / FLA defaults).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>

#include "hylo/config/model_config.h"

namespace hylo::init {

// Parameters of one new mixer, keyed by their name relative to the layer prefix ("mla.q_a_proj.weight").
using NamedTensors = std::map<std::string, at::Tensor>;

struct TeacherAttention {
  at::Tensor wq;  // [H*Dh, D]   fp64
  at::Tensor wk;  // [Hkv*Dh, D] fp64
  at::Tensor wv;  // [Hkv*Dh, D] fp64
  at::Tensor wo;  // [D, H*Dh]   fp64
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  bool folded_qk_norm = false;  // Qwen3: q_norm / k_norm gains multiplied into W_q / W_k rows
  bool dropped_bias = false;    // Qwen2 / attention_bias: the biases have no place in the new mixers
};

// `get(name)` returns the teacher tensor with that full name; `prefix` is "model.layers.3.".
TeacherAttention teacher_attention(const GqaSpec& spec, const std::string& prefix,
                                   const std::function<at::Tensor(const std::string&)>& get);

// Repeats each of the `kv_heads` head blocks of w [kv_heads*Dh, D] `rep` times in place (Llama's repeat_kv
// order: head h of the result reads KV head h / rep). Returns [kv_heads*rep*Dh, D].
at::Tensor repeat_kv_rows(const at::Tensor& w, int64_t kv_heads, int64_t rep);

// Defaults for parameters without a teacher counterpart, drawn from `gen` in fp64.
at::Tensor linear_default(int64_t out, int64_t in, at::Generator& gen);     // nn.Linear: U(+-1/sqrt(in))
at::Tensor conv_default(int64_t channels, int64_t kernel, at::Generator& gen);  // depthwise nn.Conv1d [C, K]
at::Tensor conv_bias_default(int64_t channels, int64_t kernel, at::Generator& gen);
// Mamba's dt_bias: softplus^-1 of dt ~ exp(U(ln dt_min, ln dt_max)), dt floored at 1e-4.
at::Tensor dt_bias_default(int64_t heads, at::Generator& gen, double dt_min = 1e-3, double dt_max = 1e-1);
// log U(lo, hi), lo floored at 1e-4 so that FLA's U(0, 16) cannot produce log 0.
at::Tensor a_log_default(int64_t heads, double lo, double hi, at::Generator& gen);

// Relative Frobenius error ||approx - ref|| / ||ref|| in fp64 (0 when both are zero).
double relative_frobenius_error(const at::Tensor& approx, const at::Tensor& ref);

}  // namespace hylo::init
