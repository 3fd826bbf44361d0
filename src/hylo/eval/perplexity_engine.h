// Perplexity on the inference engine (infer/engine/engine.h): the windows of perplexity.h, each one engine request
// with prompt_logprobs, all queued at once so that the engine batches them (continuous batching, chunked prefill).
// Same windows, same definitions, same result fields as the reference perplexity(CausalLM&, ...), which stays
// beside it as the readable form; tests compare the two.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "hylo/eval/perplexity.h"
#include "hylo/infer/engine/engine.h"

namespace hylo::eval {

// The engine must have no other work queued. on_window(done, total) is called as windows finish (in any order).
PerplexityResult perplexity(engine::Engine& engine, const std::vector<int64_t>& ids, const PerplexityOptions& options,
                            const std::function<void(int64_t, int64_t)>& on_window = {});

}  // namespace hylo::eval
