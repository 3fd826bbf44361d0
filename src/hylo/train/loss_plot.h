// The loss curves of one training stage as an SVG beside its checkpoints: training loss (per logged window) and
// held-out loss against the optimizer step, read back from the stage's metrics.jsonl (so a resumed run plots
// the whole stage, not only its own part).
#pragma once

#include <filesystem>
#include <string>

#include "hylo/core/result.h"

namespace hylo::train {

Status write_loss_plot(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& svg,
                       const std::string& title);

}  // namespace hylo::train
