// hylo tokenize --tokenizer PATH [--no-special] [--file F] [--decode]
// Encodes text (stdin, or --file) to ids printed separated by spaces; --decode reads ids and prints the text.
// PATH is a tokenizer.json, a model directory or a GGUF file. --no-special adds no BOS/EOS or template tokens
// when encoding and drops special tokens when decoding.
// Hidden batch modes for tests and tools: --jsonl reads one item per line and writes one JSON line per item
// (encode: a JSON string, or {"hex": "..."} for raw bytes that need not be UTF-8 -> a JSON array of ids;
// decode: a JSON array of ids -> a JSON string); --chat-jsonl reads {"messages": [{"role", "content"}...],
// "add_generation_prompt": bool} per line and writes the rendered chat template as a JSON string.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string file;
  bool no_special = false;
  bool decode = false;
  bool jsonl = false;
  bool chat_jsonl = false;
};

std::string read_input(const std::string& file) {
  if (!file.empty()) return read_text_file(file).value_or_throw();
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

std::string from_hex(const std::string& hex, std::size_t line_no) {
  if (hex.size() % 2) throw Error("--jsonl line " + std::to_string(line_no) + ": 'hex' must have an even length");
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    auto v = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      throw Error("--jsonl line " + std::to_string(line_no) + ": 'hex' has a non-hex digit");
    };
    out.push_back(static_cast<char>(v(hex[i]) * 16 + v(hex[i + 1])));
  }
  return out;
}

std::vector<int32_t> parse_ids(const std::string& text, const tok::Tokenizer& tok) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (*end || v < 0 || v >= tok.vocab_size())
      throw Error("--decode: '" + word + "' is not a token id (0.." + std::to_string(tok.vocab_size() - 1) + ")");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

int run_jsonl(const TokenizeArgs& a, const tok::Tokenizer& tok) {
  std::string line;
  std::size_t line_no = 0;
  std::string out;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) throw Error("--jsonl line " + std::to_string(line_no) + ": not valid JSON");
    if (a.chat_jsonl) {
      std::vector<tok::ChatMessage> msgs;
      for (const auto& m : j.at("messages")) msgs.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
      auto r = tok.apply_chat_template(msgs, j.value("add_generation_prompt", true));
      out = r.ok() ? nlohmann::json(r.value()).dump() : nlohmann::json{{"error", r.error()}}.dump();
    } else if (a.decode) {
      std::vector<int32_t> ids = j.get<std::vector<int32_t>>();
      out = nlohmann::json(tok.decode(ids, a.no_special)).dump();
    } else {
      const std::string text = j.is_string() ? j.get<std::string>() : from_hex(j.at("hex").get<std::string>(), line_no);
      out = nlohmann::json(tok.encode(text, !a.no_special)).dump();
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  std::fflush(stdout);
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  app.add_option("--tokenizer", a->tokenizer, "tokenizer.json, model directory or .gguf file")->required();
  app.add_option("--file", a->file, "read the input from this file instead of stdin");
  app.add_flag("--no-special", a->no_special, "no BOS/EOS/template tokens (encode); drop special tokens (decode)");
  app.add_flag("--decode", a->decode, "read ids, print text");
  app.add_flag("--jsonl", a->jsonl, "batch mode: one JSON item per line")->group("");
  app.add_flag("--chat-jsonl", a->chat_jsonl, "batch mode: render chat templates")->group("");
  return [a]() -> int {
    auto tok = tok::Tokenizer::from_path(a->tokenizer).value_or_throw();
    if (a->jsonl || a->chat_jsonl) return run_jsonl(*a, tok);
    const std::string input = read_input(a->file);
    std::string out;
    if (a->decode) {
      out = tok.decode(parse_ids(input, tok), a->no_special);
    } else {
      for (int32_t id : tok.encode(input, !a->no_special)) {
        if (!out.empty()) out += ' ';
        out += std::to_string(id);
      }
      out += '\n';
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  };
}

}  // namespace

HYLO_COMMAND(tokenize, "tokenize", "Encode text to token ids, or decode ids to text (--decode)", setup);

}  // namespace hylo::cli
