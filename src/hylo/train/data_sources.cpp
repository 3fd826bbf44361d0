#include "hylo/train/data_sources.h"

#include <algorithm>
#include <cstdio>

#include "hylo/core/file_util.h"

namespace hylo::train {

namespace fs = std::filesystem;
using nlohmann::json;

Result<DocConvention> doc_convention(const tok::Tokenizer& tokenizer, const std::string& doc_end) {
  DocConvention c;
  c.bos_id = tokenizer.bos_id();
  if (c.bos_id) {
    const std::vector<int32_t> with = tokenizer.encode("a", true);
    c.bos_added = !with.empty() && with.front() == *c.bos_id;
  }
  if (doc_end == "none") return c;
  if (!doc_end.empty()) {
    c.doc_end_id = tokenizer.token_to_id(doc_end);
    if (!c.doc_end_id) return make_error("--doc-end: \"" + doc_end + "\" is not a token of the vocabulary");
    return c;
  }
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>"})
    if (auto id = tokenizer.token_to_id(name)) {
      c.doc_end_id = id;
      return c;
    }
  const std::vector<int32_t> eos = tokenizer.eos_ids();
  if (!eos.empty()) c.doc_end_id = eos.front();
  return c;
}

std::string tokenizer_fingerprint(const tok::Tokenizer& tokenizer) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&](unsigned char byte) {
    h ^= byte;
    h *= 0x100000001b3ULL;
  };
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::optional<std::string> t = tokenizer.id_to_token(static_cast<int32_t>(id));
    if (t)
      for (char ch : *t) mix(static_cast<unsigned char>(ch));
    mix(0);
  }
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json tokenizer_json(const tok::Tokenizer& tokenizer, const DocConvention& conv, const std::string& source) {
  json j{{"source", source},
         {"vocab_size", tokenizer.vocab_size()},
         {"fingerprint", tokenizer_fingerprint(tokenizer)},
         {"bos_added", conv.bos_added}};
  j["bos_id"] = conv.bos_id ? json(*conv.bos_id) : json(nullptr);
  j["doc_end_id"] = conv.doc_end_id ? json(*conv.doc_end_id) : json(nullptr);
  if (conv.doc_end_id) j["doc_end_token"] = tokenizer.id_to_token(*conv.doc_end_id).value_or("");
  return j;
}

namespace {

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

// Line numbers (1-based) of each span's first and last byte, by one pass over the text.
void fill_lines(std::string_view text, std::vector<TextSpan>& spans) {
  int64_t line = 1, pos = 0;
  auto advance_to = [&](int64_t target) {
    for (; pos < target; ++pos)
      if (text[static_cast<size_t>(pos)] == '\n') ++line;
  };
  for (TextSpan& s : spans) {  // spans are sorted and disjoint
    advance_to(s.byte_begin);
    s.line_begin = line;
    advance_to(std::max(s.byte_begin, s.byte_end - 1));
    s.line_end = line;
  }
}

}  // namespace

std::vector<TextSpan> split_text(std::string_view text, int64_t begin, int64_t end, TextSplit mode,
                                 const std::string& separator) {
  std::vector<TextSpan> spans;
  auto add = [&](int64_t b, int64_t e) {
    if (e > b && !is_blank(text.substr(static_cast<size_t>(b), static_cast<size_t>(e - b))))
      spans.push_back(TextSpan{b, e, 0, 0});
  };
  if (mode == TextSplit::kFile) {
    add(begin, end);
  } else if (mode == TextSplit::kSeparator && !separator.empty()) {
    int64_t b = begin;
    while (true) {
      const size_t hit = text.substr(0, static_cast<size_t>(end)).find(separator, static_cast<size_t>(b));
      if (hit == std::string_view::npos) {
        add(b, end);
        break;
      }
      add(b, static_cast<int64_t>(hit));
      b = static_cast<int64_t>(hit + separator.size());
    }
  } else {  // paragraphs: runs of non-blank lines; a paragraph ends before its last line's newline
    int64_t para_begin = -1, para_end = -1, pos = begin;
    while (pos < end) {
      size_t nl = text.find('\n', static_cast<size_t>(pos));
      const int64_t line_end = nl == std::string_view::npos || static_cast<int64_t>(nl) >= end ? end : static_cast<int64_t>(nl);
      const bool blank = is_blank(text.substr(static_cast<size_t>(pos), static_cast<size_t>(line_end - pos)));
      if (blank) {
        if (para_begin >= 0) add(para_begin, para_end);
        para_begin = -1;
      } else {
        if (para_begin < 0) para_begin = pos;
        para_end = line_end;
      }
      pos = line_end + 1;
    }
    if (para_begin >= 0) add(para_begin, para_end);
  }
  fill_lines(text, spans);
  return spans;
}

