// Autoregressive generation over a CausalLM: the prompt is prefilled in one forward into a ModelState, then
// one token is decoded per step from that state. Generation stops at an end-of-sequence id, after
// max_new_tokens, or when a stop string appears in the decoded text (the stop string itself is never emitted).
// Text is streamed through tok::StreamDecoder, so callbacks only ever see complete UTF-8.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hylo/infer/sampler.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"

namespace hylo {

struct GenerateOptions {
  SamplingParams sampling;
  int64_t max_new_tokens = 256;
  std::vector<std::string> stop_strings;  // matched on the decoded text; needs a tokenizer
  std::vector<int64_t> extra_eos_ids;     // stop ids besides the defaults below
  bool use_default_eos = true;            // the tokenizer's eos_ids() and the config's eos_token_ids
  bool skip_special_tokens = true;        // in the decoded text
};

enum class StopReason { kEos, kLength, kStopString };
const char* stop_reason_name(StopReason reason);  // "eos", "length", "stop_string"

struct GenerateResult {
  std::vector<int64_t> ids;   // generated ids; the EOS id that ended generation is included, as HF does
  std::string text;           // decoded generated text, cut before a stop string
  StopReason stop_reason = StopReason::kLength;
  int64_t prompt_tokens = 0;
  int64_t decode_steps = 0;            // single-token forwards after the prefill
  double prefill_seconds = 0.0;        // prompt forward + first token choice = time to first token
  double decode_seconds = 0.0;         // everything after the first token
  double time_to_first_token() const { return prefill_seconds; }
  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Called with each newly completed piece of text.
using TextCallback = std::function<void(std::string_view text)>;

// Holds back streamed text that could be the beginning of a stop string, and cuts the text at the first
// complete stop string. Text is released as soon as it can no longer be part of one.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stop_strings);
  // Appends newly decoded text; returns what is safe to emit now. Once a stop string is complete, stopped()
  // turns true and the returned text ends right before it.
  std::string push(std::string_view text);
  // At the end of generation without a stop: the text still held back.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// Throws hylo::Error for an empty prompt, an id outside the vocabulary, max_new_tokens < 0, or stop strings without
// a tokenizer (both generation loops check the same way).
void check_generate_input(const ModelConfig& config, const tok::Tokenizer* tokenizer, std::span<const int64_t> prompt,
                          const GenerateOptions& options);

// The ids that end generation: options.extra_eos_ids, plus (use_default_eos) the config's eos_token_ids and the
// tokenizer's eos_ids() when there is a tokenizer.
std::vector<int64_t> generation_stop_ids(const ModelConfig& config, const tok::Tokenizer* tokenizer,
                                         const GenerateOptions& options);

// Generated ids -> streamed text: complete UTF-8 pieces (tok::StreamDecoder), held back and cut at stop strings
// (StopStringFilter); each released piece is appended to `text` and passed to on_text. Without a tokenizer it
// produces no text. Both generation loops (the reference below and the engine's, engine_generate.h) use it.
class GeneratedText {
 public:
  GeneratedText(const tok::Tokenizer* tokenizer, const GenerateOptions& options, std::string& text,
                const TextCallback& on_text);
  // Feeds one generated id; returns true once a stop string is complete (generation should end).
  bool push(int64_t id);
  // At the end of generation: releases what is still held; returns true when that completes a stop string.
  bool finish();
  bool stopped() const { return stop_filter_.stopped(); }

 private:
  void emit(const std::string& piece);
  std::optional<tok::StreamDecoder> decoder_;
  StopStringFilter stop_filter_;
  std::string& text_;
  TextCallback on_text_;
};

// prompt: token ids (with BOS / chat template already applied). tokenizer may be null when no text is
// wanted (no stop strings then; the EOS ids come from the config alone).
GenerateResult generate(CausalLM& model, const tok::Tokenizer* tokenizer, std::span<const int64_t> prompt,
                        const GenerateOptions& options, const TextCallback& on_text = {});

}  // namespace hylo
