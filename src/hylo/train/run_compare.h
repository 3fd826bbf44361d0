// Several training runs of the same stage side by side (issue 12: N GPUs against one at the same global batch):
// each run's metrics.jsonl read back, a summary per run, how far each run's losses stray from the first run's at the
// steps both logged, and one chart with every run's curves.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::train {

struct RunCurves {
  std::string label;
  std::vector<double> step, loss;            // training loss per logged window
  std::vector<double> eval_step, heldout;    // held-out loss at each evaluation
  std::vector<double> tokens_per_s;          // as logged (running average since the run's start or resume)
  double peak_gpu_bytes = 0;                 // largest logged value; 0 when none was logged (CPU)
};

// The curves in the text of a metrics.jsonl (possibly empty). Lines cut by a kill are skipped.
RunCurves parse_run_curves(const std::string& label, const std::string& metrics_text);
// Reads a stage's metrics.jsonl (or a stage directory holding one); an error when it holds no loss at all.
Result<RunCurves> read_run_curves(const std::string& label, const std::filesystem::path& metrics_or_dir);

struct RunComparison {
  std::string label;
  int64_t last_step = 0;
  double last_loss = 0, last_heldout = 0;    // NaN when the run logged none
  double tokens_per_s = 0;                   // the last logged value
  double peak_gpu_bytes = 0;
  // Against the first run, at the steps both logged: the largest |difference| of the training and held-out
  // losses, and of the training loss relative to the first run's. NaN for the first run or without common steps.
  double max_loss_diff = 0, max_loss_rel_diff = 0, max_heldout_diff = 0;
  int64_t common_steps = 0;
};

std::vector<RunComparison> compare_runs(const std::vector<RunCurves>& runs);
std::string comparison_markdown(const std::vector<RunComparison>& rows);
// Every run's training loss (lines) and held-out loss (markers) against the optimizer step, log y.
Status write_comparison_svg(const std::vector<RunCurves>& runs, const std::filesystem::path& svg,
                            const std::string& title);

}  // namespace hylo::train
