// Export of a hylo hybrid to AMD's released HyLo / Zebra-Llama layout (HYLO.md 2.1-2.5): the backbone's HF
// config.json (no `hybrid` block) plus hybrid_config.json with the keys of Zebra-Llama's HybridConfig (mla_layers,
// the MLA dims shared by all MLA layers, layer_rank_list for per-layer ranks, rope_scaling of the MLA rope, and for
// Mamba2 layers d_inner / d_xb / ssm_cfg). GDN dims have no config keys there: readers take them from the tensor
// shapes. Tensor names are already AMD's (model.layers.{i}.mla.*, .gdn.*, .mamba.*, lm_head.weight).
//
// The layout expresses less than a hylo config (one set of MLA dims, one backbone MLP width, every non-MLA layer
// linear, Mamba2 with head_dim = d_state, ...). The export therefore re-imports what it wrote
// (import_amd_hybrid_config) and refuses, naming the first layer that differs, when the result would not be the
// same model.
#pragma once

#include <utility>

#include <nlohmann/json.hpp>

#include "hylo/config/hybrid_config.h"
#include "hylo/config/model_config.h"
#include "hylo/core/result.h"

namespace hylo {

struct AmdConfigFiles {
  nlohmann::json config;         // config.json: the backbone Transformer
  nlohmann::json hybrid_config;  // hybrid_config.json
};

// shape_of: the tensors the checkpoint will hold (the importer infers GDN dims from them). `what` names the
// model in errors.
Result<AmdConfigFiles> amd_config_files(const ModelConfig& config, const TensorShapeLookup& shape_of,
                                        const std::string& what);

}  // namespace hylo
