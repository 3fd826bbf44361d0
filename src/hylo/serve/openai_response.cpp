#include "hylo/serve/openai_response.h"

namespace hylo::serve {

using nlohmann::json;

std::string dump_json(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens}}}};
}

std::string LogprobsBuilder::token_text(int64_t id) const {
  return tok_.decode(std::vector<int32_t>{static_cast<int32_t>(id)}, /*skip_special_tokens=*/false);
}

namespace {
json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}
}  // namespace

void LogprobsBuilder::add(const std::vector<TokenInfo>& tokens, int64_t text_offset) {
  for (const auto& t : tokens) {
    ++count_;
    const std::string text = token_text(t.id);
    if (chat_) {
      json top = json::array();
      for (const auto& alt : t.top) {
        const std::string alt_text = token_text(alt.token);
        top.push_back({{"token", alt_text}, {"logprob", alt.logprob}, {"bytes", bytes_of(alt_text)}});
      }
      content_.push_back({{"token", text}, {"logprob", t.logprob}, {"bytes", bytes_of(text)}, {"top_logprobs", top}});
    } else {
      json top = json::object();
      for (const auto& alt : t.top) top[token_text(alt.token)] = alt.logprob;
      tokens_.push_back(text);
      token_logprobs_.push_back(t.logprob);
      top_.push_back(top);
      offsets_.push_back(text_offset);
    }
  }
}

json LogprobsBuilder::take() {
  json out;
  if (chat_) {
    out = {{"content", std::move(content_)}, {"refusal", nullptr}};
    content_ = json::array();
  } else {
    out = {{"tokens", std::move(tokens_)},
           {"token_logprobs", std::move(token_logprobs_)},
           {"top_logprobs", std::move(top_)},
           {"text_offset", std::move(offsets_)}};
    tokens_ = token_logprobs_ = top_ = offsets_ = json::array();
  }
  return out;
}

namespace {
json finish_json(const std::string& reason) { return reason.empty() ? json(nullptr) : json(reason); }
}  // namespace

json stream_chunk(const AnswerHeader& h, const std::string& delta_text, bool role_first,
                  const std::string& finish_reason, const json& logprobs) {
  json choice = {{"index", 0}, {"logprobs", logprobs}, {"finish_reason", finish_json(finish_reason)}};
  if (h.chat) {
    json delta = json::object();
    if (role_first) delta["role"] = "assistant";
    if (role_first || !delta_text.empty()) delta["content"] = delta_text;
    choice["delta"] = delta;
  } else {
    choice["text"] = delta_text;
  }
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"system_fingerprint", "hylo"},
          {"choices", json::array({choice})}};
}

json usage_chunk(const AnswerHeader& h, const Usage& usage) {
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"system_fingerprint", "hylo"},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

json full_answer(const AnswerHeader& h, const std::string& text, const std::string& finish_reason,
                 const json& logprobs, const Usage& usage) {
  json choice = {{"index", 0}, {"logprobs", logprobs}, {"finish_reason", finish_json(finish_reason)}};
  if (h.chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  else
    choice["text"] = text;
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"system_fingerprint", "hylo"},
          {"choices", json::array({choice})},
          {"usage", usage_json(usage)}};
}

}  // namespace hylo::serve
