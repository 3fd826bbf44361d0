#include "hylo/infer/bench/bench_report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/core/svg_plot.h"

namespace hylo::bench {

namespace {

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string bytes(double v) { return std::isfinite(v) ? format_bytes(v) : "n/a"; }

std::string tokens(int64_t n) { return n == INT64_MAX ? "unlimited" : std::to_string(n); }

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
nlohmann::json count(int64_t n) { return n == INT64_MAX ? nlohmann::json(nullptr) : nlohmann::json(n); }

const ContextPoint* find_context(const ModelReport& m, int64_t context) {
  for (const auto& p : m.contexts)
    if (p.context == context && p.fits && p.error.empty()) return &p;
  return nullptr;
}

double batch1_rate(const ModelReport& m) {
  for (const auto& p : m.batches)
    if (p.batch == 1 && p.fits && p.error.empty()) return p.decode_tokens_per_second;
  return kNaN;
}

}  // namespace

std::string to_markdown(const BenchReport& r) {
  std::ostringstream o;
  o << "hylo bench on " << r.device << ", " << r.dtype << ", " << r.date << "\n\n";
  if (!r.command.empty()) o << "Command: `" << r.command << "`\n\n";
  o << "| model | role | layers | parameters | pool bytes/token | formula bytes/token | state bytes/sequence | "
       "pool budget | longest context |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& m : r.models)
    o << "| " << m.name << " | " << m.role << " | " << m.layers << " | " << fixed(m.parameters / 1e6, 1) << "M | "
      << m.bytes_per_token << " | " << m.bytes_per_token_formula << " | " << m.bytes_per_slot << " | "
      << bytes(static_cast<double>(m.budget_bytes)) << " | " << tokens(m.max_context) << " |\n";

  if (!r.options.contexts.empty()) {
    o << "\nBatch 1: a random prompt of `context` tokens, then " << r.options.decode_tokens
      << " greedy tokens (TPOT: median decode step; memory: the sequence's pages and state slot; peak: the CUDA "
         "caching allocator's, weights included)";
    if (r.options.warmup)
      o << "; each model first ran an untimed warm-up request (cold prefill: "
        << [&] {
             std::string w;
             for (const auto& m : r.models)
               if (m.warmup_tokens)
                 w += (w.empty() ? "" : ", ") + m.name + " " + format_count(m.warmup_tokens) + " tokens in " +
                      fixed(m.warmup_prefill_seconds, 3) + " s";
             return w.empty() ? std::string("none ran") : w;
           }()
        << ")";
    o << "\n\n";
    o << "| model | context | prefill s | prefill tok/s | TPOT ms | sequence memory | peak memory |\n"
         "|---|---|---|---|---|---|---|\n";
    for (const auto& m : r.models)
      for (const auto& p : m.contexts) {
        o << "| " << m.name << " | " << format_count(p.context) << " | ";
        if (!p.fits)
          o << "does not fit (" << tokens(p.max_context) << " tokens fit) | | | | |\n";
        else if (!p.error.empty())
          o << "failed: " << p.error << " | | | | |\n";
        else
          o << fixed(p.prefill_seconds, 3) << " | " << fixed(p.prefill_tokens_per_second(), 0) << " | "
            << fixed(p.tpot_ms, 3) << " | " << bytes(static_cast<double>(p.sequence_bytes)) << " | "
            << bytes(p.peak_bytes) << " |\n";
      }
    if (r.models.size() >= 2) {
      const ModelReport &a = r.models[0], &b = r.models[1];
      o << "\n" << a.name << " against " << b.name << " (ratios a / b, same contexts)\n\n"
        << "| context | TPOT ratio | prefill time ratio | sequence memory ratio |\n|---|---|---|---|\n";
      for (int64_t c : r.options.contexts) {
        const ContextPoint *pa = find_context(a, c), *pb = find_context(b, c);
        if (!pa || !pb) continue;
        o << "| " << format_count(c) << " | " << fixed(pa->tpot_ms / pb->tpot_ms, 3) << " | "
          << fixed(pa->prefill_seconds / pb->prefill_seconds, 3) << " | "
          << fixed(static_cast<double>(pa->sequence_bytes) / static_cast<double>(pb->sequence_bytes), 4) << " |\n";
      }
    }
  }
  if (!r.options.batches.empty()) {
    o << "\nConcurrent sequences: `batch` random prompts of " << format_count(r.options.batch_prompt_tokens)
      << " tokens submitted together; aggregate decode tok/s = batch / median time of the steps in which every "
         "sequence decodes\n\n";
    o << "| model | batch | decode tok/s | step ms | x batch 1 | peak memory |\n|---|---|---|---|---|---|\n";
    for (const auto& m : r.models) {
      const double base = batch1_rate(m);
      for (const auto& p : m.batches) {
        o << "| " << m.name << " | " << p.batch << " | ";
        if (!p.fits)
          o << "does not fit (" << tokens(p.max_batch) << " sequences fit) | | | |\n";
        else if (!p.error.empty())
          o << "failed: " << p.error << " | | | |\n";
        else
          o << fixed(p.decode_tokens_per_second, 1) << " | " << fixed(p.step_ms, 3) << " | "
            << fixed(p.decode_tokens_per_second / base, 2) << " | " << bytes(p.peak_bytes) << " |\n";
      }
    }
  }
  return o.str();
}

nlohmann::json to_json(const BenchReport& r) {
  nlohmann::json j;
  j["device"] = r.device;
  j["dtype"] = r.dtype;
  j["date"] = r.date;
  j["command"] = r.command;
  const auto& e = r.options.engine;
  j["options"] = {{"contexts", r.options.contexts},
                  {"decode_tokens", r.options.decode_tokens},
                  {"batches", r.options.batches},
                  {"batch_prompt_tokens", r.options.batch_prompt_tokens},
                  {"seed", r.options.seed},
                  {"page_size", e.page_size},
                  {"memory_bytes", e.memory_bytes},
                  {"gpu_memory_fraction", e.gpu_memory_fraction},
                  {"max_step_tokens", e.max_step_tokens},
                  {"prefill_chunk", e.prefill_chunk},
                  {"cuda_graphs", e.cuda_graphs}};
  j["models"] = nlohmann::json::array();
  for (const auto& m : r.models) {
    nlohmann::json jm = {{"name", m.name},
                         {"role", m.role},
                         {"layers", m.layers},
                         {"parameters", m.parameters},
                         {"bytes_per_token", m.bytes_per_token},
                         {"bytes_per_token_formula", m.bytes_per_token_formula},
                         {"bytes_per_slot", m.bytes_per_slot},
                         {"page_size", m.page_size},
                         {"budget_bytes", m.budget_bytes},
                         {"max_context", count(m.max_context)},
                         {"weight_bytes", number(m.weight_bytes)},
                         {"warmup_tokens", m.warmup_tokens},
                         {"warmup_prefill_seconds", number(m.warmup_prefill_seconds)}};
    jm["contexts"] = nlohmann::json::array();
    for (const auto& p : m.contexts)
      jm["contexts"].push_back({{"context", p.context},
                                {"fits", p.fits},
                                {"max_context", count(p.max_context)},
                                {"prefill_seconds", number(p.prefill_seconds)},
                                {"prefill_tokens_per_second", number(p.prefill_tokens_per_second())},
                                {"tpot_ms", number(p.tpot_ms)},
                                {"tpot_mean_ms", number(p.tpot_mean_ms)},
                                {"decoded", p.decoded},
                                {"sequence_bytes", p.sequence_bytes},
                                {"pool_bytes", p.pool_bytes},
                                {"peak_bytes", number(p.peak_bytes)},
                                {"error", p.error}});
    jm["batches"] = nlohmann::json::array();
    for (const auto& p : m.batches)
      jm["batches"].push_back({{"batch", p.batch},
                               {"prompt_tokens", p.prompt_tokens},
                               {"fits", p.fits},
                               {"max_batch", count(p.max_batch)},
                               {"timed_steps", p.timed_steps},
                               {"step_ms", number(p.step_ms)},
                               {"decode_tokens_per_second", number(p.decode_tokens_per_second)},
                               {"peak_bytes", number(p.peak_bytes)},
                               {"error", p.error}});
    j["models"].push_back(std::move(jm));
  }
  return j;
}

namespace {

// One chart's SVG as an element placed at x = `left` inside the combined picture: the XML declaration dropped, the
// namespace moved to the outer element and the clip-path id made unique.
std::string nested(std::string svg, int left, const std::string& id_suffix) {
  if (svg.rfind("<?xml", 0) == 0) svg.erase(0, svg.find('\n') + 1);
  const std::string ns = "<svg xmlns=\"http://www.w3.org/2000/svg\" ";
  if (svg.rfind(ns, 0) == 0) svg.replace(0, ns.size(), "<svg x=\"" + std::to_string(left) + "\" y=\"0\" ");
  for (size_t pos = 0; (pos = svg.find("plot-area", pos)) != std::string::npos; pos += 9 + id_suffix.size())
    svg.insert(pos + 9, id_suffix);
  return svg;
}

}  // namespace

Result<std::string> to_svg(const BenchReport& r) {
  plot::LineChart tpot, memory;
  tpot.title = "Decode time per token, batch 1 (" + r.device + ")";
  tpot.x_label = "context (tokens)";
  tpot.y_label = "TPOT (ms)";
  tpot.x_scale = plot::Scale::kLog2;
  tpot.y_scale = plot::Scale::kLog10;
  memory.title = "Memory per sequence against context";
  memory.x_label = "context (tokens)";
  memory.y_label = "GiB";
  memory.x_scale = plot::Scale::kLog2;
  memory.y_scale = plot::Scale::kLog10;
  tpot.width = memory.width = 960;  // room for the legend's model names
  bool any = false;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  for (const auto& m : r.models) {
    plot::Series t{m.name, {}, {}, true}, s{m.name + " (pools)", {}, {}, true}, peak{m.name + " (peak)", {}, {}, true};
    for (const auto& p : m.contexts) {
      if (!p.fits || !p.error.empty()) continue;
      any = true;
      t.x.push_back(static_cast<double>(p.context));
      t.y.push_back(p.tpot_ms);
      s.x.push_back(static_cast<double>(p.context));
      s.y.push_back(static_cast<double>(p.sequence_bytes) / kGiB);
      peak.x.push_back(static_cast<double>(p.context));
      peak.y.push_back(p.peak_bytes / kGiB);
    }
    tpot.series.push_back(std::move(t));
    memory.series.push_back(std::move(s));
    if (std::any_of(peak.y.begin(), peak.y.end(), [](double v) { return std::isfinite(v); }))
      memory.series.push_back(std::move(peak));
  }
  if (!any) return make_error("bench: no context point was measured, so there is nothing to plot");
  HYLO_TRY(std::string left, plot::render_svg(tpot));
  HYLO_TRY(std::string right, plot::render_svg(memory));
  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\""
    << tpot.width + memory.width << "\" height=\"" << std::max(tpot.height, memory.height) << "\" viewBox=\"0 0 "
    << tpot.width + memory.width << " " << std::max(tpot.height, memory.height) << "\">\n"
    << nested(left, 0, "-tpot") << nested(right, tpot.width, "-memory") << "</svg>\n";
  return o.str();
}

Status write_svg_file(const std::filesystem::path& path, const BenchReport& report) {
  HYLO_TRY(std::string svg, to_svg(report));
  return write_file_atomic(path, svg);
}

}  // namespace hylo::bench
