#include "hylo/eval/report.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

#include "hylo/core/svg_plot.h"

namespace hylo::eval {
namespace {

using nlohmann::json;

std::string num(double v, int decimals) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

double get(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::numeric_limits<double>::quiet_NaN();
}

std::string length_label(int64_t L) {
  if (L % 1024 == 0) return std::to_string(L / 1024) + "K";
  return std::to_string(L);
}

// Every RULER length any model has, in increasing order.
std::vector<int64_t> ruler_lengths(const json& report) {
  std::set<int64_t> ls;
  for (const auto& m : report["models"])
    if (m.contains("ruler"))
      for (const auto& L : m["ruler"]["lengths"]) ls.insert(L.get<int64_t>());
  return {ls.begin(), ls.end()};
}

std::vector<std::string> ruler_tasks(const json& report) {
  std::vector<std::string> tasks;
  std::set<std::string> seen;
  for (const auto& m : report["models"])
    if (m.contains("ruler"))
      for (const auto& [t, _] : m["ruler"]["tasks"].items())
        if (seen.insert(t).second) tasks.push_back(t);
  return tasks;
}

double ruler_score(const json& m, const std::string& task, int64_t L) {
  if (!m.contains("ruler")) return std::numeric_limits<double>::quiet_NaN();
  const json& tasks = m["ruler"]["tasks"];
  const std::string key = std::to_string(L);
  if (!tasks.contains(task) || !tasks[task].contains(key)) return std::numeric_limits<double>::quiet_NaN();
  return get(tasks[task][key], "score");
}

double ruler_average(const json& m, int64_t L) {
  if (!m.contains("ruler") || !m["ruler"]["average"].contains(std::to_string(L)))
    return std::numeric_limits<double>::quiet_NaN();
  return m["ruler"]["average"][std::to_string(L)].get<double>();
}

}  // namespace

std::string report_markdown(const json& report) {
  std::string md = "# hylo eval\n\n";
  md += "seed " + std::to_string(report.value("seed", 0)) + ", limit " + std::to_string(report.value("limit", 0)) +
        " (samples per task and length for RULER; items otherwise; 0 = all)\n";
  const json& models = report["models"];
  for (const auto& m : models)
    md += "\n- **" + m["name"].get<std::string>() + "**: `" + m.value("path", std::string()) + "`";
  md += "\n";

  bool any_ppl = false;
  for (const auto& m : models) any_ppl |= m.contains("perplexity");
  if (any_ppl) {
    md += "\n## Perplexity\n\n| model | file | context | stride | tokens scored | NLL (nats) | perplexity | bits/byte |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& m : models) {
      if (!m.contains("perplexity")) continue;
      const json& p = m["perplexity"];
      md += "| " + m["name"].get<std::string>() + " | " + p.value("file", std::string()) + " | " +
            std::to_string(p.value("context", 0)) + " | " + std::to_string(p.value("stride", 0)) + " | " +
            std::to_string(p.value("predicted", 0)) + " | " + num(get(p, "nll_mean"), 4) + " | " +
            num(get(p, "perplexity"), 3) + " | " + num(get(p, "bits_per_byte"), 4) + " |\n";
    }
  }

  const auto lengths = ruler_lengths(report);
  if (!lengths.empty()) {
    md += "\n## RULER (score x 100; string_match_all, qa: string_match_part)\n\n| model | task |";
    std::string sep = "|---|---|";
    for (int64_t L : lengths) {
      md += " " + length_label(L) + " |";
      sep += "---:|";
    }
    md += "\n" + sep + "\n";
    const auto tasks = ruler_tasks(report);
    for (const auto& m : models) {
      if (!m.contains("ruler")) continue;
      for (const auto& t : tasks) {
        md += "| " + m["name"].get<std::string>() + " | " + t + " |";
        for (int64_t L : lengths) md += " " + num(ruler_score(m, t, L), 1) + " |";
        md += "\n";
      }
      if (tasks.size() > 1) {
        md += "| " + m["name"].get<std::string>() + " | **average** |";
        for (int64_t L : lengths) md += " " + num(ruler_average(m, L), 1) + " |";
        md += "\n";
      }
    }
  }