Result<TextSpan> line_range(std::string_view text, int64_t first, int64_t last, const std::string& where) {
  if (first < 1 || last < first)
    return make_error(where + ": line range " + std::to_string(first) + "-" + std::to_string(last) +
                      " must satisfy 1 <= first <= last");
  int64_t line = 1;
  int64_t begin = -1;
  size_t pos = 0;
  if (first == 1) begin = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t next = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line == last) {
      if (begin < 0) break;
      return TextSpan{begin, static_cast<int64_t>(next), first, last};
    }
    ++line;
    pos = next;
    if (line == first) begin = static_cast<int64_t>(pos);
  }
  return make_error(where + ": line range " + std::to_string(first) + "-" + std::to_string(last) +
                    " is past the end of the file (" + std::to_string(line - (text.empty() || text.back() == '\n')) +
                    " lines)");
}

Document text_document(const tok::Tokenizer& tokenizer, const DocConvention& conv, std::string text) {
  Document d;
  const std::vector<int32_t> ids = tokenizer.encode(text, /*add_special_tokens=*/true);
  d.tokens.assign(ids.begin(), ids.end());
  if (conv.doc_end_id) d.tokens.push_back(static_cast<uint32_t>(*conv.doc_end_id));
  d.text = std::move(text);
  return d;
}

Result<Document> chat_document(const tok::Tokenizer& tokenizer, const DocConvention& conv,
                               const std::vector<tok::ChatMessage>& messages, bool mask_prompt,
                               const std::string& where) {
  if (!tokenizer.has_chat_template()) return make_error(where + ": the tokenizer has no chat template for \"messages\"");
  auto rendered = tokenizer.apply_chat_template(messages, /*add_generation_prompt=*/false);
  if (!rendered.ok()) return make_error(where + ": " + rendered.error());
  const std::string& full = rendered.value();
  Document d;
  d.text = full;
  auto append = [&](std::string_view piece, uint8_t target) {
    const std::vector<int32_t> ids = tokenizer.encode(piece, /*add_special_tokens=*/false);
    d.tokens.insert(d.tokens.end(), ids.begin(), ids.end());
    if (mask_prompt) d.mask.insert(d.mask.end(), ids.size(), target);
  };
  if (!mask_prompt) {
    append(full, 1);
  } else {
    // The assistant turns' byte ranges: each begins where the generation prompt of the conversation so far
    // ends and ends where the conversation including that turn ends.
    size_t done = 0;
    bool any = false;
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].role != "assistant") continue;
      any = true;
      const std::vector<tok::ChatMessage> before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i));
      std::string pre;
      if (!before.empty()) {
        auto r = tokenizer.apply_chat_template(before, /*add_generation_prompt=*/true);
        if (!r.ok()) return make_error(where + ": " + r.error());
        pre = std::move(r).value();
      }
      const std::vector<tok::ChatMessage> upto(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i + 1));
      auto post = tokenizer.apply_chat_template(upto, /*add_generation_prompt=*/false);
      if (!post.ok()) return make_error(where + ": " + post.error());
      if (full.compare(0, pre.size(), pre) != 0 || full.compare(0, post->size(), *post) != 0 ||
          pre.size() < done || post->size() < pre.size())
        return make_error(where + ": message " + std::to_string(i) +
                          ": the chat template does not render this conversation's prefixes as prefixes of the "
                          "whole, so the assistant tokens cannot be located for --mask-prompt");
      append(std::string_view(full).substr(done, pre.size() - done), 0);
      append(std::string_view(full).substr(pre.size(), post->size() - pre.size()), 1);
      done = post->size();
    }
    if (!any) return make_error(where + ": --mask-prompt: the conversation has no assistant message to train on");
    append(std::string_view(full).substr(done), 0);
  }
  if (conv.doc_end_id) {
    d.tokens.push_back(static_cast<uint32_t>(*conv.doc_end_id));
    if (mask_prompt) d.mask.push_back(0);
  }
  if (d.tokens.empty()) return make_error(where + ": the conversation renders to no tokens");
  return d;
}

