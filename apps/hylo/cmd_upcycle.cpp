// hylo upcycle TEACHER --plan PLAN.yaml --out DIR [--calibration FILE] [--calibration-tokens N] [--json REPORT.json]
//              [--dtype fp32|bf16] [--seed S] [--stage1 mla|linear] [--threads N] [--no-progress]
// hylo upcycle --assemble --from-mla DIR --from-linear DIR --plan PLAN.yaml --out DIR
// Turns a Transformer (HF directory or GGUF) into the hybrid the layer plan describes (src/hylo/upcycle/upcycler.h),
// writes it as a hylo checkpoint directory (config.json + model.safetensors + tokenizer, committed atomically),
// and prints the report: per layer the mixer, ranks, reconstruction errors, parameters, KV bytes per token before
// and after, the KV memory at a few context lengths, and the teacher -> hybrid KL on calibration text.
// --stage1 mla|linear makes the pure-MLA or pure-linear Stage-I model of the plan; --assemble builds the hybrid
// from two Stage-I checkpoints (HYLO.md 3.4).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "command.h"
#include "hylo/config/gguf_config.h"
#include "hylo/config/hf_config.h"
#include "hylo/config/layer_plan.h"
#include "hylo/core/file_util.h"
#include "hylo/io/gguf.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/checkpoint.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/upcycle/upcycler.h"

namespace hylo::cli {
namespace {

struct UpcycleArgs {
  std::string teacher, plan, out, calibration, json, stage1, from_mla, from_linear;
  int64_t calibration_tokens = 256;
  std::string dtype = "fp32";
  uint64_t seed = 0;
  int threads = 0;
  bool assemble = false, no_progress = false;
};

// The teacher's config from its metadata alone, so a plan that does not fit fails before the weights load.
Result<ModelConfig> teacher_config(const std::filesystem::path& p) {
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) return load_hf_config(p);
  HYLO_TRY(auto gguf, io::GgufFile::open(p));
  return model_config_from_gguf(gguf);
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
    save_checkpoint(*hybrid, a.out, checkpoint_tokenizer_path(a.from_linear).value_or_throw()).value_or_throw();
    std::printf("assembled %s from %s (MLA layers) and %s (linear layers): %lld parameters, KV %lld B/token\n",
                a.out.c_str(), a.from_mla.c_str(), a.from_linear.c_str(),
                static_cast<long long>(parameter_count(hybrid->config())),
                static_cast<long long>(kv_bytes_per_token(hybrid->config())));
    return 0;
  }
  if (a.teacher.empty()) throw Error("upcycle: TEACHER (an HF model directory or a GGUF file) is required");
  if (a.stage1 == "mla") plan = stage1_plan(plan, /*pure_linear=*/false);
  else if (a.stage1 == "linear") plan = stage1_plan(plan, /*pure_linear=*/true);
  else if (!a.stage1.empty()) throw Error("upcycle --stage1: expected mla or linear, got '" + a.stage1 + "'");
  // Validate before any work: the plan against the teacher's config (no weights loaded yet).
  const ModelConfig tconf = teacher_config(a.teacher).value_or_throw();
  (void)apply_plan(tconf, plan).value_or_throw();

  auto teacher = CausalLM::load(a.teacher);  // fp32: the SVDs run in fp64 from it, the KL in fp32
  UpcycleOptions opts;
  opts.calibration_text = a.calibration;
  opts.calibration_tokens = a.calibration_tokens;
  opts.dtype = parse_scalar_type(a.dtype);
  opts.seed = a.seed;
  opts.progress = !a.no_progress;
  UpcycleResult r = upcycle(*teacher, plan, opts).value_or_throw();
  save_checkpoint(*r.model, a.out, teacher->source()).value_or_throw();
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
  app.add_option("teacher", a->teacher, "the Transformer: HF model directory or GGUF file");
  app.add_option("--plan", a->plan, "layer plan YAML (recipes/plans/*.yaml)")->required();
  app.add_option("--out", a->out, "output checkpoint directory (replaced atomically)")->required();
  app.add_option("--calibration", a->calibration, "text for the KL after init (default $HYLO_DATA/text/moby-dick.txt)");
  app.add_option("--calibration-tokens", a->calibration_tokens, "tokens of calibration text (0: skip the KL)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  app.add_option("--json", a->json, "also write the report as JSON to this file");
  app.add_option("--dtype", a->dtype, "dtype of the hybrid's parameters (fp32, bf16, ...)")->capture_default_str();
  app.add_option("--seed", a->seed, "seed of the parameters without a teacher counterpart")->capture_default_str();
  app.add_option("--stage1", a->stage1, "make the Stage-I model of the plan instead: mla (every layer MLA) or linear");
  app.add_flag("--assemble", a->assemble, "assemble the hybrid from two Stage-I checkpoints (--from-mla, --from-linear)");
  app.add_option("--from-mla", a->from_mla, "Stage-I pure-MLA checkpoint (with --assemble)");
  app.add_option("--from-linear", a->from_linear, "Stage-I pure-linear checkpoint (with --assemble)");
  app.add_flag("--no-progress", a->no_progress, "no progress bar");
  app.add_option("--threads", a->threads,
                 "intra-op CPU threads (default: ATen's; 1 is fastest on a machine shared with other jobs)");
  return [a]() { return run_upcycle(*a); };
}

HYLO_COMMAND(upcycle, "upcycle", "turn a Transformer into a MLA + GDN/Mamba2 hybrid by a layer plan", setup);

}  // namespace
}  // namespace hylo::cli
