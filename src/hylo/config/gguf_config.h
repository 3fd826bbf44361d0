// ModelConfig from GGUF metadata (torch-free): the llama.cpp keys "<arch>.block_count", "<arch>.attention.*",
// "<arch>.rope.*", "tokenizer.ggml.*_token_id", plus what only the tensor list tells (tied head = no
// output.weight; q/k/v/o biases and Qwen3 q/k norms = those tensors exist). Supported architectures: llama,
// qwen2, qwen3; anything else is an error listing them. Every layer is a gqa LayerSpec.
#pragma once

#include <string>

#include "hylo/config/model_config.h"
#include "hylo/core/result.h"
#include "hylo/io/gguf.h"

namespace hylo {

Result<ModelConfig> model_config_from_gguf(const io::GgufFile& f);

// "llama, qwen2, qwen3"
std::string supported_gguf_architectures();

}  // namespace hylo
