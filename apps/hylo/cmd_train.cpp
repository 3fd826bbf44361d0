// hylo train --recipe R.yaml --out DIR [--resume] [--device cpu|cuda] [--max-steps N] [--stop-after N] [--quiet]
//            [--stage NAME ...] [--nproc N] [--no-zero1] [--bucket-mb MB]
// SIGINT or SIGTERM stops at the end of the current optimizer step with a checkpoint (a second one kills).
// Runs the recipe's stages (ILD, assemble, KD) in order; see src/hylo/train/trainer.h for what lands in DIR and
// docs/training.md for the recipe format. The recipe and every input path are checked before any work.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "command.h"
#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/train/distributed_data_parallel.h"
#include "hylo/train/distributed_launch.h"
#include "hylo/train/recipe.h"
#include "hylo/train/trainer.h"

namespace hylo::cli {
namespace {

struct TrainArgs {
  std::string recipe, out, device = "cpu";
  std::vector<std::string> stages;
  bool resume = false, quiet = false;
  int64_t max_steps = 0, stop_after = 0;
  int nproc = 1;
  bool no_zero1 = false;
  double bucket_mb = 25;
};

// Set by the first SIGINT/SIGTERM: the trainer checkpoints at the end of its step and returns. The handler then
// restores the default action, so a second signal ends the process at once.
std::atomic<bool> g_stop_requested{false};
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void request_stop(int signo) {
  g_stop_signal = signo;
  g_stop_requested.store(true);
  std::signal(signo, SIG_DFL);
}

// --nproc N > 1: this process only launches N ranks (this same command line without --nproc) and waits;
// see train/distributed_launch.h. A rank that dies ends the job, and the message names it.
int launch_ranks(const TrainArgs& a) {
  auto argv = train::own_command_line().value_or_throw();
  train::take_nproc_option(argv).value_or_throw();
  train::LaunchOptions lo;
  lo.nproc = a.nproc;
  train::LaunchReport report = train::launch_local_ranks(argv, lo).value_or_throw();
  if (report.first_failed_rank >= 0)
    std::fprintf(stderr, "error: hylo train --nproc %d: %s\n", a.nproc, report.message.c_str());
  else if (report.stopped_by_signal != 0)
    std::fprintf(stderr, "hylo train --nproc %d: every rank stopped at the same step with a checkpoint; continue with "
                 "--resume\n", a.nproc);
  return report.exit_code();
}

int run_train(const TrainArgs& a) {
  // Launched ranks have RANK set (by --nproc's launcher or torchrun) and no --nproc of their own.
  if (a.nproc > 1 && std::getenv("RANK") == nullptr) {
    train::load_recipe(a.recipe).value_or_throw();  // a bad recipe fails once, here, before any rank starts
    return launch_ranks(a);
  }
  auto recipe = train::load_recipe(a.recipe).value_or_throw();
  train::TrainOptions o;
  o.out = a.out;
  o.resume = a.resume;
  o.device = parse_device(a.device);
  train::DataParallelOptions dpo;
  dpo.zero1 = !a.no_zero1;
  dpo.bucket_bytes = static_cast<int64_t>(a.bucket_mb * (1 << 20));
  train::RankSetup rank = train::data_parallel_from_environment(o.device, dpo).value_or_throw();
  o.device = rank.device;
  o.hooks = rank.hooks.get();
  if (a.max_steps > 0) o.max_steps = a.max_steps;
  if (a.stop_after > 0) o.stop_after = a.stop_after;
  o.progress = !a.quiet;
  o.only_stages = a.stages;
  o.stop_requested = &g_stop_requested;
  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_stop);
  train::RunSummary summary;
  train::run_recipe(recipe, o, &summary).value_or_throw();
  if (rank.hooks && rank.hooks->rank() == 0) {
    // Issue 12 reports how much of the gradient all-reduce hid behind backward.
    train::GradSyncStats g = rank.hooks->grad_stats();
    std::fprintf(stderr,
                 "data parallel (%d ranks, %s, ZeRO-1 %s): %lld gradient buckets started during backward, %lld "
                 "after it; rank 0 waited %.3f s for all-reduces after backward (exposed communication)\n",
                 rank.hooks->world(), rank.hooks->group().backend_name().c_str(), a.no_zero1 ? "off" : "on",
                 static_cast<long long>(g.buckets_launched_in_backward),
                 static_cast<long long>(g.buckets_launched_in_finish), g.exposed_wait_seconds);
  }
  if (summary.stopped && g_stop_requested.load()) {
    const int signo = static_cast<int>(g_stop_signal);
    std::fprintf(stderr, "stopped by %s with a checkpoint; continue with --resume\n",
                 signo == SIGINT ? "SIGINT" : "SIGTERM");
    return 128 + signo;  // the shell's convention for "ended by this signal", so scripts see an unfinished run
  }
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
  app.add_option("--stage", a->stages,
                 "run only this stage (repeatable); the stages it takes models from must be done or named too. "
                 "Independent stages (the two Stage-I stages) can so run as separate processes side by side");
  app.add_option("--nproc", a->nproc, "data parallel: run N ranks on this host (Gloo on CPU, NCCL with one GPU each)")
      ->check(CLI::Range(1, 4096));
  app.add_flag("--no-zero1", a->no_zero1, "data parallel: every rank keeps the whole optimizer state (default: ZeRO-1)");
  app.add_option("--bucket-mb", a->bucket_mb, "data parallel: gradient all-reduce bucket size in MiB")
      ->check(CLI::Range(0.001, 4096.0))->capture_default_str();
  return [a] { return run_train(*a); };
}

HYLO_COMMAND(train, "train", "distil a hybrid from its teacher by a staged recipe (ILD, assemble, KD)", setup);

}  // namespace
}  // namespace hylo::cli
