// hylo upcycle TEACHER --plan PLAN.yaml --out DIR [--calibration FILE] [--calibration-tokens N] [--json REPORT.json]
//              [--dtype fp32|bf16] [--seed S] [--stage1 mla|linear] [--smart K [--smart-plan FILE]]
//              [--threads N] [--no-progress]
// hylo upcycle --assemble --from-mla DIR --from-linear DIR --plan PLAN.yaml --out DIR [--json REPORT.json] [--dtype D]
//   (options of the teacher path -- TEACHER, --calibration*, --seed, --teacher-dtype, --stage1, --smart* -- are errors
//   here; --stage1 and --smart exclude each other)
// Turns a Transformer (HF directory or GGUF) into the hybrid the layer plan describes (src/hylo/upcycle/upcycler.h),
// writes it as a hylo checkpoint directory (config.json + model.safetensors + tokenizer, committed atomically),
// and prints the report: per layer the mixer, ranks, reconstruction errors, parameters, KV bytes per token before
// and after, the KV memory at a few context lengths, and the teacher -> hybrid KL on calibration text (--calibration;
// without it the KL is skipped and the report says so).
// --stage1 mla|linear makes the pure-MLA or pure-linear Stage-I model of the plan; --smart K picks the K MLA layers
// by SMART (HYLO.md 7.1) from Stage-I models of this teacher; --assemble builds the hybrid
// from two Stage-I checkpoints (HYLO.md 3.4).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "hylo/config/gguf_config.h"
#include "hylo/config/hf_config.h"
#include "hylo/config/layer_plan.h"
#include "hylo/core/file_util.h"
#include "hylo/io/gguf.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/checkpoint.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/core/progress.h"
#include "hylo/upcycle/smart_select.h"
#include "hylo/upcycle/upcycler.h"

