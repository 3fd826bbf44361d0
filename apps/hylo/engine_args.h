// The engine's command-line flags, shared by every subcommand that runs on the engine (generate, perplexity, chat,
// bench): parsed in one place so that they mean the same everywhere (header-only: apps/hylo is one executable).
//
//   --page-size N          tokens per page of the MLA latent / GQA KV cache
//   --gpu-memory X         the pools' share of the GPU: a fraction of the free device memory (0 < X <= 1) or a size
//                          in bytes ("40G", "512MiB", "1073741824")
//   --memory-bytes B       the pools' size in bytes (CPU or GPU); wins over --gpu-memory
//   --max-sequences N      sequences running at once (live state slots)
//   --max-step-tokens N    tokens per engine step (decode tokens + prefill chunks)
//   --prefill-chunk N      most prompt tokens of one sequence per step
//   --prefix-snapshots N   recurrent-state snapshot slots for prefix reuse (0: off)
//   --no-cuda-graphs       run decode steps eagerly
//
// Without --memory-bytes on the CPU the pools get what the command's sequences need (at most 4 GiB): a CPU run of
// one short prompt should not reserve gigabytes on a shared machine.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "hylo/core/result.h"
#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/engine.h"
#include "hylo/model/causal_lm.h"

namespace hylo::cli {

// "1073741824", "512M", "512MiB", "40G", "1.5GB" (K/M/G/T are powers of 1024 with or without "iB"/"B").
// Errors name `option`.
inline int64_t parse_byte_size(const std::string& text, const std::string& option) {
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  if (used == 0 || scale == 0 || !(value > 0) || !std::isfinite(value))
    throw Error(option + ": '" + text + "' is not a positive size in bytes (e.g. 1073741824, 512M, 40G)");
  const double bytes = value * scale;
  if (bytes >= 9.0e18) throw Error(option + ": '" + text + "' is too large");
  return static_cast<int64_t>(bytes);
}

struct EngineArgs {
  int64_t page_size = engine::EngineOptions{}.page_size;
  std::string gpu_memory;     // fraction or bytes; empty: EngineOptions' default fraction
  std::string memory_bytes;   // empty: see the header comment
  int64_t max_sequences = 0;  // 0: the command's default
  int64_t max_step_tokens = engine::EngineOptions{}.max_step_tokens;
  int64_t prefill_chunk = engine::EngineOptions{}.prefill_chunk;
  int64_t prefix_snapshots = -1;  // -1: the command's default
  bool no_cuda_graphs = false;
};

inline void add_engine_options(CLI::App& app, EngineArgs& a) {
  auto* g = app.add_option_group("engine", "inference engine (memory pools and scheduling)");
  g->add_option("--page-size", a.page_size, "tokens per page of the latent / KV cache")->capture_default_str();
  g->add_option("--gpu-memory", a.gpu_memory,
                "GPU memory for the pools: a fraction of the free memory (e.g. 0.9) or bytes (e.g. 40G)");
  g->add_option("--memory-bytes", a.memory_bytes, "memory for the pools in bytes (e.g. 2G); CPU default: what the "
                                                  "sequences need, at most 4 GiB");
  g->add_option("--max-sequences", a.max_sequences, "most sequences running at once");
  g->add_option("--max-step-tokens", a.max_step_tokens, "tokens per engine step")->capture_default_str();
  g->add_option("--prefill-chunk", a.prefill_chunk, "most prompt tokens of one sequence per step")
      ->capture_default_str();
  g->add_option("--prefix-snapshots", a.prefix_snapshots, "recurrent-state snapshot slots for prefix reuse (0: off)");
  g->add_flag("--no-cuda-graphs", a.no_cuda_graphs, "run decode steps without CUDA graphs");
}

// EngineOptions from the flags, with the memory budget as given (memory_bytes 0: the GPU fraction rule) and the
// command's defaults for max_sequences and prefix_snapshots. `cuda`: whether the model runs on a GPU.
inline engine::EngineOptions engine_options_from_flags(const EngineArgs& a, bool cuda, int64_t default_sequences,
                                                       int64_t default_snapshots) {
  engine::EngineOptions o;
  o.page_size = a.page_size;
  o.max_sequences = a.max_sequences > 0 ? a.max_sequences : default_sequences;
  o.max_step_tokens = a.max_step_tokens;
  o.prefill_chunk = a.prefill_chunk;
  o.prefix_snapshots = a.prefix_snapshots >= 0 ? a.prefix_snapshots : default_snapshots;
  o.cuda_graphs = !a.no_cuda_graphs;
  o.state_dtype = at::kFloat;
  if (!a.memory_bytes.empty()) {
    o.memory_bytes = parse_byte_size(a.memory_bytes, "--memory-bytes");
  } else if (!a.gpu_memory.empty()) {
    if (!cuda) throw Error("--gpu-memory: the model runs on the CPU; give --memory-bytes instead");
    // A plain number up to 1 is a fraction; anything else (a larger number, or one with a unit) is bytes.
    const std::string& g = a.gpu_memory;
    size_t used = 0;
    double f = 0;
    try {
      f = std::stod(g, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == g.size() && f > 0.0 && f <= 1.0)
      o.gpu_memory_fraction = f;
    else
      o.memory_bytes = parse_byte_size(g, "--gpu-memory");
  }
  o.validate();
  return o;
}

// engine_options_from_flags for one model; on the CPU without --memory-bytes the pools get what
// `default_sequences` sequences of `tokens_per_sequence` tokens need (at most 4 GiB). `exact_on_gpu`: a GPU without
// a budget flag gets exactly that need too (no cap) instead of its fraction of free memory -- for commands whose
// whole workload is known up front (perplexity), so that the allocator's peak says what the work costs.
inline engine::EngineOptions engine_options(const EngineArgs& a, const CausalLM& model, int64_t default_sequences,
                                            int64_t default_snapshots, int64_t tokens_per_sequence,
                                            bool exact_on_gpu = false) {
  const bool cuda = model.options().device().is_cuda();
  engine::EngineOptions o = engine_options_from_flags(a, cuda, default_sequences, default_snapshots);
  if (cuda && exact_on_gpu && o.memory_bytes == 0 && a.gpu_memory.empty()) {
    o.memory_bytes = std::max<int64_t>(1, engine::pool_bytes_needed(model, o, tokens_per_sequence, o.max_sequences));
    return o;
  }
  if (!cuda && o.memory_bytes == 0) {
    const int64_t need = engine::pool_bytes_needed(model, o, tokens_per_sequence, o.max_sequences);
    o.memory_bytes = std::min<int64_t>(std::max<int64_t>(need, 1), int64_t{4} << 30);
  }
  return o;
}

}  // namespace hylo::cli
