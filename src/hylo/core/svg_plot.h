// Line charts written as standalone SVG files, for evaluation and training reports (accuracy against context
// length, NLL by position, loss curves). Written here because no maintained C++ plotting library in Debian fits:
// the candidates wrap gnuplot or matplotlib at run time (an outside process or Python), or are unmaintained;
// SVG is plain text, so a small writer with no dependency does the job and the output opens in any browser.
//
// A chart holds several named series of (x, y) points. Axes are linear or logarithmic (x: log2 or log10; y:
// log10), ticks are "nice" values (1, 2, 5 times a power of ten on linear axes; powers of the base on log axes)
// with labels. Non-finite points, and points <= 0 on a log axis, are skipped and break the line (a gap).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::plot {

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; NaN/inf in either skips the point and breaks the line
  bool markers = false;      // draw a dot at each point
};

enum class Scale { kLinear, kLog2, kLog10 };

struct LineChart {
  std::string title, x_label, y_label;
  Scale x_scale = Scale::kLinear;
  Scale y_scale = Scale::kLinear;  // kLog2 and kLog10 both mean a log y axis (ticks at the chosen base's powers)
  std::optional<double> y_min, y_max;  // fixed y range (e.g. 0..1 for accuracy); otherwise from the data
  std::vector<Series> series;
  int width = 800, height = 480;
};

// One axis tick: where it sits in data units and its label.
struct Tick {
  double value;
  std::string label;
};

// Ticks covering [lo, hi] (lo < hi) on the given scale, about `target` of them on a linear axis.
std::vector<Tick> axis_ticks(double lo, double hi, Scale scale, int target = 6);

// The chart as SVG text. Errors: no series, a series whose x and y lengths differ, no drawable point at all,
// a non-positive size, or an inverted fixed y range.
Result<std::string> render_svg(const LineChart& chart);

// render_svg, then an atomic write to `path`.
Status write_svg(const std::filesystem::path& path, const LineChart& chart);

}  // namespace hylo::plot
