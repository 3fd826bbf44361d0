// hylo compare-runs LABEL=STAGE_DIR_OR_METRICS ... [--svg F] [--markdown F] [--title T]
// Training runs of the same stage side by side (e.g. N GPUs against one at the same global batch, or a recipe
// change): per run the last training and held-out loss, tokens/s and rank 0's peak GPU memory, and how far each
// run's losses stray from the first run's at the steps both logged; --svg draws every run's curves in one chart.
#include <cstdio>
#include <fstream>

#include "command.h"
#include "hylo/core/file_util.h"
#include "hylo/train/run_compare.h"

namespace hylo::cli {
namespace {

CommandRun setup(CLI::App& app) {
  struct Opts {
    std::vector<std::string> runs;
    std::string svg, markdown, title = "training runs compared";
  };
  auto o = std::make_shared<Opts>();
  app.add_option("runs", o->runs, "LABEL=PATH: a stage directory of `hylo train --out` or its metrics.jsonl; the "
                                  "first run is the baseline")
      ->required();
  app.add_option("--svg", o->svg, "write the loss curves of every run in one chart");
  app.add_option("--markdown", o->markdown, "also write the table to a file");
  app.add_option("--title", o->title, "the chart's title")->capture_default_str();
  return [o]() -> int {
    std::vector<train::RunCurves> curves;
    for (const std::string& spec : o->runs) {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw Error("compare-runs: expected LABEL=PATH, got '" + spec + "'");
      curves.push_back(train::read_run_curves(spec.substr(0, eq), spec.substr(eq + 1)).value_or_throw());
    }
    const std::string md = train::comparison_markdown(train::compare_runs(curves));
    std::fputs(md.c_str(), stdout);
    if (!o->markdown.empty()) write_file_atomic(o->markdown, md).value_or_throw();
    if (!o->svg.empty()) train::write_comparison_svg(curves, o->svg, o->title).value_or_throw();
    return 0;
  };
}

}  // namespace

HYLO_COMMAND(compare_runs, "compare-runs", "Training runs side by side: losses, tokens/s, peak memory, one chart",
             setup);

}  // namespace hylo::cli
