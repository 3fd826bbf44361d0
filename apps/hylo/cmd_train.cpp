// hylo train --recipe R.yaml --out DIR [--resume] [--device cpu|cuda] [--max-steps N] [--stop-after N] [--quiet]
// Runs the recipe's stages (ILD, assemble, KD) in order; see src/hylo/train/trainer.h for what lands in DIR and
// docs/training.md for the recipe format. The recipe and every input path are checked before any work.
#include <cstdio>

#include "command.h"
#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/train/recipe.h"
#include "hylo/train/trainer.h"

namespace hylo::cli {
namespace {

struct TrainArgs {
  std::string recipe, out, device = "cpu";
  bool resume = false, quiet = false;
  int64_t max_steps = 0, stop_after = 0;
};

int run_train(const TrainArgs& a) {
  auto recipe = train::load_recipe(a.recipe).value_or_throw();
  train::TrainOptions o;
  o.out = a.out;
  o.resume = a.resume;
  o.device = parse_device(a.device);
  if (a.max_steps > 0) o.max_steps = a.max_steps;
  if (a.stop_after > 0) o.stop_after = a.stop_after;
  o.progress = !a.quiet;
  train::RunSummary summary;
  train::run_recipe(recipe, o, &summary).value_or_throw();
  if (summary.stopped)
    std::fprintf(stderr, "stopped after --stop-after %lld steps; continue with --resume\n",
                 static_cast<long long>(a.stop_after));
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  app.add_option("--recipe", a->recipe, "training recipe (YAML, see docs/training.md)")->required();
  app.add_option("--out", a->out, "run directory: one folder per stage with checkpoints, metrics and plots")
      ->required();
  app.add_flag("--resume", a->resume, "continue the run in --out from its last checkpoint");
  app.add_option("--device", a->device, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--max-steps", a->max_steps, "smoke runs: each training stage runs (and schedules) at most N steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--stop-after", a->stop_after,
                 "stop after N steps of the current stage with a checkpoint, as if killed (resume with --resume)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_flag("--quiet", a->quiet, "no progress bar");
  return [a] { return run_train(*a); };
}

HYLO_COMMAND(train, "train", "distil a hybrid from its teacher by a staged recipe (ILD, assemble, KD)", setup);

}  // namespace
}  // namespace hylo::cli
