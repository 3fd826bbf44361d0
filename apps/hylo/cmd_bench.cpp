// hylo bench [MODEL] [--teacher T] [--random-config CONFIG.json] [--plan PLAN.yaml]
//            --contexts 4K,8K,128K,1M --decode-tokens N [--batch 1,8,64,256 [--batch-prompt 4K]]
//            [--teacher-contexts 8K,128K|none] [--teacher-batch 1,64|none]
//            [--dtype bf16|fp32] [--device cuda|cpu] [--seed S] [--json F] [--svg F] [--markdown F] [--quiet]
//            [engine flags (engine_args.h)]
// Speed and memory on the inference engine, a hybrid and its Transformer teacher in the same run (what is measured:
// src/hylo/infer/bench/bench.h; which models: bench_models.h). Prints a markdown report on stdout; --json and --svg
// write the machine-readable results and the TPOT / memory chart. Progress goes to stderr. On the CPU the pools'
// budget is --memory-bytes (default 4 GiB); on CUDA --gpu-memory (default 0.9 of the free memory).
#include <cstdio>
#include <optional>
#include <fstream>
#include <iostream>

#include "command.h"
#include "engine_args.h"
#include "hylo/core/file_util.h"
#include "hylo/core/result.h"
#include "hylo/infer/bench/bench.h"
#include "hylo/infer/bench/bench_models.h"
#include "hylo/infer/bench/bench_report.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct BenchArgs {
  bench::BenchModelSpec models;
  std::string contexts, batches, batch_prompt = "4K";
  std::optional<std::string> teacher_contexts, teacher_batches;
  int64_t decode_tokens = 64;
  std::string dtype, device = "cpu";
  uint64_t seed = 0;
  std::string json_path, svg_path, markdown_path;
  bool quiet = false, no_warmup = false;
  EngineArgs engine;
};

// The command line as run, for the report (the flags that were given, in a fixed order).
std::string command_line(const BenchArgs& a, const std::string& dtype) {
  std::string c = "hylo bench";
  auto add = [&](const std::string& flag, const std::string& value) {
    if (!value.empty()) c += " " + flag + (flag.empty() ? "" : " ") + value;
  };
  add("", a.models.model);
  add("--teacher", a.models.teacher);
  add("--random-config", a.models.random_config);
  add("--plan", a.models.plan);
  add("--contexts", a.contexts);
  add("--decode-tokens", std::to_string(a.decode_tokens));
  add("--batch", a.batches);
  add("--teacher-contexts", a.teacher_contexts.value_or(""));
  add("--teacher-batch", a.teacher_batches.value_or(""));
  if (!a.batches.empty()) add("--batch-prompt", a.batch_prompt);
  add("--dtype", dtype);
  add("--device", a.device);
  if (a.seed) add("--seed", std::to_string(a.seed));
  const EngineArgs d;
  if (a.engine.page_size != d.page_size) add("--page-size", std::to_string(a.engine.page_size));
  add("--gpu-memory", a.engine.gpu_memory);
  add("--memory-bytes", a.engine.memory_bytes);
  if (a.engine.max_step_tokens != d.max_step_tokens) add("--max-step-tokens", std::to_string(a.engine.max_step_tokens));
  if (a.engine.prefill_chunk != d.prefill_chunk) add("--prefill-chunk", std::to_string(a.engine.prefill_chunk));
  if (a.engine.no_cuda_graphs) c += " --no-cuda-graphs";
  if (a.no_warmup) c += " --no-warmup";
  add("--json", a.json_path);
  add("--svg", a.svg_path);
  return c;
}

