#include "hylo/serve/generation_request.h"

#include <algorithm>
#include <random>
#include <string>

namespace hylo::serve {

GenerationRequest make_generation_request(const CompletionRequest& r, const tok::Tokenizer& tokenizer,
                                          const std::vector<int64_t>& eos_ids, const GenerationLimits& limits) {
  std::vector<int64_t> prompt;
  if (r.chat) {
    if (!tokenizer.has_chat_template())
      throw bad_request("this model's tokenizer has no chat template; use /v1/completions", "messages");
    auto rendered = tokenizer.apply_chat_template(r.messages, /*add_generation_prompt=*/true);
    if (!rendered.ok()) throw bad_request("chat template: " + rendered.error(), "messages");
    const auto ids = tokenizer.encode(rendered.value(), /*add_special_tokens=*/false);
    prompt.assign(ids.begin(), ids.end());
  } else if (!r.prompt_ids.empty()) {
    const int64_t vocab = limits.vocab_size;
    for (int64_t id : r.prompt_ids)
      if (id >= vocab)
        throw bad_request("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                          std::to_string(vocab) + ")", "prompt");
    prompt = r.prompt_ids;
  } else {
    const auto ids = tokenizer.encode(r.prompt, /*add_special_tokens=*/true);
    prompt.assign(ids.begin(), ids.end());
  }
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt == 0) throw bad_request("the prompt has no tokens", r.chat ? "messages" : "prompt");
  if (limits.max_prompt_tokens > 0 && n_prompt > limits.max_prompt_tokens)
    throw api_error(400, "The prompt has " + std::to_string(n_prompt) + " tokens; this server accepts at most " +
                             std::to_string(limits.max_prompt_tokens) + " prompt tokens (--max-prompt-tokens)",
                    "invalid_request_error", "context_length_exceeded");
  const int64_t room = limits.context_tokens - n_prompt;  // completion tokens that fit after the prompt
  if (room < 1)
    throw api_error(400, "This model's maximum context length is " + std::to_string(limits.context_tokens) +
                             " tokens, but the prompt has " + std::to_string(n_prompt) +
                             " tokens; at most " + std::to_string(limits.context_tokens - 1) +
                             " prompt tokens fit (with one completion token)",
                    "invalid_request_error", "context_length_exceeded");
  int64_t max_tokens = 0;
  if (r.max_tokens) {
    max_tokens = *r.max_tokens;
    if (max_tokens < 1) throw bad_request("'max_tokens' must be at least 1", "max_tokens");
    if (max_tokens > limits.max_tokens_limit)
      throw bad_request("'max_tokens' is " + std::to_string(max_tokens) + "; this server allows at most " +
                        std::to_string(limits.max_tokens_limit) + " (--max-tokens-limit)", "max_tokens");
    if (max_tokens > room)
      throw api_error(400, "This model's maximum context length is " + std::to_string(limits.context_tokens) +
                               " tokens; you requested " + std::to_string(n_prompt + max_tokens) + " tokens (" +
                               std::to_string(n_prompt) + " in the prompt, " + std::to_string(max_tokens) +
                               " for the completion): at most " + std::to_string(room) +
                               " completion tokens fit after this prompt",
                      "invalid_request_error", "context_length_exceeded");
  } else {
    max_tokens = std::min({r.chat ? limits.max_tokens_limit : limits.default_completion_tokens,
                           limits.max_tokens_limit, room});
  }

  GenerationRequest g;
  engine::Request& er = g.request;
  er.prompt = std::move(prompt);
  er.max_new_tokens = max_tokens;
  er.sampling.temperature = r.temperature;
  er.sampling.top_p = r.top_p;
  er.sampling.seed = r.seed ? *r.seed : std::random_device{}();  // OpenAI without a seed: a fresh draw each time
  if (!r.ignore_eos) er.stop_ids = eos_ids;
  er.top_logprobs = r.logprobs ? r.top_logprobs : 0;
  g.stop_strings = r.stop;
  return g;
}

}  // namespace hylo::serve