namespace {

Result<std::vector<tok::ChatMessage>> parse_messages(const json& m, const std::string& where) {
  if (!m.is_array() || m.empty()) return make_error(where + ": \"messages\" must be a non-empty array");
  std::vector<tok::ChatMessage> out;
  for (size_t i = 0; i < m.size(); ++i) {
    const json& e = m[i];
    if (!e.is_object() || !e.contains("role") || !e["role"].is_string() || !e.contains("content") ||
        !e["content"].is_string())
      return make_error(where + ": messages[" + std::to_string(i) +
                        "] must be an object with string fields \"role\" and \"content\"");
    out.push_back({e["role"].get<std::string>(), e["content"].get<std::string>()});
  }
  return out;
}

}  // namespace

Result<std::vector<Document>> read_input_file(const fs::path& path, const tok::Tokenizer& tokenizer,
                                              const DocConvention& conv, const InputOptions& options,
                                              int32_t source, std::optional<TextSpan> exclude, std::string* kind) {
  HYLO_TRY(std::string text, read_text_file(path));
  std::vector<Document> docs;
  if (path.extension() == ".jsonl") {
    bool chat = false, plain = false;
    int64_t line_no = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t nl = text.find('\n', pos);
      const size_t end = nl == std::string::npos ? text.size() : nl;
      ++line_no;
      const std::string_view line(text.data() + pos, end - pos);
      const std::string where = path.string() + ":" + std::to_string(line_no);
      if (!is_blank(line)) {
        const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) return make_error(where + ": not a JSON object");
        Document d;
        if (j.contains("messages")) {
          HYLO_TRY(auto messages, parse_messages(j["messages"], where));
          HYLO_TRY(d, chat_document(tokenizer, conv, messages, options.mask_prompt, where));
          chat = true;
        } else {
          if (!j.contains(options.jsonl_field) || !j[options.jsonl_field].is_string())
            return make_error(where + ": missing string field \"" + options.jsonl_field +
                              "\" (--jsonl-field) and no \"messages\" array");
          d = text_document(tokenizer, conv, j[options.jsonl_field].get<std::string>());
          plain = true;
        }
        d.origin = DocumentOrigin{source, static_cast<int64_t>(docs.size()), static_cast<int64_t>(pos),
                                  static_cast<int64_t>(end), line_no, line_no};
        if (d.tokens.empty()) continue;
        docs.push_back(std::move(d));
      }
      pos = end + 1;
    }
    *kind = chat && plain ? "jsonl+chat" : chat ? "chat" : "jsonl";
    return docs;
  }

  *kind = options.split == TextSplit::kFile ? "text" : options.split == TextSplit::kParagraphs ? "paragraphs" : "separated";
  std::vector<TextSpan> spans;
  const auto n = static_cast<int64_t>(text.size());
  if (exclude) {
    spans = split_text(text, 0, exclude->byte_begin, options.split, options.separator);
    auto after = split_text(text, exclude->byte_end, n, options.split, options.separator);
    spans.insert(spans.end(), after.begin(), after.end());
  } else {
    spans = split_text(text, 0, n, options.split, options.separator);
  }
  for (const TextSpan& s : spans) {
    Document d = text_document(tokenizer, conv, text.substr(static_cast<size_t>(s.byte_begin),
                                                            static_cast<size_t>(s.byte_end - s.byte_begin)));
    if (d.tokens.empty()) continue;
    d.origin = DocumentOrigin{source, static_cast<int64_t>(docs.size()), s.byte_begin, s.byte_end, s.line_begin,
                              s.line_end};
    docs.push_back(std::move(d));
  }
  return docs;
}

Result<std::vector<fs::path>> expand_inputs(const std::vector<fs::path>& inputs) {
  std::vector<fs::path> files;
  for (const fs::path& in : inputs) {
    std::error_code ec;
    if (fs::is_regular_file(in, ec)) {
      files.push_back(in);
    } else if (fs::is_directory(in, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path());
      }
      if (ec) return make_error(in.string() + ": cannot list directory: " + ec.message());
      if (found.empty()) return make_error(in.string() + ": directory holds no files");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      return make_error(in.string() + ": no such file or directory");
    }
  }
  return files;
}

}  // namespace hylo::train