int run_bench_command(const BenchArgs& a) {
  const at::Device device = parse_device(a.device);
  const std::string dtype = !a.dtype.empty() ? a.dtype : device.is_cuda() ? "bf16" : "fp32";
  bench::BenchModelSpec spec = a.models;
  spec.load.device = device;
  spec.load.dtype = parse_scalar_type(dtype);
  if (spec.load.dtype != at::kFloat && spec.load.dtype != at::kBFloat16)
    throw Error("bench: --dtype must be fp32 or bf16, got " + dtype);
  spec.seed = a.seed;

  bench::BenchOptions o;
  if (!a.contexts.empty()) o.contexts = bench::parse_count_list(a.contexts, "--contexts");
  if (!a.batches.empty()) o.batches = bench::parse_count_list(a.batches, "--batch");
  o.batch_prompt_tokens = bench::parse_count_list(a.batch_prompt, "--batch-prompt").at(0);
  // "none": the teacher skips that sweep (its memory figures are still reported).
  auto teacher_list = [](const std::optional<std::string>& text, const std::string& option) {
    std::optional<std::vector<int64_t>> out;
    if (text) out = *text == "none" ? std::vector<int64_t>{} : bench::parse_count_list(*text, option);
    return out;
  };
  o.teacher_contexts = teacher_list(a.teacher_contexts, "--teacher-contexts");
  o.teacher_batches = teacher_list(a.teacher_batches, "--teacher-batch");
  o.decode_tokens = a.decode_tokens;
  o.seed = a.seed;
  o.progress = !a.quiet;
  o.warmup = !a.no_warmup;
  o.engine = engine_options_from_flags(a.engine, device.is_cuda(), /*default_sequences=*/1, /*default_snapshots=*/0);
  if (!device.is_cuda() && o.engine.memory_bytes == 0) o.engine.memory_bytes = int64_t{4} << 30;

  const std::string command = command_line(a, dtype);
  // The files are rewritten after every point, so a run stopped by a time limit keeps what it measured.
  auto write_files = [&](bench::BenchReport report, bool final) {
    report.command = command;
    if (!a.markdown_path.empty()) write_file_atomic(a.markdown_path, bench::to_markdown(report)).value_or_throw();
    if (!a.json_path.empty()) write_file_atomic(a.json_path, bench::to_json(report).dump(2) + "\n").value_or_throw();
    if (!a.svg_path.empty()) {
      const Status s = bench::write_svg_file(a.svg_path, report);
      if (!s.ok() && final) std::fprintf(stderr, "note: no plot written: %s\n", s.error().c_str());
    }
  };
  o.on_update = [&](const bench::BenchReport& so_far) { write_files(so_far, /*final=*/false); };

  const std::vector<bench::BenchModelSource> sources = bench::bench_model_sources(spec);
  bench::BenchReport report = bench::run_bench(sources, o);
  report.command = command;
  const std::string markdown = bench::to_markdown(report);
  std::fwrite(markdown.data(), 1, markdown.size(), stdout);
  std::fflush(stdout);
  write_files(report, /*final=*/true);
  return 0;
}

CommandRun setup_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  app.add_option("model", a->models.model, "checkpoint to benchmark (HF directory, GGUF, hylo checkpoint)");
  app.add_option("--teacher", a->models.teacher, "the teacher checkpoint, benchmarked in the same run");
  app.add_option("--random-config", a->models.random_config,
                 "HF config.json of a Transformer: benchmark it with random weights (the teacher)");
  app.add_option("--plan", a->models.plan, "layer plan YAML: also benchmark the hybrid it makes of the Transformer "
                                           "(random weights)");
  app.add_option("--contexts", a->contexts, "prompt lengths for batch 1, e.g. 4K,8K,128K,1M,2M");
  app.add_option("--decode-tokens", a->decode_tokens, "tokens decoded per prompt (and timed steps per batch)")
      ->capture_default_str();
  app.add_option("--batch", a->batches, "concurrent sequences, e.g. 1,8,64,256");
  app.add_option("--teacher-contexts", a->teacher_contexts, "the teacher's contexts instead (\"none\": skip)");
  app.add_option("--teacher-batch", a->teacher_batches, "the teacher's batch sizes instead (\"none\": skip)");
  app.add_option("--batch-prompt", a->batch_prompt, "prompt length of each concurrent sequence")->capture_default_str();
  app.add_option("--dtype", a->dtype, "fp32 or bf16 (default: bf16 on CUDA, fp32 on the CPU)");
  app.add_option("--device", a->device, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--seed", a->seed, "seed of the random weights and prompts")->capture_default_str();
  app.add_option("--json", a->json_path, "write the results as JSON");
  app.add_option("--svg", a->svg_path, "write the TPOT and memory chart");
  app.add_option("--markdown", a->markdown_path, "also write the markdown report to a file");
  app.add_flag("--quiet", a->quiet, "no progress on stderr");
  app.add_flag("--no-warmup", a->no_warmup,
               "time each model's first point cold (default: an untimed warm-up request runs first)");
  add_engine_options(app, a->engine);
  return [a] { return run_bench_command(*a); };
}

}  // namespace

HYLO_COMMAND(bench, "bench", "prefill time, decode TPOT, memory and batch throughput on the engine (hybrid vs teacher)",
             setup_bench);

}  // namespace hylo::cli
