// hylo inspect MODEL [--plan PLAN.yaml] [--context N] [--json]
// What a model is and what it costs to run, read from its config and tensor headers only (no weights are
// materialised): architecture, parameter count (from the config, cross-checked with the checkpoint's tensor
// element counts), one row per layer (mixer, dims, parameters, KV cache per token, recurrent state), and the
// totals: KV cache bytes per token and at N tokens (bf16), recurrent state bytes per sequence (fp32).
// With --plan, the report is of the hybrid that the layer plan makes of MODEL (config only, nothing loaded).
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "hylo/config/gguf_config.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/config/layer_plan.h"
#include "hylo/config/model_config.h"
#include "hylo/core/progress.h"
#include "hylo/io/gguf.h"
#include "hylo/io/safetensors.h"

namespace hylo::cli {
namespace {

constexpr int64_t kKvBytesPerElem = 2;     // bf16 KV / latent cache
constexpr int64_t kStateBytesPerElem = 4;  // fp32 recurrent and conv state

struct InspectedModel {
  ModelConfig config;
  std::optional<int64_t> tensor_params;  // sum of the checkpoint's parameter tensors' elements
  std::string format;                    // "hf", "gguf"
};

InspectedModel inspect_source(const std::filesystem::path& path) {
  InspectedModel m;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    if (!std::filesystem::exists(path / "config.json", ec))
      throw Error(path.string() + ": a model directory needs config.json");
    // Tensor headers only: opening a checkpoint maps the files and parses their headers.
    // A directory may hold a config alone (inspect a shape before any weights exist); a checkpoint that is
    // there but broken is an error, never silently ignored.
    std::optional<io::SafetensorsCheckpoint> ckpt;
    if (std::filesystem::exists(path / "model.safetensors", ec) ||
        std::filesystem::exists(path / "model.safetensors.index.json", ec))
      ckpt.emplace(io::SafetensorsCheckpoint::open(path).value_or_throw());
    auto shape_of = [&](const std::string& name) -> std::optional<std::vector<int64_t>> {
      if (!ckpt) return std::nullopt;
      const io::TensorInfo* info = ckpt->find(name);
      if (!info) return std::nullopt;
      return info->shape;
    };
    m.config = load_model_dir_config(path, shape_of).value_or_throw();
    m.format = "hf";
    if (ckpt) {
      int64_t n = 0;
      for (const auto& name : ckpt->names()) {
        // Buffers some checkpoints store beside the parameters, and the duplicate of a tied head.
        if (name.ends_with("rotary_emb.inv_freq")) continue;
        if (m.config.tie_word_embeddings && name == "lm_head.weight") continue;
        n += ckpt->find(name)->numel();
      }
      m.tensor_params = n;
    }
  } else if (std::filesystem::is_regular_file(path, ec) && path.extension() == ".gguf") {
    io::GgufFile f = io::GgufFile::open(path).value_or_throw();
    m.config = model_config_from_gguf(f).value_or_throw();
    m.format = "gguf";
    int64_t n = 0;
    for (const auto& t : f.tensors())
      if (t.name != "rope_freqs.weight") n += t.numel();  // llama3 RoPE factors: a table, not a parameter
    m.tensor_params = n;
  } else {
    throw Error(path.string() + ": not a model directory (config.json) or a .gguf file");
  }
  return m;
}

nlohmann::json layer_dims(const LayerSpec& l) {
  nlohmann::json d;
  switch (l.mixer) {
    case MixerKind::kGqa:
      d = {{"num_heads", l.gqa.num_heads}, {"num_kv_heads", l.gqa.num_kv_heads}, {"head_dim", l.gqa.head_dim}};
      if (l.gqa.qk_norm) d["qk_norm"] = true;
      if (l.gqa.sliding_window) d["sliding_window"] = *l.gqa.sliding_window;
      break;
    case MixerKind::kMla:
      d = {{"num_heads", l.mla.num_heads},           {"q_lora_rank", l.mla.q_lora_rank},
           {"kv_lora_rank", l.mla.kv_lora_rank},     {"qk_nope_head_dim", l.mla.qk_nope_head_dim},
           {"qk_rope_head_dim", l.mla.qk_rope_head_dim}, {"v_head_dim", l.mla.v_head_dim},
           {"num_kv_groups", l.mla.num_kv_groups}};
      break;
    case MixerKind::kGdn:
      d = {{"num_heads", l.gdn.num_heads}, {"head_k_dim", l.gdn.head_k_dim}, {"head_v_dim", l.gdn.head_v_dim},
           {"conv_size", l.gdn.conv_size}};
      break;
    case MixerKind::kMamba2:
      d = {{"d_inner", l.mamba2.d_inner}, {"d_xb", l.mamba2.d_xb},       {"d_state", l.mamba2.d_state},
           {"n_heads", l.mamba2.n_heads}, {"head_dim", l.mamba2.head_dim}, {"conv_size", l.mamba2.conv_size}};
      break;
  }
  d["intermediate_size"] = l.intermediate_size;
  return d;
}

std::string dims_text(const LayerSpec& l) {
  std::ostringstream s;
  switch (l.mixer) {
    case MixerKind::kGqa:
      s << "heads " << l.gqa.num_heads << "/" << l.gqa.num_kv_heads << " x " << l.gqa.head_dim;
      if (l.gqa.qk_norm) s << " qk-norm";
      break;
    case MixerKind::kMla:
      s << "heads " << l.mla.num_heads << " r_kv " << l.mla.kv_lora_rank << " rope " << l.mla.qk_rope_head_dim
        << " q_rank " << l.mla.q_lora_rank;
      break;
    case MixerKind::kGdn:
      s << "heads " << l.gdn.num_heads << " dk " << l.gdn.head_k_dim << " dv " << l.gdn.head_v_dim;
      break;
    case MixerKind::kMamba2:
      s << "heads " << l.mamba2.n_heads << " x " << l.mamba2.head_dim << " d_state " << l.mamba2.d_state << " d_xb "
        << l.mamba2.d_xb;
      break;
  }
  s << ", ffn " << l.intermediate_size;
  return s.str();
}

nlohmann::json describe(const std::string& source, const InspectedModel& m, int64_t context) {
  const ModelConfig& c = m.config;
  nlohmann::json j;
  j["source"] = source;
  j["format"] = m.format;
  j["architecture"] = c.architecture;
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_layers"] = c.num_layers();
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["max_position_embeddings"] = c.max_position_embeddings;
  const int64_t params = parameter_count(c);
  j["parameters"] = params;
  j["parameters_from_tensors"] = m.tensor_params ? nlohmann::json(*m.tensor_params) : nlohmann::json(nullptr);
  j["parameters_match"] = m.tensor_params ? nlohmann::json(*m.tensor_params == params) : nlohmann::json(nullptr);
  nlohmann::json layers = nlohmann::json::array();
  int64_t kv_per_token = 0, state = 0;
  for (int64_t i = 0; i < c.num_layers(); ++i) {
    const LayerSpec& l = c.layers[i];
    const LayerFootprint f = layer_footprint(c, l);
    kv_per_token += f.kv_elems_per_token * kKvBytesPerElem;
    state += f.state_elems * kStateBytesPerElem;
    layers.push_back({{"index", i},
                      {"mixer", mixer_kind_name(l.mixer)},
                      {"dims", layer_dims(l)},
                      {"params", f.params},
                      {"kv_elems_per_token", f.kv_elems_per_token},
                      {"kv_bytes_per_token", f.kv_elems_per_token * kKvBytesPerElem},
                      {"state_elems", f.state_elems},
                      {"state_bytes", f.state_elems * kStateBytesPerElem}});
  }
  j["layers"] = std::move(layers);
  j["kv_dtype"] = "bf16";
  j["state_dtype"] = "fp32";
  j["kv_bytes_per_token"] = kv_per_token;
  j["context"] = context;
  j["kv_bytes_at_context"] = kv_per_token * context;
  j["state_bytes_per_sequence"] = state;
  return j;
}

void print_text(const nlohmann::json& j) {
  std::printf("model         %s (%s)\n", j["source"].get<std::string>().c_str(), j["format"].get<std::string>().c_str());
  std::printf("architecture  %s (model_type %s)\n", j["architecture"].get<std::string>().c_str(),
              j["model_type"].get<std::string>().c_str());
  std::printf("shape         vocab %lld, hidden %lld, %lld layers, %s embeddings, max positions %lld\n",
              j["vocab_size"].get<long long>(), j["hidden_size"].get<long long>(), j["num_layers"].get<long long>(),
              j["tie_word_embeddings"].get<bool>() ? "tied" : "untied", j["max_position_embeddings"].get<long long>());
  std::printf("parameters    %lld (from the config)", j["parameters"].get<long long>());
  if (!j["parameters_from_tensors"].is_null())
    std::printf("; %lld in the checkpoint's tensors%s", j["parameters_from_tensors"].get<long long>(),
                j["parameters_match"].get<bool>() ? " (match)" : " (MISMATCH)");
  std::printf("\n\n%5s  %-6s  %-34s  %12s  %10s  %12s  %12s\n", "layer", "mixer", "dims", "params", "KV el/tok",
              "KV B/tok", "state B");
  for (const auto& l : j["layers"]) {
    std::printf("%5lld  %-6s  %-34s  %12lld  %10lld  %12lld  %12lld\n", l["index"].get<long long>(),
                l["mixer"].get<std::string>().c_str(), l["dims_text"].get<std::string>().c_str(),
                l["params"].get<long long>(), l["kv_elems_per_token"].get<long long>(),
                l["kv_bytes_per_token"].get<long long>(), l["state_bytes"].get<long long>());
  }
  const auto kv = j["kv_bytes_per_token"].get<long long>();
  const auto at_ctx = j["kv_bytes_at_context"].get<long long>();
  const auto state = j["state_bytes_per_sequence"].get<long long>();
  std::printf("\nKV cache (bf16)         %lld B per token (%s); %s at %lld tokens\n", kv, format_bytes(kv).c_str(),
              format_bytes(static_cast<double>(at_ctx)).c_str(), j["context"].get<long long>());
  std::printf("recurrent state (fp32)  %lld B per sequence (%s), independent of context\n", state,
              format_bytes(static_cast<double>(state)).c_str());
}

int run_inspect(const std::string& model, const std::string& plan_path, int64_t context, bool json) {
  InspectedModel m = inspect_source(model);
  if (!plan_path.empty()) {
    // What the plan would make of this teacher, before any weights exist: the hybrid's config alone.
    const LayerPlan plan = load_layer_plan(plan_path).value_or_throw();
    m.config = apply_plan(m.config, plan).value_or_throw();
    m.tensor_params.reset();
    m.format += "+plan";
  }
  if (context < 0) throw Error("inspect: --context must be >= 0, got " + std::to_string(context));
  if (context == 0) context = m.config.max_position_embeddings > 0 ? m.config.max_position_embeddings : 4096;
  nlohmann::json j = describe(model, m, context);
  if (json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  for (size_t i = 0; i < j["layers"].size(); ++i) j["layers"][i]["dims_text"] = dims_text(m.config.layers[i]);
  print_text(j);
  return 0;
}

CommandRun setup_inspect(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto context = std::make_shared<int64_t>(0);
  auto json = std::make_shared<bool>(false);
  auto plan = std::make_shared<std::string>();
  app.add_option("model", *model, "HF / hylo model directory or GGUF file")->required();
  app.add_option("--plan", *plan, "layer plan (recipes/plans/*.yaml): report the hybrid this plan makes of MODEL");
  app.add_option("--context", *context, "tokens for the KV cache total (default: max_position_embeddings)");
  app.add_flag("--json", *json, "print JSON instead of a table");
  return [=] { return run_inspect(*model, *plan, *context, *json); };
}

}  // namespace

HYLO_COMMAND(inspect, "inspect", "architecture, parameter count, per-layer mixers, KV cache and state sizes",
             setup_inspect);

}  // namespace hylo::cli
