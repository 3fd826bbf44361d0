// Chat template families rendered natively (see chat_template.h). Each renderer follows its Jinja template
// line by line for the messages hylo sends (system/user/assistant, plus tool results where the template
// has them); Jinja's `trim` and Python's str.strip() remove Unicode whitespace, reproduced by strip_ws.
#include "hylo/io/tokenizer/chat_template.h"

#include <regex>

#include "hylo/io/tokenizer/unicode.h"

namespace hylo::tok {
namespace {

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// Python str.strip()/lstrip()/rstrip() without arguments: Unicode whitespace (plus the separators
// U+001C..U+001F that Python also counts).
bool py_space(uint32_t cp) { return is_white_space(cp) || (cp >= 0x1C && cp <= 0x1F); }
std::string strip_ws(const std::string& s, bool left = true, bool right = true) {
  std::size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      std::size_t i = b;
      if (!py_space(utf8_next(s, i))) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      const std::size_t st = utf8_prev(s, e, b);
      std::size_t i = st;
      if (!py_space(utf8_next(s, i))) break;
      e = st;
    }
  }
  return s.substr(b, e - b);
}
// str.strip('\n') and friends.
std::string strip_nl(const std::string& s, bool left, bool right) {
  std::size_t b = 0, e = s.size();
  if (left)
    while (b < e && s[b] == '\n') ++b;
  if (right)
    while (e > b && s[e - 1] == '\n') --e;
  return s.substr(b, e - b);
}

Status check_roles(const std::vector<ChatMessage>& messages, std::initializer_list<const char*> allowed, const char* family) {
  for (const auto& m : messages) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || m.role == a;
    if (!ok) return make_error(std::string("chat template (") + family + "): unsupported message role '" + m.role + "'");
  }
  return {};
}

