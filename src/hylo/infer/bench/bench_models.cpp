#include "hylo/infer/bench/bench_models.h"

#include <nlohmann/json.hpp>

#include <memory>

#include "hylo/config/hf_config.h"
#include "hylo/config/layer_plan.h"
#include "hylo/core/file_util.h"
#include "hylo/core/result.h"

namespace hylo::bench {

std::unique_ptr<CausalLM> random_model_on_device(const ModelConfig& config, const LoadOptions& load, uint64_t seed) {
  auto model = std::make_unique<CausalLM>(config, at::TensorOptions().dtype(load.dtype).device(load.device));
  at::manual_seed(seed);
  model->visit_parameters([&](const std::string& name, at::Tensor& t) {
    const bool is_norm = name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0;
    at::Tensor r = at::randn(t.sizes(), t.options().dtype(at::kFloat));
    t.copy_(is_norm ? 1.0 + 0.1 * r : 0.02 * r);
  });
  return model;
}

namespace {

ModelConfig read_random_config(const std::string& path) {
  auto text = read_text_file(path);
  if (!text.ok()) throw Error("--random-config: " + text.error());
  auto json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) throw Error("--random-config " + path + ": not valid JSON");
  return model_config_from_hf_json(json, path).value_or_throw();
}

// The hybrid a plan makes of a Transformer, with the untied head hylo hybrids store (HYLO.md 2.1).
ModelConfig plan_hybrid(const ModelConfig& teacher, const LayerPlan& plan) {
  if (teacher.is_hybrid())
    throw Error("--plan: " + plan.source + " applies to a Transformer, and the model is a hybrid");
  ModelConfig c = apply_plan(teacher, plan).value_or_throw();
  c.tie_word_embeddings = false;
  return c;
}

// A short name for a model path: the file name without .json / .gguf ("config.json": its directory's name).
std::string stem(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.filename() == "config.json") p = p.parent_path();
  if (p.extension() == ".json" || p.extension() == ".gguf") p.replace_extension();
  return p.filename().string();
}

}  // namespace

std::vector<BenchModelSource> bench_model_sources(const BenchModelSpec& spec) {
  const bool random = !spec.random_config.empty();
  if (random && !spec.model.empty()) throw Error("bench: give MODEL or --random-config, not both");
  if (!random && spec.model.empty()) throw Error("bench: give MODEL (a checkpoint) or --random-config CONFIG.json");
  if (random && !spec.teacher.empty())
    throw Error("bench: --teacher goes with MODEL; with --random-config the config itself is the teacher");
  if (!spec.plan.empty() && !spec.teacher.empty())
    throw Error("bench: --plan makes the hybrid from MODEL, which is then the teacher; --teacher is not needed");
  std::vector<BenchModelSource> out;
  const LoadOptions load = spec.load;
  const uint64_t seed = spec.seed;
  std::optional<LayerPlan> plan;
  if (!spec.plan.empty()) plan = load_layer_plan(spec.plan).value_or_throw();

  if (random) {
    const ModelConfig teacher = read_random_config(spec.random_config);
    const std::string base = stem(spec.random_config);
    if (plan) {
      const ModelConfig hybrid = plan_hybrid(teacher, *plan);
      out.push_back({plan->name + " (random)", "hybrid",
                     [=] { return random_model_on_device(hybrid, load, seed); }});
    }
    out.push_back({base + " (random)", plan ? "teacher" : "model",
                   [=] { return random_model_on_device(teacher, load, seed + 1); }});
    return out;
  }

  // A checkpoint. With a plan its config is needed first, so it is loaded once and handed over when its turn
  // comes (it stays resident while the random hybrid runs).
  if (plan) {
    auto shared = std::make_shared<std::unique_ptr<CausalLM>>(CausalLM::load(spec.model, load));
    const ModelConfig hybrid = plan_hybrid((*shared)->config(), *plan);
    out.push_back({plan->name + " (random)", "hybrid", [=] { return random_model_on_device(hybrid, load, seed); }});
    out.push_back({stem(spec.model), "teacher", [shared] {
                     if (!*shared) throw Error("bench: the teacher was already handed over");
                     return std::move(*shared);
                   }});
    return out;
  }
  const std::string model_path = spec.model;
  out.push_back({stem(spec.model), spec.teacher.empty() ? "model" : "hybrid",
                 [=] { return CausalLM::load(model_path, load); }});
  if (!spec.teacher.empty()) {
    const std::string teacher_path = spec.teacher;
    out.push_back({stem(spec.teacher), "teacher", [=] { return CausalLM::load(teacher_path, load); }});
  }
  return out;
}

}  // namespace hylo::bench
