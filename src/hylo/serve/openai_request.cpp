#include "hylo/serve/openai_request.h"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

namespace hylo::serve {

using nlohmann::json;

std::string ApiError::to_json() const {
  json error = {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
                {"code", code.empty() ? json(nullptr) : json(code)}};
  // replace: request bodies may carry invalid UTF-8, which must not make the error itself unprintable.
  return json{{"error", error}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiError bad_request(std::string message, std::string param) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

ApiError api_error(int status, std::string message, std::string type, std::string code) {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    case json::value_t::discarded: return "invalid";
    default: return "number";
  }
}

ApiError wrong_type(const std::string& field, const char* expected, const json& got) {
  return bad_request("'" + field + "' must be " + expected + ", got " + type_name(got), field);
}

// A field that is absent or null counts as not given (the openai client sends no nulls, others do).
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number_in(const json& v, const std::string& name, double lo, double hi) {
  if (!v.is_number()) throw wrong_type(name, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad_request("'" + name + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() + "], got " + v.dump(),
                      name);
  return x;
}

int64_t integer_in(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.is_number_integer() && !v.is_number_unsigned()) throw wrong_type(name, "an integer", v);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad_request("'" + name + "' is too large: " + v.dump(), name);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request("'" + name + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                      std::to_string(x), name);
  return x;
}

bool boolean(const json& v, const std::string& name) {
  if (!v.is_boolean()) throw wrong_type(name, "a boolean", v);
  return v.get<bool>();
}

// Chat content: a string, or a list of parts of which only {"type": "text", "text": ...} is understood.
std::string message_content(const json& v, const std::string& name) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw wrong_type(name, "a string or an array of text parts", v);
  std::string text;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string part = name + "[" + std::to_string(i) + "]";
    const json& p = v[i];
    if (!p.is_object()) throw wrong_type(part, "an object", p);
    const json* type = field(p, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      throw bad_request("'" + part + ".type' must be \"text\" (hylo serves text models only)", part + ".type");
    const json* t = field(p, "text");
    if (!t || !t->is_string()) throw wrong_type(part + ".text", "a string", t ? *t : json());
    text += t->get<std::string>();
  }
  return text;
}

std::vector<tok::ChatMessage> parse_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) throw bad_request("'messages' is required", "messages");
  if (!messages->is_array()) throw wrong_type("messages", "an array", *messages);
  if (messages->empty()) throw bad_request("'messages' must not be empty", "messages");
  std::vector<tok::ChatMessage> out;
  for (size_t i = 0; i < messages->size(); ++i) {
    const std::string name = "messages[" + std::to_string(i) + "]";
    const json& m = (*messages)[i];
    if (!m.is_object()) throw wrong_type(name, "an object", m);
    const json* role = field(m, "role");
    if (!role || !role->is_string()) throw wrong_type(name + ".role", "a string", role ? *role : json());
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer")
      throw bad_request("'" + name + ".role' must be system, developer, user or assistant, got \"" + r + "\"",
                        name + ".role");
    const json* content = field(m, "content");
    if (!content) throw bad_request("'" + name + ".content' is required", name + ".content");
    // "developer" is OpenAI's newer name for the system role.
    out.push_back({r == "developer" ? "system" : r, message_content(*content, name + ".content")});
  }
  return out;
}

void parse_prompt(const json& body, CompletionRequest& r) {
  const json* prompt = field(body, "prompt");
  if (!prompt) throw bad_request("'prompt' is required", "prompt");
  if (prompt->is_string()) {
    r.prompt = prompt->get<std::string>();
    return;
  }
  // One prompt only (n prompts would be n completions in one answer; not supported).
  const json* p = prompt;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
    return;
  }
  if (!p->is_array() || p->empty())
    throw wrong_type("prompt", "a string, a list with one string, or a non-empty list of token ids", *prompt);
  for (size_t i = 0; i < p->size(); ++i)
    r.prompt_ids.push_back(integer_in((*p)[i], "prompt[" + std::to_string(i) + "]", 0,
                                      std::numeric_limits<int32_t>::max()));
}

