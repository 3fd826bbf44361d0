// The report of `hylo eval`: one JSON document holding every model's results, rendered as a markdown table and
// SVG charts (RULER score against context length with every model on one chart; NLL by position in the window).
//
// JSON layout (what report_markdown / write_plots read):
//   {"seed": S, "limit": N, "models": [{"name": str, "path": str,
//     "perplexity": {"file", "context", "stride", "tokens", "predicted", "windows", "nll_mean", "perplexity",
//                    "bytes", "bits_per_byte", "bucket", "nll_by_position": [{"start", "end", "count", "nll"}]},
//     "ruler": {"lengths": [L...], "tasks": {task: {"L": {"score", "samples", "mean_length"}}},
//               "average": {"L": score}},
//     "multiple_choice": {file: {"n", "acc", "acc_norm"}},
//     "cloze": {"file", "n", "acc", "perplexity"},
//     "generation": {file: {"n", "strict_match", "flexible_extract"}}}]}
// Scores are RULER's: mean x 100. Sections a model was not run on are absent.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/core/result.h"

namespace hylo::eval {

std::string report_markdown(const nlohmann::json& report);

// Writes ruler.svg (every model x task; the per-length average when several tasks), ruler_<task>.svg per task,
// and nll_by_position.svg, for the sections present. Returns the files written.
Result<std::vector<std::filesystem::path>> write_plots(const nlohmann::json& report, const std::filesystem::path& dir);

}  // namespace hylo::eval
