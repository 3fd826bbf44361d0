// hylo perplexity MODEL TEXTFILE [--context N] [--json] [--per-token] [--dtype fp32|bf16] [--device cpu|cuda]
//                 [engine flags (engine_args.h)] [--reference]
// Runs on the inference engine: every window is one request with prompt log-probabilities, all queued at once
// (src/hylo/eval/perplexity_engine.h); --reference runs the windows one by one as full forwards instead.
// Tokenizes the whole file with the model's tokenizer (special tokens as the tokenizer adds them, e.g. BOS),
// cuts the ids into non-overlapping windows of N tokens, and scores every token of each window except the
// window's first (definition in src/hylo/eval/perplexity.h). JSON fields: model, file, context, tokens
// (ids in the file), predicted (tokens scored), windows, nll_sum, nll_mean (nats), perplexity, and with
// --per-token `nll`: the NLL of every predicted token in order; on a GPU `peak_gpu_bytes`, the CUDA caching
// allocator's peak from after loading (weights, cache pools, activations). On a GPU the engine's pools are sized to
// exactly what the windows in flight need unless --memory-bytes / --gpu-memory say otherwise, so that peak is
// what scoring costs (--max-sequences 1 scores one window at a time).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "engine_args.h"
#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/core/result.h"
#include "hylo/eval/perplexity.h"
#include "hylo/eval/perplexity_engine.h"
#include "hylo/infer/bench/device_memory.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct PerplexityArgs {
  std::string model, file;
  int64_t context = 2048;
  bool json = false, per_token = false;
  std::string dtype = "fp32", device = "cpu";
  bool reference = false;
  EngineArgs engine;
};

int run_perplexity(const PerplexityArgs& a) {
  LoadOptions opts;
  opts.dtype = parse_scalar_type(a.dtype);
  opts.device = parse_device(a.device);
  auto text = read_text_file(a.file);
  if (!text.ok()) throw Error(text.error());
  auto model = CausalLM::load(a.model, opts);
  auto tokenizer = tok::Tokenizer::from_path(model->source()).value_or_throw();
  std::vector<int32_t> ids32 = tokenizer.encode(*text, /*add_special_tokens=*/true);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  for (int64_t id : ids)
    if (id < 0 || id >= model->config().vocab_size)
      throw Error(a.file + ": the tokenizer produced id " + std::to_string(id) + ", outside the model's vocabulary (" +
                  std::to_string(model->config().vocab_size) + ")");
  const int64_t windows = (static_cast<int64_t>(ids.size()) + a.context - 1) / a.context;
  ProgressBar bar("perplexity", windows, "win");
  eval::PerplexityOptions po;
  po.context = a.context;
  po.per_token = a.per_token;
  const auto progress = [&](int64_t done, int64_t) { bar.set(done); };
  eval::PerplexityResult r;
  bench::reset_peak_memory(opts.device);  // from here the peak counts the weights, pools and activations
  if (a.reference) {
    r = eval::perplexity(*model, ids, po, progress);
  } else {
    const int64_t window = std::min<int64_t>(a.context, static_cast<int64_t>(ids.size()));
    const int64_t sequences = std::clamp<int64_t>(windows, 1, 8);
    engine::Engine eng(*model, engine_options(a.engine, *model, sequences, /*default_snapshots=*/0, window,
                                              /*exact_on_gpu=*/true));
    r = eval::perplexity(eng, ids, po, progress);
  }
  bar.finish();
  const double peak = bench::peak_memory_bytes(opts.device);  // NaN on the CPU
  if (a.json) {
    nlohmann::json j;
    j["model"] = a.model;
    j["file"] = a.file;
    j["context"] = a.context;
    j["tokens"] = r.tokens;
    j["predicted"] = r.predicted;
    j["windows"] = r.windows;
    j["nll_sum"] = r.nll_sum;
    j["nll_mean"] = r.nll_mean;
    j["perplexity"] = r.perplexity;
    if (a.per_token) j["nll"] = r.nll;
    if (!std::isnan(peak)) j["peak_gpu_bytes"] = peak;
    std::cout << j.dump() << "\n";
  } else {
    std::printf("tokens %lld, predicted %lld in %lld window(s) of %lld\nnll_mean %.6f nats/token\nperplexity %.4f\n",
                static_cast<long long>(r.tokens), static_cast<long long>(r.predicted),
                static_cast<long long>(r.windows), static_cast<long long>(a.context), r.nll_mean, r.perplexity);
    if (!std::isnan(peak))
      std::printf("peak GPU memory %.3f GiB (weights, cache pools, activations)\n", peak / double(int64_t{1} << 30));
    if (a.per_token)
      for (double v : r.nll) std::printf("%.9g\n", v);
  }
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  app.add_option("model", a->model, "HF model directory or GGUF file")->required();
  app.add_option("textfile", a->file, "UTF-8 text file to score")->required();
  app.add_option("--context", a->context, "window length N in tokens (non-overlapping windows)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  app.add_flag("--json", a->json, "print one JSON object");
  app.add_flag("--per-token", a->per_token, "also report the NLL of every predicted token");
  app.add_option("--dtype", a->dtype, "model dtype: fp32 or bf16")->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  app.add_flag("--reference", a->reference, "score the windows one by one with full forwards instead of the engine");
  add_engine_options(app, a->engine);
  return [a] { return run_perplexity(*a); };
}

}  // namespace

HYLO_COMMAND(perplexity, "perplexity", "perplexity of a model on a text file (non-overlapping windows)", setup);

}  // namespace hylo::cli
