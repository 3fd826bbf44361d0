#include "hylo/infer/generate.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "hylo/core/result.h"

namespace hylo {

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kEos: return "eos";
    case StopReason::kLength: return "length";
    case StopReason::kStopString: return "stop_string";
  }
  return "?";
}

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens) / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(decode_steps) / decode_seconds : 0.0;
}

// ---- StopStringFilter -------------------------------------------------------------------------------------

StopStringFilter::StopStringFilter(std::vector<std::string> stop_strings) {
  for (auto& s : stop_strings)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopStringFilter::push(std::string_view text) {
  if (stopped_) return {};
  held_.append(text);
  // Everything before held_ was released only when no stop string could start in it, so a stop string
  // can only lie inside held_.
  std::optional<size_t> first;
  for (const auto& s : stops_) {
    const size_t pos = held_.find(s);
    if (pos != std::string::npos && (!first || pos < *first)) first = pos;
  }
  if (first) {
    std::string out = held_.substr(0, *first);
    held_.clear();
    stopped_ = true;
    return out;
  }
  // Keep the longest tail of held_ that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len)
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::flush() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

// ---- input checks, stop ids and streamed text ---------------------------------------------------------------

void check_generate_input(const ModelConfig& config, const tok::Tokenizer* tokenizer, std::span<const int64_t> prompt,
                          const GenerateOptions& options) {
  if (prompt.empty()) throw Error("generate: the prompt has no tokens (give a prompt, or ids including BOS)");
  if (options.max_new_tokens < 0)
    throw Error("generate: max_new_tokens must be >= 0, got " + std::to_string(options.max_new_tokens));
  if (!options.stop_strings.empty() && tokenizer == nullptr)
    throw Error("generate: stop strings need a tokenizer to decode text, and this model has none");
  const int64_t vocab = config.vocab_size;
  for (int64_t id : prompt)
    if (id < 0 || id >= vocab)
      throw Error("generate: prompt id " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(vocab) + ")");
}

std::vector<int64_t> generation_stop_ids(const ModelConfig& config, const tok::Tokenizer* tokenizer,
                                         const GenerateOptions& options) {
  std::set<int64_t> eos(options.extra_eos_ids.begin(), options.extra_eos_ids.end());
  if (options.use_default_eos) {
    eos.insert(config.eos_token_ids.begin(), config.eos_token_ids.end());
    if (tokenizer != nullptr)
      for (int32_t id : tokenizer->eos_ids()) eos.insert(id);
  }
  return {eos.begin(), eos.end()};
}

GeneratedText::GeneratedText(const tok::Tokenizer* tokenizer, const GenerateOptions& options, std::string& text,
                             const TextCallback& on_text)
    : stop_filter_(options.stop_strings), text_(text), on_text_(on_text) {
  if (tokenizer != nullptr) decoder_.emplace(*tokenizer, options.skip_special_tokens);
}

void GeneratedText::emit(const std::string& piece) {
  if (piece.empty()) return;
  text_ += piece;
  if (on_text_) on_text_(piece);
}

bool GeneratedText::push(int64_t id) {
  if (!decoder_ || stop_filter_.stopped()) return stop_filter_.stopped();
  emit(stop_filter_.push(decoder_->push(static_cast<int32_t>(id))));
  return stop_filter_.stopped();
}

bool GeneratedText::finish() {
  if (!decoder_ || stop_filter_.stopped()) return false;
  emit(stop_filter_.push(decoder_->flush()));
  if (stop_filter_.stopped()) return true;
  emit(stop_filter_.flush());
  return false;
}

// ---- generate ---------------------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

GenerateResult generate(CausalLM& model, const tok::Tokenizer* tokenizer, std::span<const int64_t> prompt,
                        const GenerateOptions& options, const TextCallback& on_text) {
  check_generate_input(model.config(), tokenizer, prompt, options);
  const std::vector<int64_t> stop_ids = generation_stop_ids(model.config(), tokenizer, options);
  const std::set<int64_t> eos(stop_ids.begin(), stop_ids.end());

  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  if (options.max_new_tokens == 0) return result;

  c10::InferenceMode inference_mode;
  Sampler sampler(options.sampling);
  GeneratedText text(tokenizer, options, result.text, on_text);

  const auto long_options = at::TensorOptions().dtype(at::kLong).device(model.options().device());
  std::vector<int64_t> history(prompt.begin(), prompt.end());
  const int64_t total = result.prompt_tokens + options.max_new_tokens;
  std::unique_ptr<ModelState> state = model.new_state(1, total);

  // Prefill: the whole prompt in one forward; only the last position's logits are needed.
  const auto t_start = Clock::now();
  at::Tensor ids = at::tensor(history, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(long_options);  // [1, T]
  at::Tensor hidden = model.forward_hidden(ids, state.get());                                 // [1, T, D]
  at::Tensor logits = model.lm_head(hidden.select(1, hidden.size(1) - 1));                    // [1, V] fp32
  int64_t next = sampler.next(logits, history);  // .item() inside synchronises the device
  result.prefill_seconds = seconds_since(t_start);

  const auto t_decode = Clock::now();
  while (true) {
    result.ids.push_back(next);
    history.push_back(next);
    if (eos.count(next)) {
      result.stop_reason = StopReason::kEos;
      break;
    }
    if (text.push(next)) {
      result.stop_reason = StopReason::kStopString;
      break;
    }
    if (static_cast<int64_t>(result.ids.size()) >= options.max_new_tokens) {
      result.stop_reason = StopReason::kLength;
      break;
    }
    at::Tensor step = at::full({1, 1}, next, long_options);  // [1, 1]
    logits = model.forward(step, state.get());               // [1, 1, V] fp32
    next = sampler.next(logits.select(1, 0), history);
    ++result.decode_steps;
  }
  if (text.finish()) result.stop_reason = StopReason::kStopString;
  result.decode_seconds = seconds_since(t_decode);
  return result;
}

}  // namespace hylo