std::string render_chatml(const ChatTemplateInfo& info, const std::vector<ChatMessage>& msgs, bool gen) {
  std::string out;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    if (i == 0 && msgs[0].role != "system" && !info.default_system.empty())
      out += "<|im_start|>system\n" + info.default_system + "<|im_end|>\n";
    out += "<|im_start|>" + msgs[i].role + "\n" + msgs[i].content + "<|im_end|>\n";
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_qwen3(const std::vector<ChatMessage>& msgs, bool gen) {
  std::string out;
  if (!msgs.empty() && msgs[0].role == "system") out += "<|im_start|>system\n" + msgs[0].content + "<|im_end|>\n";
  // The last user turn that is not a tool response: assistant turns after it show their reasoning.
  std::size_t last_query = msgs.empty() ? 0 : msgs.size() - 1;
  for (std::size_t k = msgs.size(); k-- > 0;) {
    const auto& m = msgs[k];
    if (m.role == "user" && !(m.content.starts_with("<tool_response>") && m.content.ends_with("</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    const bool last = i + 1 == msgs.size();
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      if (const auto close = m.content.find("</think>"); close != std::string::npos) {
        content = strip_nl(m.content.substr(m.content.rfind("</think>") + 8), true, false);
        std::string before = strip_nl(m.content.substr(0, close), false, true);
        const auto open = before.rfind("<think>");
        reasoning = strip_nl(open == std::string::npos ? before : before.substr(open + 7), true, false);
      }
      if (i > last_query && (last || !reasoning.empty()))
        out += "<|im_start|>assistant\n<think>\n" + strip_nl(reasoning, true, true) + "\n</think>\n\n" +
               strip_nl(content, true, false);
      else
        out += "<|im_start|>assistant\n" + content;
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (last || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(const ChatTemplateInfo& info, const std::vector<ChatMessage>& msgs, bool gen) {
  std::string out = info.bos_token;
  std::size_t first = 0;
  if (info.llama3_dates) {
    std::string system;
    if (!msgs.empty() && msgs[0].role == "system") {
      system = strip_ws(msgs[0].content);
      first = 1;
    }
    out += "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: " +
           info.date_string + "\n\n" + system + "<|eot_id|>";
  }
  for (std::size_t i = first; i < msgs.size(); ++i)
    out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n" + strip_ws(msgs[i].content) + "<|eot_id|>";
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

Result<std::string> render_inst(const ChatTemplateInfo& info, const std::vector<ChatMessage>& msgs, bool llama2) {
  std::size_t first = 0;
  std::string system;
  bool has_system = false;
  if (llama2 && !msgs.empty() && msgs[0].role == "system") {
    system = msgs[0].content;
    has_system = true;
    first = 1;
  }
  std::string out = llama2 ? "" : info.bos_token;
  for (std::size_t i = first; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    if ((m.role == "user") != ((i - first) % 2 == 0))
      return make_error("chat template ([INST]): conversation roles must alternate user/assistant/user/assistant/...");
    std::string content = m.content;
    if (llama2 && i == first && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    if (m.role == "user") {
      out += llama2 ? info.bos_token + "[INST] " + strip_ws(content) + " [/INST]" : "[INST] " + content + " [/INST]";
    } else if (m.role == "assistant") {
      out += llama2 ? " " + strip_ws(content) + " " + info.eos_token : content + info.eos_token;
    } else {
      return make_error("chat template ([INST]): only user and assistant roles are supported (and a leading system for Llama-2)");
    }
  }
  return out;
}

}  // namespace

Result<ChatTemplateInfo> detect_chat_template(const std::string& t, const std::string& bos_token, const std::string& eos_token) {
  ChatTemplateInfo info;
  info.bos_token = bos_token;
  info.eos_token = eos_token;
  if (contains(t, "<|start_header_id|>") && contains(t, "<|eot_id|>")) {
    info.family = ChatFamily::kLlama3;
    if (contains(t, "Cutting Knowledge Date")) {
      info.llama3_dates = true;
      std::smatch m;
      static const std::regex kDate(R"re(set date_string = "([^"]*)")re");
      info.date_string = std::regex_search(t, m, kDate) ? m[1].str() : "26 Jul 2024";
    }
    return info;
  }
  if (contains(t, "<|im_start|>")) {
    if (contains(t, "<think>") || contains(t, "reasoning_content")) {
      info.family = ChatFamily::kQwen3;
      return info;
    }
    info.family = ChatFamily::kChatML;
    // A default system prompt written when the conversation does not start with one.
    static const std::regex kDefaultSystem(R"re(<\|im_start\|>system\n([^<]*)<\|im_end\|>)re");
    std::smatch m;
    if (contains(t, "!= 'system'") && std::regex_search(t, m, kDefaultSystem)) info.default_system = m[1].str();
    return info;
  }
  if (contains(t, "[INST]")) {
    info.family = contains(t, "<<SYS>>") ? ChatFamily::kLlama2 : ChatFamily::kMistral;
    return info;
  }
  return make_error("unrecognised chat template: looked for ChatML (<|im_start|>), Llama-3 (<|start_header_id|>, "
                    "<|eot_id|>) and [INST] (Llama-2/Mistral) markers and found none");
}

Result<std::string> render_chat(const ChatTemplateInfo& info, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) {
  switch (info.family) {
    case ChatFamily::kChatML:
      HYLO_CHECK_OK(check_roles(messages, {"system", "user", "assistant", "tool"}, "ChatML"));
      return render_chatml(info, messages, add_generation_prompt);
    case ChatFamily::kQwen3:
      HYLO_CHECK_OK(check_roles(messages, {"system", "user", "assistant", "tool"}, "Qwen3"));
      return render_qwen3(messages, add_generation_prompt);
    case ChatFamily::kLlama3:
      HYLO_CHECK_OK(check_roles(messages, {"system", "user", "assistant"}, "Llama-3"));
      return render_llama3(info, messages, add_generation_prompt);
    case ChatFamily::kLlama2:
      return render_inst(info, messages, true);
    case ChatFamily::kMistral:
      return render_inst(info, messages, false);
  }
  return make_error("chat template: unknown family");
}

}  // namespace hylo::tok
