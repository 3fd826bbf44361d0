#include "hylo/train/loss_plot.h"

#include <sstream>

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/core/svg_plot.h"

namespace hylo::train {

Status write_loss_plot(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& svg,
                       const std::string& title) {
  HYLO_TRY(std::string text, read_text_file(metrics_jsonl));
  plot::Series train{"train loss", {}, {}, false}, heldout{"held-out loss", {}, {}, true};
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // a line cut by a kill
    }
    const double step = j.value("step", 0.0);
    if (j.contains("loss")) {
      train.x.push_back(step);
      train.y.push_back(j["loss"].get<double>());
    }
    if (j.contains("heldout_loss")) {
      heldout.x.push_back(step);
      heldout.y.push_back(j["heldout_loss"].get<double>());
    }
  }
  plot::LineChart chart;
  chart.title = title;
  chart.x_label = "optimizer step";
  chart.y_label = "loss";
  chart.y_scale = plot::Scale::kLog10;  // distillation losses fall over orders of magnitude
  if (!train.x.empty()) chart.series.push_back(train);
  if (!heldout.x.empty()) chart.series.push_back(heldout);
  if (chart.series.empty()) return {};
  return plot::write_svg(svg, chart);
}

}  // namespace hylo::train