  bool any_mc = false;
  for (const auto& m : models) any_mc |= m.contains("multiple_choice");
  if (any_mc) {
    md += "\n## Multiple choice (lm-eval-harness acc / acc_norm)\n\n| model | file | n | acc | acc_norm |\n"
          "|---|---|---:|---:|---:|\n";
    for (const auto& m : models)
      if (m.contains("multiple_choice"))
        for (const auto& [file, r] : m["multiple_choice"].items())
          md += "| " + m["name"].get<std::string>() + " | " + file + " | " + std::to_string(r.value("n", 0)) +
                " | " + num(get(r, "acc"), 4) + " | " + num(get(r, "acc_norm"), 4) + " |\n";
  }
  bool any_cloze = false;
  for (const auto& m : models) any_cloze |= m.contains("cloze");
  if (any_cloze) {
    md += "\n## Cloze (last word; acc = greedy, perplexity of the word)\n\n| model | file | n | acc | perplexity |\n"
          "|---|---|---:|---:|---:|\n";
    for (const auto& m : models)
      if (m.contains("cloze")) {
        const json& c = m["cloze"];
        md += "| " + m["name"].get<std::string>() + " | " + c.value("file", std::string()) + " | " +
              std::to_string(c.value("n", 0)) + " | " + num(get(c, "acc"), 4) + " | " + num(get(c, "perplexity"), 3) +
              " |\n";
      }
  }
  bool any_gen = false;
  for (const auto& m : models) any_gen |= m.contains("generation");
  if (any_gen) {
    md += "\n## Generation (exact match)\n\n| model | file | n | strict-match | flexible-extract |\n"
          "|---|---|---:|---:|---:|\n";
    for (const auto& m : models)
      if (m.contains("generation"))
        for (const auto& [file, r] : m["generation"].items())
          md += "| " + m["name"].get<std::string>() + " | " + file + " | " + std::to_string(r.value("n", 0)) +
                " | " + num(get(r, "strict_match"), 4) + " | " + num(get(r, "flexible_extract"), 4) + " |\n";
  }
  return md;
}

Result<std::vector<std::filesystem::path>> write_plots(const json& report, const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> written;
  const json& models = report["models"];
  const auto lengths = ruler_lengths(report);
  if (!lengths.empty()) {
    const auto tasks = ruler_tasks(report);
    std::vector<double> xs(lengths.begin(), lengths.end());
    auto chart_for = [&](const std::string& title) {
      plot::LineChart c;
      c.title = title;
      c.x_label = "context length (tokens)";
      c.y_label = "score (x 100)";
      c.x_scale = plot::Scale::kLog2;
      c.y_min = 0.0;
      c.y_max = 100.0;
      return c;
    };
    // All models and tasks on one chart (the average when there are several tasks).
    plot::LineChart all = chart_for(tasks.size() > 1 ? "RULER average over " + std::to_string(tasks.size()) + " tasks"
                                                     : "RULER " + tasks.front());
    for (const auto& m : models) {
      if (!m.contains("ruler")) continue;
      plot::Series s{m["name"].get<std::string>(), xs, {}, true};
      for (int64_t L : lengths) s.y.push_back(tasks.size() > 1 ? ruler_average(m, L) : ruler_score(m, tasks.front(), L));
      all.series.push_back(std::move(s));
    }
    auto st = plot::write_svg(dir / "ruler.svg", all);
    if (!st.ok()) return st.error_info();
    written.push_back(dir / "ruler.svg");
    if (tasks.size() > 1) {
      for (const auto& t : tasks) {
        plot::LineChart c = chart_for("RULER " + t);
        for (const auto& m : models) {
          if (!m.contains("ruler")) continue;
          plot::Series s{m["name"].get<std::string>(), xs, {}, true};
          for (int64_t L : lengths) s.y.push_back(ruler_score(m, t, L));
          c.series.push_back(std::move(s));
        }
        auto p = dir / ("ruler_" + t + ".svg");
        auto st2 = plot::write_svg(p, c);
        if (!st2.ok()) return st2.error_info();
        written.push_back(p);
      }
    }
  }
  plot::LineChart nll;
  nll.title = "NLL by position in the window";
  nll.x_label = "position in window (tokens, bucket centre)";
  nll.y_label = "mean NLL (nats/token)";
  for (const auto& m : models) {
    if (!m.contains("perplexity") || !m["perplexity"].contains("nll_by_position")) continue;
    plot::Series s{m["name"].get<std::string>() + " (ctx " + std::to_string(m["perplexity"].value("context", 0)) + ")",
                   {}, {}, true};
    for (const auto& b : m["perplexity"]["nll_by_position"]) {
      if (b.value("count", 0) == 0) continue;
      s.x.push_back(0.5 * (b["start"].get<double>() + b["end"].get<double>()));
      s.y.push_back(b["nll"].get<double>());
    }
    if (!s.x.empty()) nll.series.push_back(std::move(s));
  }
  if (!nll.series.empty()) {
    auto st = plot::write_svg(dir / "nll_by_position.svg", nll);
    if (!st.ok()) return st.error_info();
    written.push_back(dir / "nll_by_position.svg");
  }
  return written;
}

}  // namespace hylo::eval
