#include "hylo/train/loss_plot.h"

#include "hylo/core/file_util.h"
#include "hylo/core/svg_plot.h"
#include "hylo/train/run_compare.h"

namespace hylo::train {

Status write_loss_plot(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& svg,
                       const std::string& title) {
  HYLO_TRY(std::string text, read_text_file(metrics_jsonl));
  const RunCurves r = parse_run_curves("", text);
  plot::LineChart chart;
  chart.title = title;
  chart.x_label = "optimizer step";
  chart.y_label = "loss";
  chart.y_scale = plot::Scale::kLog10;  // distillation losses fall over orders of magnitude
  if (!r.step.empty()) chart.series.push_back({"train loss", r.step, r.loss, false});
  if (!r.eval_step.empty()) chart.series.push_back({"held-out loss", r.eval_step, r.heldout, true});
  if (chart.series.empty()) return {};
  return plot::write_svg(svg, chart);
}

}  // namespace hylo::train
