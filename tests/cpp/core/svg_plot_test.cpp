// SVG line charts: the output is well-formed XML (checked by a small strict parser here), ticks are nice values
// covering the range, log axes place powers of the base, NaN points break lines into subpaths, and bad charts
// are refused with a message.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/core/svg_plot.h"

namespace hylo::plot {
namespace {

struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::string text;
};

// A strict parser for the XML subset the writer emits: one declaration, elements with double-quoted attributes,
// text, and the five predefined entities. Fails the test on any imbalance or stray character; returns every
// element in document order.
std::vector<Element> parse_xml(const std::string& s) {
  std::vector<Element> all;
  std::vector<std::string> stack;
  std::vector<size_t> open;  // index in `all` of each element on `stack`
  size_t i = 0;
  auto fail = [&](const std::string& why) {
    ADD_FAILURE() << why << " at offset " << i << ": " << s.substr(i, 40);
    i = s.size();
  };
  auto check_text = [&](const std::string& t) {
    for (size_t k = 0; k < t.size(); ++k) {
      if (t[k] == '<' || t[k] == '>') return fail("raw angle bracket in text");
      if (t[k] == '&') {
        size_t e = t.find(';', k);
        std::string ent = e == std::string::npos ? "" : t.substr(k, e - k + 1);
        if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent != "&apos;")
          return fail("bad entity " + ent);
      }
    }
  };
  if (s.rfind("<?xml", 0) != 0) fail("missing XML declaration");
  i = s.find("?>") + 2;
  bool root_seen = false;
  while (i < s.size()) {
    size_t lt = s.find('<', i);
    std::string text = s.substr(i, lt == std::string::npos ? std::string::npos : lt - i);
    check_text(text);
    if (!open.empty()) all[open.back()].text += text;
    if (lt == std::string::npos) break;
    i = lt;
    size_t gt = s.find('>', i);
    if (gt == std::string::npos) return fail("unterminated tag"), all;
    std::string tag = s.substr(i + 1, gt - i - 1);
    i = gt + 1;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return fail("mismatched close </" + tag.substr(1) + ">"), all;
      stack.pop_back();
      open.pop_back();
      continue;
    }
    bool self_close = tag.back() == '/';
    if (self_close) tag.pop_back();
    if (stack.empty() && root_seen) return fail("second root element"), all;
    root_seen = true;
    static const std::regex name_re(R"(^([A-Za-z][\w:-]*))");
    static const std::regex attr_re(R"(^\s+([A-Za-z][\w:-]*)="([^"<]*)\")");
    std::smatch m;
    if (!std::regex_search(tag, m, name_re)) return fail("bad tag name in <" + tag + ">"), all;
    Element el{m[1], {}, {}};
    std::string rest = m.suffix();
    while (std::regex_search(rest, m, attr_re)) {
      check_text(m[2]);
      if (!el.attrs.emplace(m[1], m[2]).second) return fail("duplicate attribute " + std::string(m[1])), all;
      rest = m.suffix();
    }
    if (rest.find_first_not_of(" \n\t") != std::string::npos) return fail("junk in tag: " + rest), all;
    all.push_back(el);
    if (!self_close) {
      stack.push_back(el.name);
      open.push_back(all.size() - 1);
    }
  }
  EXPECT_TRUE(stack.empty()) << "unclosed elements, innermost " << (stack.empty() ? "" : stack.back());
  EXPECT_TRUE(root_seen);
  return all;
}

std::vector<const Element*> by_name(const std::vector<Element>& els, const std::string& name) {
  std::vector<const Element*> out;
  for (const auto& e : els)
    if (e.name == name) out.push_back(&e);
  return out;
}

LineChart two_series() {
  LineChart c;
  c.title = "Accuracy <NIAH> & \"friends\"";
  c.x_label = "context length (tokens)";
  c.y_label = "accuracy";
  c.x_scale = Scale::kLog2;
  c.y_min = 0.0;
  c.y_max = 1.0;
  c.series.push_back({"teacher", {1024, 2048, 4096, 8192, 16384, 32768}, {1, 1, 0.95, 0.9, 0.2, 0}, true});
  c.series.push_back({"hybrid", {1024, 2048, 4096, 8192, 16384, 32768}, {1, 0.98, 0.97, 0.95, 0.9, 0.85}, true});
  return c;
}

TEST(SvgPlot, WellFormedWithTitleLabelsLegendAndDistinctColours) {
  auto svg = render_svg(two_series());
  ASSERT_TRUE(svg.ok()) << svg.error();
  auto els = parse_xml(*svg);
  ASSERT_FALSE(els.empty());
  EXPECT_EQ(els[0].name, "svg");
  EXPECT_EQ(els[0].attrs.at("xmlns"), "http://www.w3.org/2000/svg");
  EXPECT_EQ(els[0].attrs.at("width"), "800");
  std::vector<std::string> texts;
  for (const auto* t : by_name(els, "text")) texts.push_back(t->text);
  auto has = [&](const std::string& t) { return std::find(texts.begin(), texts.end(), t) != texts.end(); };
  EXPECT_TRUE(has("Accuracy &lt;NIAH&gt; &amp; &quot;friends&quot;"));  // escaped, read back raw here
  EXPECT_TRUE(has("context length (tokens)"));
  EXPECT_TRUE(has("accuracy"));
  EXPECT_TRUE(has("teacher"));
  EXPECT_TRUE(has("hybrid"));
  for (const char* label : {"1K", "2K", "4K", "8K", "16K", "32K"}) EXPECT_TRUE(has(label)) << label;
  auto paths = by_name(els, "path");
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_NE(paths[0]->attrs.at("stroke"), paths[1]->attrs.at("stroke"));
  EXPECT_EQ(by_name(els, "circle").size(), 12u + 2u);  // markers on every point, plus one per legend entry
}

TEST(SvgPlot, LinearTicksAreNiceAndCoverTheRange) {
  auto t = axis_ticks(0.0, 1.0, Scale::kLinear);
  ASSERT_EQ(t.size(), 6u);  // 0, 0.2, ..., 1
  EXPECT_EQ(t.front().label, "0.0");
  EXPECT_EQ(t[1].label, "0.2");
  EXPECT_EQ(t.back().label, "1.0");
  EXPECT_NEAR(t.back().value, 1.0, 1e-12);

  t = axis_ticks(13.0, 487.0, Scale::kLinear);
  ASSERT_GE(t.size(), 3u);
  double step = t[1].value - t[0].value;
  for (size_t k = 1; k < t.size(); ++k) EXPECT_NEAR(t[k].value - t[k - 1].value, step, 1e-9);
  double mant = step / std::pow(10.0, std::floor(std::log10(step)));
  EXPECT_TRUE(std::abs(mant - 1) < 1e-9 || std::abs(mant - 2) < 1e-9 || std::abs(mant - 5) < 1e-9) << step;
  EXPECT_GE(t.front().value, 13.0);
  EXPECT_LE(t.back().value, 487.0);
  EXPECT_LT(t.front().value - step, 13.0);  // no nice value left out at either end
  EXPECT_GT(t.back().value + step, 487.0);
  EXPECT_EQ(t[0].label, "100");

  t = axis_ticks(-0.003, 0.004, Scale::kLinear);
  ASSERT_FALSE(t.empty());
  bool zero = false;
  for (const auto& k : t) zero |= k.label == "0.000";
  EXPECT_TRUE(zero);  // and never "-0.000"
}

TEST(SvgPlot, LogTicksArePowersOfTheBase) {
  auto t = axis_ticks(512, 65536, Scale::kLog2, 12);
  ASSERT_EQ(t.size(), 8u);
  EXPECT_EQ(t[0].label, "512");
  EXPECT_EQ(t[1].label, "1K");
  EXPECT_EQ(t[7].label, "64K");
  t = axis_ticks(0.01, 1000, Scale::kLog10);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0].label, "0.01");
  EXPECT_EQ(t[2].label, "1");
  EXPECT_EQ(t[5].label, "1000");
  // Many decades: every other power, still in order.
  t = axis_ticks(1, std::pow(2.0, 30), Scale::kLog2, 6);
  EXPECT_LE(t.size(), 11u);
  for (size_t k = 1; k < t.size(); ++k) EXPECT_GT(t[k].value, t[k - 1].value);
}

