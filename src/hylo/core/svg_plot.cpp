#include "hylo/core/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "hylo/core/file_util.h"

namespace hylo::plot {
namespace {

// Tableau 10: distinct hues that stay apart for colour-blind readers; past ten series the dash pattern changes.
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
constexpr int kPaletteSize = 10;
constexpr const char* kDashes[] = {"", "6,3", "2,3", "8,3,2,3"};

bool is_log(Scale s) { return s != Scale::kLinear; }
double log_base(Scale s) { return s == Scale::kLog2 ? 2.0 : 10.0; }

std::string escape_xml(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

// Coordinates with two decimals: enough for a screen, short files.
std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// A tick label: `decimals` fixed digits, or the shortest %g form when decimals < 0.
std::string number_label(double v, int decimals) {
  char buf[48];
  if (std::abs(v) < 1e-12) v = 0.0;  // no "-0"
  if (decimals >= 0 && std::abs(v) < 1e7) {
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  } else {
    std::snprintf(buf, sizeof buf, "%.6g", v);
  }
  return buf;
}

// Labels for powers of two read as sizes ("512", "1K", "32K", "1M") since log2 axes here are context lengths.
std::string pow2_label(double v) {
  if (v >= 1024.0 && std::fmod(v, 1024.0) == 0.0) {
    if (v >= 1048576.0 && std::fmod(v, 1048576.0) == 0.0) return number_label(v / 1048576.0, 0) + "M";
    return number_label(v / 1024.0, 0) + "K";
  }
  return number_label(v, v >= 1.0 ? 0 : -1);
}

// Tick step 1, 2 or 5 times a power of ten, giving about `target` intervals over `span`.
double nice_step(double span, int target) {
  double raw = span / std::max(target, 1);
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  double nice = f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0;
  return nice * mag;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
};

// Widens a data range to whole ticks (linear) or whole powers of the base (log); a single value gets a margin.
Range padded(Range r, Scale scale) {
  if (is_log(scale)) {
    double b = log_base(scale);
    double lo = std::floor(std::log(r.lo) / std::log(b) + 1e-9), hi = std::ceil(std::log(r.hi) / std::log(b) - 1e-9);
    if (hi <= lo) hi = lo + 1;
    return {std::pow(b, lo), std::pow(b, hi)};
  }
  if (r.hi <= r.lo) {
    double m = r.lo == 0.0 ? 1.0 : std::abs(r.lo) * 0.1;
    r.lo -= m;
    r.hi += m;
  }
  double step = nice_step(r.hi - r.lo, 6);
  return {std::floor(r.lo / step + 1e-9) * step, std::ceil(r.hi / step - 1e-9) * step};
}

bool drawable(double v, Scale s) { return std::isfinite(v) && (!is_log(s) || v > 0.0); }

}  // namespace

std::vector<Tick> axis_ticks(double lo, double hi, Scale scale, int target) {
  std::vector<Tick> ticks;
  if (!(lo < hi) || !std::isfinite(lo) || !std::isfinite(hi)) return ticks;
  if (is_log(scale)) {
    if (lo <= 0.0) return ticks;
    double b = log_base(scale);
    int e0 = static_cast<int>(std::ceil(std::log(lo) / std::log(b) - 1e-9));
    int e1 = static_cast<int>(std::floor(std::log(hi) / std::log(b) + 1e-9));
    int stride = std::max(1, (e1 - e0 + target) / std::max(target, 1));  // every power, unless too many
    for (int e = e0; e <= e1; e += stride) {
      double v = std::pow(b, e);
      ticks.push_back({v, scale == Scale::kLog2 ? pow2_label(v) : number_label(v, e >= 0 ? 0 : -e)});
    }
    return ticks;
  }
  double step = nice_step(hi - lo, target);
  int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  double first = std::ceil(lo / step - 1e-9);
  for (double k = first;; k += 1.0) {
    double v = k * step;
    if (v > hi + step * 1e-9) break;
    ticks.push_back({v, number_label(v, decimals)});
  }
  return ticks;
}

Result<std::string> render_svg(const LineChart& chart) {
  const std::string what = "plot '" + chart.title + "'";
  if (chart.series.empty()) return make_error(what + ": no series to draw");
  if (chart.width < 200 || chart.height < 150)
    return make_error(what + ": size " + std::to_string(chart.width) + "x" + std::to_string(chart.height) +
                      " is too small (need at least 200x150)");
  Range xr, yr;
  for (const Series& s : chart.series) {
    if (s.x.size() != s.y.size())
      return make_error(what + ": series '" + s.name + "' has " + std::to_string(s.x.size()) + " x values but " +
                        std::to_string(s.y.size()) + " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!drawable(s.x[i], chart.x_scale) || !drawable(s.y[i], chart.y_scale)) continue;
      xr.add(s.x[i]);
      yr.add(s.y[i]);
    }
  }
  if (xr.empty()) return make_error(what + ": no finite point to draw in any series");
  xr = padded(xr, chart.x_scale);
  if (chart.y_min || chart.y_max) {
    Range fixed = padded(yr, chart.y_scale);
    if (chart.y_min) fixed.lo = *chart.y_min;
    if (chart.y_max) fixed.hi = *chart.y_max;
    if (!(fixed.lo < fixed.hi) || (is_log(chart.y_scale) && fixed.lo <= 0.0))
      return make_error(what + ": y range [" + number_label(fixed.lo, -1) + ", " + number_label(fixed.hi, -1) +
                        "] is empty" + (is_log(chart.y_scale) ? " or not positive on a log axis" : ""));
    yr = fixed;
  } else {
    yr = padded(yr, chart.y_scale);
  }

  // Layout: title on top, y labels on the left, x labels below, legend in a column right of the plot.
  size_t longest = 0;
  for (const Series& s : chart.series) longest = std::max(longest, s.name.size());
  const double legend_w = std::min(chart.width / 3.0, 34.0 + 7.0 * static_cast<double>(longest));
  const double left = 70, top = chart.title.empty() ? 20 : 44, bottom = 56;
  const double right = 16 + legend_w;
  const double pw = chart.width - left - right, ph = chart.height - top - bottom;
  if (pw < 50 || ph < 50) return make_error(what + ": too many or too long series names for a " +
                                            std::to_string(chart.width) + " px wide chart");

  auto to_unit = [](double v, const Range& r, Scale s) {
    if (is_log(s)) return (std::log(v) - std::log(r.lo)) / (std::log(r.hi) - std::log(r.lo));
    return (v - r.lo) / (r.hi - r.lo);
  };
  auto px = [&](double x) { return left + pw * to_unit(x, xr, chart.x_scale); };
  auto py = [&](double y) { return top + ph * (1.0 - to_unit(y, yr, chart.y_scale)); };

  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << chart.width << "\" height=\"" << chart.height
    << "\" viewBox=\"0 0 " << chart.width << " " << chart.height
    << "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  // The clip area reaches a few pixels past the frame so that lines and markers on the boundary (accuracy 1.0,
  // the first and last length) are drawn whole; values far outside a fixed y range are still cut.
  o << "<defs><clipPath id=\"plot-area\"><rect x=\"" << fmt(left - 5) << "\" y=\"" << fmt(top - 5)
    << "\" width=\"" << fmt(pw + 10) << "\" height=\"" << fmt(ph + 10) << "\"/></clipPath></defs>\n";
  if (!chart.title.empty())
    o << "<text x=\"" << fmt(left + pw / 2) << "\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" "
      << "font-weight=\"bold\">" << escape_xml(chart.title) << "</text>\n";

  // Grid and tick labels.
  o << "<g class=\"x-axis\">\n";
  for (const Tick& t : axis_ticks(xr.lo, xr.hi, chart.x_scale)) {
    double x = px(t.value);
    o << "<line x1=\"" << fmt(x) << "\" y1=\"" << fmt(top) << "\" x2=\"" << fmt(x) << "\" y2=\"" << fmt(top + ph)
      << "\" stroke=\"#e0e0e0\"/>\n";
    o << "<text x=\"" << fmt(x) << "\" y=\"" << fmt(top + ph + 16) << "\" text-anchor=\"middle\">"
      << escape_xml(t.label) << "</text>\n";
  }
  o << "</g>\n<g class=\"y-axis\">\n";
  for (const Tick& t : axis_ticks(yr.lo, yr.hi, chart.y_scale)) {
    double y = py(t.value);
    o << "<line x1=\"" << fmt(left) << "\" y1=\"" << fmt(y) << "\" x2=\"" << fmt(left + pw) << "\" y2=\"" << fmt(y)
      << "\" stroke=\"#e0e0e0\"/>\n";
    o << "<text x=\"" << fmt(left - 6) << "\" y=\"" << fmt(y + 4) << "\" text-anchor=\"end\">" << escape_xml(t.label)
      << "</text>\n";
  }
  o << "</g>\n";
  o << "<rect x=\"" << fmt(left) << "\" y=\"" << fmt(top) << "\" width=\"" << fmt(pw) << "\" height=\"" << fmt(ph)
    << "\" fill=\"none\" stroke=\"#333333\"/>\n";
  if (!chart.x_label.empty())
    o << "<text x=\"" << fmt(left + pw / 2) << "\" y=\"" << fmt(chart.height - 14.0)
      << "\" text-anchor=\"middle\" font-size=\"13\">" << escape_xml(chart.x_label) << "</text>\n";
  if (!chart.y_label.empty())
    o << "<text transform=\"translate(18," << fmt(top + ph / 2) << ") rotate(-90)\" text-anchor=\"middle\" "
      << "font-size=\"13\">" << escape_xml(chart.y_label) << "</text>\n";

  // Series: one path each, a new subpath ("M") after every skipped point, so gaps stay gaps.
  o << "<g clip-path=\"url(#plot-area)\">\n";
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    const char* colour = kPalette[k % kPaletteSize];
    const char* dash = kDashes[(k / kPaletteSize) % 4];
    std::string d;
    bool pen_down = false;
    std::ostringstream dots;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!drawable(s.x[i], chart.x_scale) || !drawable(s.y[i], chart.y_scale)) {
        pen_down = false;
        continue;
      }
      double x = px(s.x[i]), y = py(s.y[i]);
      d += (pen_down ? " L" : (d.empty() ? "M" : " M")) + fmt(x) + " " + fmt(y);
      pen_down = true;
      if (s.markers)
        dots << "<circle cx=\"" << fmt(x) << "\" cy=\"" << fmt(y) << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
    }
    o << "<g class=\"series\" data-name=\"" << escape_xml(s.name) << "\">\n";
    if (!d.empty()) {
      o << "<path d=\"" << d << "\" fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\"";
      if (*dash) o << " stroke-dasharray=\"" << dash << "\"";
      o << " stroke-linejoin=\"round\"/>\n";
    }
    o << dots.str() << "</g>\n";
  }
  o << "</g>\n";

  // Legend.
  o << "<g class=\"legend\">\n";
  const double lx = left + pw + 14;
  for (size_t k = 0; k < chart.series.size(); ++k) {
    double y = top + 10 + 20.0 * static_cast<double>(k);
    const char* dash = kDashes[(k / kPaletteSize) % 4];
    o << "<line x1=\"" << fmt(lx) << "\" y1=\"" << fmt(y) << "\" x2=\"" << fmt(lx + 22) << "\" y2=\"" << fmt(y)
      << "\" stroke=\"" << kPalette[k % kPaletteSize] << "\" stroke-width=\"2\"";
    if (*dash) o << " stroke-dasharray=\"" << dash << "\"";
    o << "/>\n";
    if (chart.series[k].markers)
      o << "<circle cx=\"" << fmt(lx + 11) << "\" cy=\"" << fmt(y) << "\" r=\"3\" fill=\""
        << kPalette[k % kPaletteSize] << "\"/>\n";
    o << "<text x=\"" << fmt(lx + 28) << "\" y=\"" << fmt(y + 4) << "\">" << escape_xml(chart.series[k].name)
      << "</text>\n";
  }
  o << "</g>\n</svg>\n";
  return o.str();
}

Status write_svg(const std::filesystem::path& path, const LineChart& chart) {
  auto svg = render_svg(chart);
  if (!svg.ok()) return make_error(path.string() + ": " + svg.error());
  return write_file_atomic(path, *svg);
}

}  // namespace hylo::plot
