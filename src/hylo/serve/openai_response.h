// The JSON shapes of OpenAI's answers: chat.completion(.chunk) and text_completion objects, their logprobs
// blocks (chat: {"content": [{token, logprob, bytes, top_logprobs}]}; completions: {tokens, token_logprobs,
// top_logprobs, text_offset}) and usage. Everything is dumped with invalid UTF-8 replaced, never thrown on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/serve/async_engine.h"

namespace hylo::serve {

std::string dump_json(const nlohmann::json& value);

// Identity of one answer, shared by all of its chunks.
struct AnswerHeader {
  bool chat = false;
  std::string id;        // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;   // unix seconds
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_prompt_tokens = 0;
};
nlohmann::json usage_json(const Usage& usage);

// Collects the logprobs of an answer in the endpoint's format. `text_offset` (completions) needs the
// position in the answer text where each token's text starts; tokens without text get the current length.
class LogprobsBuilder {
 public:
  LogprobsBuilder(const tok::Tokenizer& tokenizer, bool chat) : tok_(tokenizer), chat_(chat) {}
  void add(const std::vector<TokenInfo>& tokens, int64_t text_offset);
  nlohmann::json take();  // the block for the tokens added since the last take()
  bool empty() const { return count_ == 0; }

 private:
  std::string token_text(int64_t id) const;
  const tok::Tokenizer& tok_;
  bool chat_;
  int64_t count_ = 0;
  nlohmann::json content_ = nlohmann::json::array();  // chat
  nlohmann::json tokens_ = nlohmann::json::array(), token_logprobs_ = nlohmann::json::array(),
                 top_ = nlohmann::json::array(), offsets_ = nlohmann::json::array();  // completions
};

// One streamed chunk. delta_text is the new text; role_first adds the assistant role (first chat chunk);
// finish_reason empty = null; logprobs null when not requested.
nlohmann::json stream_chunk(const AnswerHeader& h, const std::string& delta_text, bool role_first,
                            const std::string& finish_reason, const nlohmann::json& logprobs);
// The last chunk of a stream with include_usage: no choices, the usage.
nlohmann::json usage_chunk(const AnswerHeader& h, const Usage& usage);
// A whole (non-streamed) answer.
nlohmann::json full_answer(const AnswerHeader& h, const std::string& text, const std::string& finish_reason,
                           const nlohmann::json& logprobs, const Usage& usage);

}  // namespace hylo::serve
