// Hybrid checkpoints: the `hybrid` block of a hylo checkpoint's config.json (one entry per layer naming its
// mixer and that mixer's dims), and import of AMD's released layout (backbone config.json +
// hybrid_config.json with `mla_layers`, MLA dims, optional per-layer ranks and Mamba2 dims; GDN dims are not
// published as config keys and are inferred from tensor shapes).
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/config/model_config.h"
#include "hylo/core/result.h"

namespace hylo {

inline constexpr int kHybridFormatVersion = 1;

// {"format": "hylo-hybrid", "version": 1, "layers": [{"mixer": "mla", "mla": {...}, "intermediate_size": ...}, ...]}
nlohmann::json hybrid_block_to_json(const ModelConfig& config);
// Replaces config.layers by the block's layers. `source` names the file in errors.
Status apply_hybrid_block(const nlohmann::json& block, ModelConfig& config, const std::string& source);

// Complete config.json of a hylo checkpoint: the backbone's HF keys plus the `hybrid` block.
nlohmann::json checkpoint_config_to_json(const ModelConfig& config);

// Shape of a tensor in the checkpoint, or nullopt when absent (used to infer GDN dims and the linear kind).
using TensorShapeLookup = std::function<std::optional<std::vector<int64_t>>(const std::string& name)>;

// Builds the config of an AMD HyLo / Zebra-Llama checkpoint from its backbone config.json, its
// hybrid_config.json and the tensor shapes of its model.safetensors.
Result<ModelConfig> import_amd_hybrid_config(const nlohmann::json& backbone_config, const nlohmann::json& hybrid_config,
                                             const TensorShapeLookup& shape_of, const std::string& source);

// Reads the config of any model directory: a hylo checkpoint (config.json with `hybrid`), an AMD hybrid
// (hybrid_config.json beside config.json; needs the tensor shapes) or a plain HF Transformer.
Result<ModelConfig> load_model_dir_config(const std::filesystem::path& dir, const TensorShapeLookup& shape_of);

}  // namespace hylo
