// Chat templates of the model families hylo runs, rendered natively (no Jinja engine): the family is
// recognised from the template text of tokenizer_config.json / GGUF metadata, and each renderer reproduces
// what transformers' apply_chat_template(..., tokenize=False) prints for that template with default args.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::tok {

enum class ChatFamily {
  kChatML,         // Qwen2 / SmolLM2 (optional default system prompt)
  kQwen3,          // ChatML with <think> handling
  kLlama3,         // Llama-3 / 3.1 / 3.2 header ids, optional knowledge-date system block
  kLlama2,         // [INST] ... [/INST] with <<SYS>>
  kMistral,        // [INST] ... [/INST]; a system message is rejected
};

struct ChatTemplateInfo {
  ChatFamily family;
  std::string default_system;  // ChatML default system prompt, if the template has one
  bool llama3_dates = false;   // Llama-3.1/3.2 "Cutting Knowledge Date" block
  std::string date_string;     // the template's default date_string
  std::string bos_token;       // as the template writes it
  std::string eos_token;
};

// Recognises the family of `tmpl`; an unknown template is an error saying what was looked for.
Result<ChatTemplateInfo> detect_chat_template(const std::string& tmpl, const std::string& bos_token,
                                              const std::string& eos_token);
Result<std::string> render_chat(const ChatTemplateInfo& info, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt);

}  // namespace hylo::tok
