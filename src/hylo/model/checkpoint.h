// Writing hylo checkpoints: a directory with config.json (checkpoint_config_to_json: the backbone's HF keys plus
// the per-layer `hybrid` block), model.safetensors (every parameter under its checkpoint name, in the model's
// dtype) and the tokenizer. Everything is written into a staging directory next to the target and committed
// with one rename (commit_directory_atomic), so an interrupted upcycle or save leaves either the previous
// checkpoint or the complete new one, never a half-written one.
//
// The tokenizer comes from `tokenizer_source`: an HF directory (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, generation_config.json and chat_template.jinja are copied when present; a hylo
// checkpoint directory that holds only tokenizer.gguf passes that on), a tokenizer.json file, or a GGUF file
// (its tokenizer.* metadata is written as a tensor-free `tokenizer.gguf`, which the GGUF vocabulary loader reads
// back token for token).
#pragma once

#include <filesystem>

#include "hylo/core/result.h"
#include "hylo/model/causal_lm.h"

namespace hylo {

// kHylo: config.json with the `hybrid` block. kAmd: AMD's released layout (config/amd_export.h: the backbone's
// config.json + hybrid_config.json), refused for models that layout cannot express; same tensors either way.
enum class CheckpointLayout { kHylo, kAmd };

Status save_checkpoint(CausalLM& model, const std::filesystem::path& dir, const std::filesystem::path& tokenizer_source,
                       CheckpointLayout layout = CheckpointLayout::kHylo);

}  // namespace hylo