// Pulls the x coordinates out of "M x y L x y ..." per subpath.
std::vector<std::vector<double>> subpaths(const std::string& d) {
  std::vector<std::vector<double>> out;
  std::istringstream in(d);
  std::string cmd;
  while (in >> cmd) {
    char c = cmd[0];
    double x = std::stod(cmd.substr(1)), y;
    in >> y;
    if (c == 'M') out.emplace_back();
    out.back().push_back(x);
  }
  return out;
}

TEST(SvgPlot, NanPointsBreakTheLineAndLogAxesSkipNonPositive) {
  LineChart c;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  c.y_scale = Scale::kLog10;
  c.series.push_back({"nll", {1, 2, 3, 4, 5, 6, 7}, {5, 4, nan, 3, 0.0, 2, std::numeric_limits<double>::infinity()}});
  auto svg = render_svg(c);
  ASSERT_TRUE(svg.ok()) << svg.error();
  auto els = parse_xml(*svg);
  auto paths = by_name(els, "path");
  ASSERT_EQ(paths.size(), 1u);
  auto sp = subpaths(paths[0]->attrs.at("d"));
  ASSERT_EQ(sp.size(), 3u);  // {1,2} gap {4} gap (0 on a log axis) {6}
  EXPECT_EQ(sp[0].size(), 2u);
  EXPECT_EQ(sp[1].size(), 1u);
  EXPECT_EQ(sp[2].size(), 1u);
  EXPECT_LT(sp[0][0], sp[0][1]);  // x grows to the right
  EXPECT_LT(sp[0][1], sp[1][0]);
}

