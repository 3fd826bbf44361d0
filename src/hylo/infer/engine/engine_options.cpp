// EngineOptions::validate, MemoryPlan::describe and finish_reason_name (engine.h): the small value types of the
// engine's public API, kept apart from the pools and the scheduler that use them.
#include <cstdio>
#include <limits>
#include <string>

#include "hylo/core/result.h"
#include "hylo/infer/engine/engine.h"

namespace hylo::engine {

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& expected, const std::string& got) {
  throw Error("engine options: " + field + " must be " + expected + ", got " + got);
}

std::string mib(int64_t bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

void EngineOptions::validate() const {
  auto n = [](int64_t v) { return std::to_string(v); };
  if (page_size < 1) bad("page_size", ">= 1", n(page_size));
  if (memory_bytes < 0) bad("memory_bytes", ">= 0 (0: derived from the device)", n(memory_bytes));
  if (!(gpu_memory_fraction > 0.0 && gpu_memory_fraction <= 1.0))
    bad("gpu_memory_fraction", "in (0, 1]", std::to_string(gpu_memory_fraction));
  if (activation_reserve_bytes < 0)
    bad("activation_reserve_bytes", ">= 0 (0: derived from max_step_tokens)", n(activation_reserve_bytes));
  if (max_sequences < 1) bad("max_sequences", ">= 1", n(max_sequences));
  if (max_step_tokens < 1) bad("max_step_tokens", ">= 1", n(max_step_tokens));
  // Every running sequence gets one decode token per step, so a step must hold all of them.
  if (max_step_tokens < max_sequences)
    bad("max_step_tokens", ">= max_sequences (" + n(max_sequences) + ": one decode token per running sequence)",
        n(max_step_tokens));
  // Prefill chunks are rounded down to whole pages, so a chunk shorter than a page would round to nothing.
  if (prefill_chunk < page_size) bad("prefill_chunk", ">= page_size (" + n(page_size) + ")", n(prefill_chunk));
  if (prefix_snapshots < 0) bad("prefix_snapshots", ">= 0", n(prefix_snapshots));
  if (state_dtype != at::kFloat && state_dtype != at::kBFloat16 && state_dtype != at::kDouble)
    bad("state_dtype", "float32 or bfloat16 (float64 for fp64 reference runs)", at::toString(state_dtype));
}

std::string MemoryPlan::describe() const {
  std::string s = "memory plan: budget " + mib(budget_bytes) + ", ";
  if (bytes_per_page > 0) {
    const int64_t page_size = bytes_per_token > 0 ? bytes_per_page / bytes_per_token : 0;
    s += std::to_string(num_pages) + " pages of " + std::to_string(page_size) + " tokens (" +
         std::to_string(bytes_per_page) + " B/page, " + std::to_string(bytes_per_token) + " B/token), ";
  } else {
    s += "no paged layers, ";
  }
  if (bytes_per_slot > 0)
    s += std::to_string(num_slots) + " state slots of " + std::to_string(bytes_per_slot) + " B, ";
  else
    s += "no recurrent layers, ";
  s += "pools " + mib(pool_bytes) + ", max tokens per sequence ";
  s += max_tokens_per_sequence == std::numeric_limits<int64_t>::max() ? std::string("unlimited")
                                                                      : std::to_string(max_tokens_per_sequence);
  return s;
}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "";
    case FinishReason::kEos: return "eos";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "";
}

}  // namespace hylo::engine
