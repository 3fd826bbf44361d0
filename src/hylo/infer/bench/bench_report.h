// `hylo bench` output: a markdown report (tables), JSON for machines, and an SVG with two charts side by side --
// decode TPOT and memory per sequence against context length, every model one line on each.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

#include "hylo/core/result.h"
#include "hylo/infer/bench/bench.h"

namespace hylo::bench {

std::string to_markdown(const BenchReport& report);
// Fields as in bench.h; NaN becomes null, INT64_MAX (no limit) becomes null as well.
nlohmann::json to_json(const BenchReport& report);
// Errors: no context point with a measurement.
Result<std::string> to_svg(const BenchReport& report);
Status write_svg_file(const std::filesystem::path& path, const BenchReport& report);

}  // namespace hylo::bench
