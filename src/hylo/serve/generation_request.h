// A parsed OpenAI request -> the engine request: prompt ids (chat template, text with the tokenizer's BOS, or ids
// as given), the server's limits (prompt length, max_tokens, the engine's context per sequence), sampling, stop
// ids and stop strings. Every refusal is an ApiError saying what fits (400, code context_length_exceeded for
// length limits).
#pragma once

#include <cstdint>
#include <vector>

#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/serve/async_engine.h"
#include "hylo/serve/openai_request.h"

namespace hylo::serve {

struct GenerationLimits {
  int64_t context_tokens = 0;             // prompt + completion tokens one sequence may hold
  int64_t max_prompt_tokens = 0;          // 0: only the context
  int64_t max_tokens_limit = 0;           // largest max_tokens; also the cap of chat's default
  int64_t default_completion_tokens = 0;  // completions without max_tokens
  int64_t vocab_size = 0;                 // prompt ids must be below it
};

// eos_ids: the ids that end generation (unless the request asks ignore_eos). Throws ApiError.
GenerationRequest make_generation_request(const CompletionRequest& request, const tok::Tokenizer& tokenizer,
                                          const std::vector<int64_t>& eos_ids, const GenerationLimits& limits);

}  // namespace hylo::serve