std::vector<std::string> parse_stop(const json& v) {
  std::vector<std::string> stops;
  if (v.is_string()) {
    stops.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 4) throw bad_request("'stop' holds at most 4 strings, got " + std::to_string(v.size()), "stop");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) throw wrong_type("stop[" + std::to_string(i) + "]", "a string", v[i]);
      stops.push_back(v[i].get<std::string>());
    }
  } else {
    throw wrong_type("stop", "a string or an array of strings", v);
  }
  for (const auto& s : stops)
    if (s.empty()) throw bad_request("'stop' strings must not be empty", "stop");
  return stops;
}

// Fields hylo does not implement are accepted at their neutral value only.
void reject_unsupported(const json& body) {
  if (const json* n = field(body, "n"); n && integer_in(*n, "n", 1, 128) != 1)
    throw bad_request("'n' must be 1 (one completion per request)", "n");
  if (const json* b = field(body, "best_of"); b && integer_in(*b, "best_of", 1, 128) != 1)
    throw bad_request("'best_of' must be 1", "best_of");
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (const json* p = field(body, name); p && number_in(*p, name, -2.0, 2.0) != 0.0)
      throw bad_request(std::string("'") + name + "' is not supported (only 0)", name);
  if (const json* e = field(body, "echo"); e && boolean(*e, "echo"))
    throw bad_request("'echo' is not supported", "echo");
  if (const json* t = field(body, "tools"); t && !(t->is_array() && t->empty()))
    throw bad_request("'tools' are not supported", "tools");
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body_text, bool chat) {
  json body = json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) throw bad_request("the request body is not valid JSON");
  if (!body.is_object()) throw bad_request(std::string("the request body must be a JSON object, got ") + type_name(body));

  CompletionRequest r;
  r.chat = chat;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) throw wrong_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }
  if (chat)
    r.messages = parse_messages(body);
  else
    parse_prompt(body, r);
  reject_unsupported(body);

  const int64_t max_any = std::numeric_limits<int32_t>::max();
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (const json* v = field(body, name)) r.max_tokens = integer_in(*v, name, 0, max_any);
  if (const json* v = field(body, "temperature")) r.temperature = number_in(*v, "temperature", 0.0, 2.0);
  if (const json* v = field(body, "top_p")) r.top_p = number_in(*v, "top_p", 0.0, 1.0);
  if (r.top_p <= 0.0) throw bad_request("'top_p' must be > 0", "top_p");
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer() && !v->is_number_unsigned()) throw wrong_type("seed", "an integer", *v);
    r.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }
  if (const json* v = field(body, "stop")) r.stop = parse_stop(*v);
  if (const json* v = field(body, "stream")) r.stream = boolean(*v, "stream");
  if (const json* v = field(body, "stream_options")) {
    if (!v->is_object()) throw wrong_type("stream_options", "an object", *v);
    if (const json* u = field(*v, "include_usage")) r.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (const json* v = field(body, "ignore_eos")) r.ignore_eos = boolean(*v, "ignore_eos");

  // Chat: logprobs is a boolean and top_logprobs the count; completions: logprobs is the count (0..5 in OpenAI,
  // up to 20 here like chat).
  if (chat) {
    if (const json* v = field(body, "logprobs")) r.logprobs = boolean(*v, "logprobs");
    if (const json* v = field(body, "top_logprobs")) {
      r.top_logprobs = integer_in(*v, "top_logprobs", 0, 20);
      if (!r.logprobs && r.top_logprobs > 0)
        throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    }
  } else if (const json* v = field(body, "logprobs")) {
    r.top_logprobs = integer_in(*v, "logprobs", 0, 20);
    r.logprobs = true;
  }
  return r;
}

}  // namespace hylo::serve
