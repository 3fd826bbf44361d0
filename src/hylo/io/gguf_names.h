// The one table between llama.cpp's GGUF tensor names and Hugging Face parameter names for the Transformer
// teachers (llama, qwen2, qwen3), and the loader that returns a GGUF tensor exactly as the HF checkpoint holds
// it: dequantized to f32, HF row-major shape, and -- for arch "llama" -- with the Q/K row permutation that
// llama.cpp's convert_hf_to_gguf.py applies for its interleaved RoPE undone (as transformers'
// LlamaTensorProcessor does). qwen2/qwen3 GGUFs are not permuted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hylo/config/model_config.h"
#include "hylo/core/result.h"
#include "hylo/io/gguf.h"

namespace hylo::io {

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"; nullopt for names outside the table
// (e.g. rope_freqs.weight).
std::optional<std::string> gguf_to_hf_name(const std::string& gguf_name);
// The inverse ("model.embed_tokens.weight" -> "token_embd.weight").
std::optional<std::string> hf_to_gguf_name(const std::string& hf_name);

// Dequantizes `gguf_name` to f32 in the HF layout. `shape_out` (optional) receives the HF shape
// (e.g. [out_features, in_features]). `cfg` supplies the head counts for the Q/K un-permutation.
Result<std::vector<float>> load_gguf_tensor_hf_layout(const GgufFile& f, const std::string& gguf_name,
                                                      const ModelConfig& cfg, std::vector<int64_t>* shape_out);

}  // namespace hylo::io
