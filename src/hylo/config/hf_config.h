// Import and export of Hugging Face `config.json` for the Transformer teachers hylo supports:
// LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and MistralForCausalLM (torch-free).
//
// Accepts both spellings transformers has used for RoPE: 4.x `rope_theta` + `rope_scaling`, and 5.x
// `rope_parameters` (a dict with rope_type, rope_theta, ...). RoPE types: default, linear, llama3, yarn.
// Fields default as in the transformers config class of each model type (e.g. Qwen3 head_dim = 128 when the
// file omits it). An unknown architecture or an unsupported value (rope type "dynamic", hidden_act other than
// silu, partial rotary) is an error naming the file, the field, and what is supported.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "hylo/config/model_config.h"
#include "hylo/core/result.h"

namespace hylo {

// `source_name` is used in error messages (usually the config.json path).
Result<ModelConfig> model_config_from_hf_json(const nlohmann::json& json, const std::string& source_name);

// Reads DIR/config.json.
Result<ModelConfig> load_hf_config(const std::filesystem::path& dir);

// The inverse: a config.json transformers loads as the same model (Transformer configs only: every layer
// must be gqa with identical dims). Writes both `rope_parameters` (5.x) and `rope_theta`/`rope_scaling` (4.x).
nlohmann::json hf_config_to_json(const ModelConfig& config);

// The architectures model_config_from_hf_json accepts, for messages ("LlamaForCausalLM, ...").
std::string supported_hf_architectures();

}  // namespace hylo
