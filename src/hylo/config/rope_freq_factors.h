// llama.cpp's per-frequency RoPE factors (the `rope_freqs.weight` tensor its converter writes for every model with
// llama3 RoPE scaling: Llama-3.1/3.2/3.3). llama.cpp divides each RoPE frequency base^(-2i/d) by factor i; hylo
// applies them the same way (ops::rope_inv_freq). The GGUF carries no llama3 parameters besides these factors, so
// they are checked to be a llama3 profile: 1 for the fast frequencies, `factor` for the slow ones, and in between
// 1 / ((1 - s) / factor + s) with s affine in the frequency (HF's _compute_llama3_parameters). The llama3
// parameters they imply are returned for the config (low_freq_factor 1 stands for the whole family of equal
// profiles: only s's slope and offset are observable).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hylo/config/model_config.h"
#include "hylo/core/result.h"

namespace hylo {

// factors: [dim/2] as stored; theta: rope.freq_base; dim: the rotary dimension. `what` names the file and tensor
// for errors. Returns a llama3 RopeConfig with freq_factors = factors.
Result<RopeConfig> rope_from_freq_factors(const std::vector<float>& factors, double theta, int64_t dim,
                                          const std::string& what);

// The llama3 factors llama.cpp's converter derives from HF's rope_scaling (fp64 arithmetic): [dim/2].
std::vector<double> llama3_freq_factors(const RopeConfig& rope, int64_t dim);

}  // namespace hylo
