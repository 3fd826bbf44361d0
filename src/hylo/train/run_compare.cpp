#include "hylo/train/run_compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/core/svg_plot.h"

namespace hylo::train {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The largest |a - b| (and |a - b| / |a|) over the x both series hold.
struct Diff {
  double abs = kNaN, rel = kNaN;
  int64_t common = 0;
};

Diff series_diff(const std::vector<double>& xa, const std::vector<double>& ya, const std::vector<double>& xb,
                 const std::vector<double>& yb) {
  std::map<double, double> a;
  for (size_t i = 0; i < xa.size(); ++i) a[xa[i]] = ya[i];  // a resumed run may log a step twice: the last wins
  Diff d;
  for (size_t i = 0; i < xb.size(); ++i) {
    const auto it = a.find(xb[i]);
    if (it == a.end()) continue;
    const double diff = std::abs(yb[i] - it->second);
    d.abs = d.common ? std::max(d.abs, diff) : diff;
    const double rel = diff / std::max(std::abs(it->second), 1e-30);
    d.rel = d.common ? std::max(d.rel, rel) : rel;
    ++d.common;
  }
  return d;
}

std::string num(double v, const char* f = "%.4f") {
  if (!std::isfinite(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

RunCurves parse_run_curves(const std::string& label, const std::string& metrics_text) {
  RunCurves r;
  r.label = label;
  std::istringstream in(metrics_text);
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
      r.step.push_back(step);
      r.loss.push_back(j["loss"].get<double>());
      r.tokens_per_s.push_back(j.value("tokens_per_s", kNaN));
    }
    if (j.contains("heldout_loss")) {
      r.eval_step.push_back(step);
      r.heldout.push_back(j["heldout_loss"].get<double>());
    }
    if (j.contains("peak_gpu_bytes")) r.peak_gpu_bytes = std::max(r.peak_gpu_bytes, j["peak_gpu_bytes"].get<double>());
  }
  return r;
}

Result<RunCurves> read_run_curves(const std::string& label, const std::filesystem::path& metrics_or_dir) {
  const std::filesystem::path file = std::filesystem::is_directory(metrics_or_dir)
                                         ? metrics_or_dir / "metrics.jsonl"
                                         : metrics_or_dir;
  HYLO_TRY(std::string text, read_text_file(file));
  RunCurves r = parse_run_curves(label, text);
  if (r.step.empty() && r.eval_step.empty())
    return make_error(file.string() + ": no training or held-out loss lines (expected a hylo train metrics.jsonl)");
  return r;
}

std::vector<RunComparison> compare_runs(const std::vector<RunCurves>& runs) {
  std::vector<RunComparison> rows;
  for (size_t k = 0; k < runs.size(); ++k) {
    const RunCurves& r = runs[k];
    RunComparison c;
    c.label = r.label;
    c.last_step = static_cast<int64_t>(std::max(r.step.empty() ? 0.0 : r.step.back(),
                                                r.eval_step.empty() ? 0.0 : r.eval_step.back()));
    c.last_loss = r.loss.empty() ? kNaN : r.loss.back();
    c.last_heldout = r.heldout.empty() ? kNaN : r.heldout.back();
    c.tokens_per_s = r.tokens_per_s.empty() ? kNaN : r.tokens_per_s.back();
    c.peak_gpu_bytes = r.peak_gpu_bytes;
    c.max_loss_diff = c.max_loss_rel_diff = c.max_heldout_diff = kNaN;
    if (k > 0) {
      const Diff l = series_diff(runs[0].step, runs[0].loss, r.step, r.loss);
      const Diff h = series_diff(runs[0].eval_step, runs[0].heldout, r.eval_step, r.heldout);
      c.max_loss_diff = l.abs;
      c.max_loss_rel_diff = l.rel;
      c.max_heldout_diff = h.abs;
      c.common_steps = l.common;
    }
    rows.push_back(c);
  }
  return rows;
}

std::string comparison_markdown(const std::vector<RunComparison>& rows) {
  const std::string base = rows.empty() ? std::string("first") : rows[0].label;
  std::ostringstream o;
  o << "| run | last step | last train loss | last held-out loss | tokens/s | peak GPU GiB | largest train-loss "
    << "difference from " << base << " (relative) | largest held-out difference | common logged steps |\n"
    << "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    const std::string peak = r.peak_gpu_bytes > 0 ? num(r.peak_gpu_bytes / (1 << 30), "%.2f") : "-";
    o << "| " << r.label << " | " << r.last_step << " | " << num(r.last_loss) << " | " << num(r.last_heldout) << " | "
      << num(r.tokens_per_s, "%.0f") << " | " << peak << " | " << num(r.max_loss_diff) << " ("
      << num(100 * r.max_loss_rel_diff, "%.2f%%") << ") | " << num(r.max_heldout_diff) << " | " << r.common_steps
      << " |\n";
  }
  return o.str();
}

Status write_comparison_svg(const std::vector<RunCurves>& runs, const std::filesystem::path& svg,
                            const std::string& title) {
  plot::LineChart chart;
  chart.title = title;
  chart.x_label = "optimizer step";
  chart.y_label = "loss";
  chart.y_scale = plot::Scale::kLog10;
  for (const auto& r : runs) {
    if (!r.step.empty()) chart.series.push_back({r.label + " train", r.step, r.loss, false});
    if (!r.eval_step.empty()) chart.series.push_back({r.label + " held-out", r.eval_step, r.heldout, true});
  }
  return plot::write_svg(svg, chart);
}

}  // namespace hylo::train