TEST(SvgPlot, RefusesChartsWithNothingToDraw) {
  LineChart c;
  c.title = "empty";
  auto r = render_svg(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("no series"), std::string::npos) << r.error();

  c.series.push_back({"a", {1, 2}, {1}});
  r = render_svg(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("series 'a' has 2 x values but 1 y values"), std::string::npos) << r.error();

  const double nan = std::numeric_limits<double>::quiet_NaN();
  c.series[0] = {"a", {1, 2}, {nan, nan}};
  r = render_svg(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("no finite point"), std::string::npos) << r.error();

  c.series[0] = {"a", {1, 2}, {1, 2}};
  c.y_min = 3;
  c.y_max = 1;
  r = render_svg(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("y range"), std::string::npos) << r.error();
}

TEST(SvgPlot, SinglePointAndFlatSeriesStillGetARange) {
  LineChart c;
  c.series.push_back({"one", {5}, {7}, true});
  auto svg = render_svg(c);
  ASSERT_TRUE(svg.ok()) << svg.error();
  auto els = parse_xml(*svg);
  EXPECT_GE(by_name(els, "text").size(), 4u);  // ticks on both axes
}

TEST(SvgPlot, WriteSvgIsAtomicAndReadable) {
  auto dir = std::filesystem::path(testing::TempDir()) / "svg_plot_test";
  std::filesystem::create_directories(dir);
  auto path = dir / "chart.svg";
  ASSERT_TRUE(write_svg(path, two_series()).ok());
  auto text = read_text_file(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, *render_svg(two_series()));
  LineChart bad;
  auto st = write_svg(dir / "bad.svg", bad);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().find("bad.svg"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.svg"));
  if (const char* keep = std::getenv("HYLO_SVG_SAMPLE")) ASSERT_TRUE(write_svg(keep, two_series()).ok());
}

}  // namespace
}  // namespace hylo::plot
