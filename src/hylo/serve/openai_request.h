// Parsing and checking of OpenAI-style request bodies (/v1/chat/completions and /v1/completions), and the
// error type every endpoint answers with. Parsing is strict about types (a string where a number belongs is a
// 400 naming the field) and lenient about fields it does not use (unknown fields are ignored, as OpenAI does),
// except fields whose non-default value would change the answer in a way hylo cannot honour (n > 1,
// penalties, best_of): those are rejected instead of silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::serve {

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;   // the offending field, or empty
  std::string code;    // e.g. "model_not_found", "context_length_exceeded", or empty

  std::string to_json() const;
};

ApiError bad_request(std::string message, std::string param = {});
ApiError api_error(int status, std::string message, std::string type, std::string code = {});

struct CompletionRequest {
  bool chat = false;
  std::string model;                        // empty: the served model
  std::vector<tok::ChatMessage> messages;   // chat
  std::string prompt;                       // completions, text form
  std::vector<int64_t> prompt_ids;          // completions, token-id form (used as given)
  std::optional<int64_t> max_tokens;        // max_tokens / max_completion_tokens
  double temperature = 1.0;                 // OpenAI's default: sampling
  double top_p = 1.0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;            // up to 4 strings
  bool stream = false;
  bool include_usage = false;               // stream_options.include_usage
  bool logprobs = false;
  int64_t top_logprobs = 0;                 // alternatives per position (0..20)
  bool ignore_eos = false;                  // vLLM's extension: fixed-length answers for benchmarks
};

// Throws ApiError (status 400) naming the field when the body is not valid JSON, not an object, or a field has
// the wrong type or an out-of-range value.
CompletionRequest parse_completion_request(const std::string& body, bool chat);

}  // namespace hylo::serve