namespace hylo::cli {
namespace {

struct UpcycleArgs {
  std::string teacher, plan, out, calibration, json, stage1, from_mla, from_linear, smart_plan;
  int64_t smart = 0;
  int64_t calibration_tokens = 256;
  std::string dtype = "fp32";
  std::string teacher_dtype = "fp32";
  uint64_t seed = 0;
  int threads = 0;
  bool assemble = false, no_progress = false;
};

// The teacher's config from its metadata alone, so a plan that does not fit, or a teacher that is not a
// Transformer, fails before the weights load. CausalLM::load reads any model directory (load_model_dir_config),
// hybrids included; upcycling one is refused here: its non-attention layers have no attention to start from.
Result<ModelConfig> teacher_config(const std::filesystem::path& p) {
  std::error_code ec;
  ModelConfig config;
  if (std::filesystem::is_directory(p, ec)) {
    if (std::filesystem::exists(p / "hybrid_config.json", ec))
      return make_error(p.string() + ": holds hybrid_config.json (an AMD hybrid checkpoint); the teacher must be a "
                        "Transformer (every layer attention)");
    HYLO_TRY(std::string text, read_text_file(p / "config.json"));
    const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_object() && json.contains("hybrid"))
      return make_error((p / "config.json").string() + ": has a 'hybrid' block (a hylo checkpoint); the teacher must "
                        "be a Transformer (every layer attention)");
    HYLO_TRY(config, load_hf_config(p));
  } else {
    HYLO_TRY(auto gguf, io::GgufFile::open(p));
    HYLO_TRY(config, model_config_from_gguf(gguf));
  }
  for (int64_t i = 0; i < config.num_layers(); ++i)
    if (config.layers[i].mixer != MixerKind::kGqa)
      return make_error(p.string() + ": layer " + std::to_string(i) +
                        " is not attention; the teacher must be a Transformer (every layer attention)");
  return config;
}

// SMART (HYLO.md 7.1): Stage-I models of the plan from this teacher, every layer scored by the KL reduction of
// swapping it alone to MLA, the top k become the MLA layers. Prints the scores, writes the plan if asked.
LayerPlan select_smart_plan(CausalLM& teacher, const LayerPlan& plan, const UpcycleOptions& opts, const UpcycleArgs& a) {
  if (opts.calibration_tokens < 2) throw Error("upcycle --smart needs calibration text (--calibration-tokens >= 2)");
  UpcycleOptions so = opts;
  so.calibration_tokens = 0;
  so.progress = false;
  auto mla = upcycle(teacher, stage1_plan(plan, false), so).value_or_throw().model;
  auto lin = upcycle(teacher, stage1_plan(plan, true), so).value_or_throw().model;
  if (opts.calibration_text.empty())
    throw Error("upcycle --smart scores layers by KL on calibration text: pass --calibration FILE (any text file)");
  const auto text = opts.calibration_text;
  at::Tensor ids = calibration_ids(text, teacher.source(), opts.calibration_tokens).value_or_throw();
  const int64_t L = teacher.config().num_layers();
  SmartResult sr = [&] {
    std::unique_ptr<ProgressBar> bar;
    if (opts.progress) bar = std::make_unique<ProgressBar>("SMART scoring", L, "layer");
    auto res = smart_select(teacher, *mla, *lin, ids, a.smart, [&](int64_t d, int64_t) {
      if (bar) bar->set(d);
    });
    if (bar) bar->finish();
    return res;
  }();
  std::printf("SMART: KL(teacher || pure linear) = %.4f nats/token; gain of swapping one layer to MLA:\n", sr.kl_linear);
  for (const auto& s : sr.scores) std::printf("  layer %3lld  KL %.4f  gain %+.4f\n", (long long)s.layer, s.kl, s.gain);
  LayerPlan out = plan;
  out.selection = MlaSelection::kExplicit;
  out.mla_layers = sr.selected;
  out.name = (plan.name.empty() ? std::string("plan") : plan.name) + "-smart" + std::to_string(a.smart);
  std::string list;
  for (int64_t i : sr.selected) list += (list.empty() ? "" : ", ") + std::to_string(i);
  std::printf("SMART selected MLA layers: [%s]\n", list.c_str());
  if (!a.smart_plan.empty()) {
    const std::string yaml = layer_plan_to_yaml(
        out, {"SMART selection (HYLO.md 7.1) from " + plan.source + " on " + teacher.source().string(),
              "top " + std::to_string(a.smart) + " layers by KL reduction over " +
                  std::to_string(opts.calibration_tokens) + " tokens of " + text.string()});
    write_file_atomic(a.smart_plan, yaml).value_or_throw();
  }
  out.source = a.smart_plan.empty() ? plan.source + " (SMART)" : a.smart_plan;
  return out;
}

int run_upcycle(const UpcycleArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  if (a.threads > 0) at::set_num_threads(a.threads);
  LayerPlan plan = load_layer_plan(a.plan).value_or_throw();
  if (a.assemble) {
    if (a.from_mla.empty() || a.from_linear.empty())
      throw Error("upcycle --assemble needs --from-mla DIR and --from-linear DIR (the two Stage-I checkpoints)");
    LoadOptions lo;
    lo.dtype = parse_scalar_type(a.dtype);
    auto mla = CausalLM::load(a.from_mla, lo);
    auto lin = CausalLM::load(a.from_linear, lo);
    auto hybrid = assemble_hybrid(*mla, *lin, plan).value_or_throw();
    save_checkpoint(*hybrid, a.out, a.from_linear).value_or_throw();
    const int64_t params = parameter_count(hybrid->config()), kv = kv_bytes_per_token(hybrid->config());
    std::printf("assembled %s from %s (MLA layers) and %s (linear layers): %lld parameters, KV %lld B/token\n",
                a.out.c_str(), a.from_mla.c_str(), a.from_linear.c_str(), static_cast<long long>(params),
                static_cast<long long>(kv));
    if (!a.json.empty()) {
      nlohmann::json j;
      j["checkpoint"] = a.out;
      j["assembled_from"] = {{"mla", a.from_mla}, {"linear", a.from_linear}};
      j["plan"] = plan.source;
      j["parameters"] = params;
      j["kv_bytes_per_token"] = kv;
      j["seconds"]["total"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      write_file_atomic(a.json, j.dump(2) + "\n").value_or_throw();
    }
    return 0;
  }
  if (a.teacher.empty()) throw Error("upcycle: TEACHER (an HF model directory or a GGUF file) is required");
  if (a.stage1 == "mla") plan = stage1_plan(plan, /*pure_linear=*/false);
  else if (a.stage1 == "linear") plan = stage1_plan(plan, /*pure_linear=*/true);
  else if (!a.stage1.empty()) throw Error("upcycle --stage1: expected mla or linear, got '" + a.stage1 + "'");
  // Validate before any work: the plan against the teacher's config (no weights loaded yet).
  const ModelConfig tconf = teacher_config(a.teacher).value_or_throw();
  (void)apply_plan(tconf, plan).value_or_throw();

  // fp32 by default: the SVDs run in fp64 from it, the KL in fp32. A bf16 checkpoint loses nothing when loaded
  // as bf16 (the SVD still upcasts to fp64), which halves the teacher's memory for large models.
  LoadOptions teacher_load;
  teacher_load.dtype = parse_scalar_type(a.teacher_dtype);
  auto teacher = CausalLM::load(a.teacher, teacher_load);
  UpcycleOptions opts;
  opts.calibration_text = a.calibration;
  opts.calibration_tokens = a.calibration_tokens;
  opts.dtype = parse_scalar_type(a.dtype);
  opts.seed = a.seed;
  opts.progress = !a.no_progress;
  if (a.smart > 0) plan = select_smart_plan(*teacher, plan, opts, a);
  UpcycleResult r = upcycle(*teacher, plan, opts).value_or_throw();
  const std::filesystem::path tokenizer_source = teacher->source();
  teacher.reset();  // not needed any more: lowers the peak while the checkpoint is written
  save_checkpoint(*r.model, a.out, tokenizer_source).value_or_throw();
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s", r.report.table().c_str());
  std::printf("wrote %s in %.1f s total\n", a.out.c_str(), total);
  if (!a.json.empty()) {
    nlohmann::json j = r.report.to_json();
    j["checkpoint"] = a.out;
    j["seconds"]["total"] = total;
    write_file_atomic(a.json, j.dump(2) + "\n").value_or_throw();
  }
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<UpcycleArgs>();
  CLI::Option* teacher = app.add_option("teacher", a->teacher, "the Transformer: HF model directory or GGUF file");
  app.add_option("--plan", a->plan, "layer plan YAML (recipes/plans/*.yaml)")->required();
  app.add_option("--out", a->out, "output checkpoint directory (replaced atomically)")->required();
  CLI::Option* calibration =
      app.add_option("--calibration", a->calibration, "text for the KL after init (without it the KL is skipped)");
  CLI::Option* calibration_tokens =
      app.add_option("--calibration-tokens", a->calibration_tokens, "tokens of calibration text (0: skip the KL)")
          ->capture_default_str()
          ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  app.add_option("--json", a->json, "also write the report as JSON to this file");
  app.add_option("--dtype", a->dtype, "dtype of the hybrid's parameters (fp32, bf16, ...)")->capture_default_str();
  CLI::Option* teacher_dtype =
      app.add_option("--teacher-dtype", a->teacher_dtype, "dtype the teacher is loaded in (bf16 halves its memory)")
          ->capture_default_str();
  CLI::Option* seed =
      app.add_option("--seed", a->seed, "seed of the parameters without a teacher counterpart")->capture_default_str();
  CLI::Option* stage1 =
      app.add_option("--stage1", a->stage1, "make the Stage-I model of the plan instead: mla (every layer MLA) or linear");
  CLI::Option* assemble =
      app.add_flag("--assemble", a->assemble, "assemble the hybrid from two Stage-I checkpoints (--from-mla, --from-linear)");
  app.add_option("--from-mla", a->from_mla, "Stage-I pure-MLA checkpoint (with --assemble)")->needs(assemble);
  app.add_option("--from-linear", a->from_linear, "Stage-I pure-linear checkpoint (with --assemble)")->needs(assemble);
  CLI::Option* smart = app.add_option(
      "--smart", a->smart, "SMART selection: choose this many MLA layers by KL reduction (overrides the plan's layers)");
  CLI::Option* smart_plan =
      app.add_option("--smart-plan", a->smart_plan, "write the SMART-selected plan to this YAML file")->needs(smart);
  app.add_flag("--no-progress", a->no_progress, "no progress bar");
  app.add_option("--threads", a->threads,
                 "intra-op CPU threads (default: ATen's; 1 is fastest on a machine shared with other jobs)");
  // Assembling reads two finished Stage-I checkpoints: nothing of the teacher path applies, and an option given
  // for it is an error rather than silently ignored. Stage-I models are pure by definition: no SMART selection.
  for (CLI::Option* o : {teacher, calibration, calibration_tokens, teacher_dtype, seed, stage1, smart, smart_plan})
    assemble->excludes(o);
  stage1->excludes(smart);
  return [a]() { return run_upcycle(*a); };
}

HYLO_COMMAND(upcycle, "upcycle", "turn a Transformer into a MLA + GDN/Mamba2 hybrid by a layer plan", setup);

}  // namespace
}  // namespace hylo::cli
