#include "hylo/eval/harness.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cctype>
#include <regex>

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/eval/ruler_text.h"

namespace hylo::eval {
namespace {

std::vector<int64_t> encode_plain(const tok::Tokenizer& t, const std::string& s) {
  std::vector<int32_t> ids = t.encode(s, /*add_special_tokens=*/false);
  return {ids.begin(), ids.end()};
}

// Reads a JSONL file, calling parse(json, where) per non-blank line.
template <class T, class F>
Result<std::vector<T>> read_jsonl(const std::string& path, F parse) {
  auto text = read_text_file(path);
  if (!text.ok()) return text.error_info();
  std::vector<T> items;
  size_t pos = 0, line_no = 0;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    const std::string line = text->substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(line_no);
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return make_error(where + ": not a JSON object");
    Result<T> item = parse(j, where);
    if (!item.ok()) return item.error_info();
    items.push_back(std::move(item).value());
  }
  if (items.empty()) return make_error(path + ": no items");
  return items;
}

Result<std::string> string_field(const nlohmann::json& j, std::initializer_list<const char*> names,
                                 const std::string& where) {
  for (const char* n : names)
    if (j.contains(n)) {
      if (!j[n].is_string()) return make_error(where + ": field \"" + n + "\" must be a string");
      return j[n].get<std::string>();
    }
  return make_error(where + ": missing field \"" + *names.begin() + "\" (string)");
}

}  // namespace

EncodedPair encode_pair(const tok::Tokenizer& tokenizer, const std::string& context_in,
                        const std::string& continuation_in) {
  EncodedPair p;
  if (context_in.empty()) {
    auto bos = tokenizer.bos_id();
    int64_t prefix = bos ? *bos : (tokenizer.eos_ids().empty() ? 0 : tokenizer.eos_ids().front());
    p.context = {prefix};
    p.continuation = encode_plain(tokenizer, continuation_in);
    return p;
  }
  std::string context = context_in, continuation = continuation_in;
  // Python's str.rstrip() strips Unicode whitespace; ASCII whitespace covers the task files in practice.
  size_t keep = context.find_last_not_of(" \t\n\r\f\v");
  keep = keep == std::string::npos ? 0 : keep + 1;
  if (keep < context.size()) {
    continuation = context.substr(keep) + continuation;
    context.resize(keep);
  }
  std::vector<int64_t> whole = encode_plain(tokenizer, context + continuation);
  p.context = encode_plain(tokenizer, context);
  const size_t n = std::min(p.context.size(), whole.size());
  p.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(n), whole.end());
  return p;
}

Loglikelihood loglikelihood(CausalLM& model, const EncodedPair& pair, int64_t max_length) {
  Loglikelihood r;
  r.tokens = static_cast<int64_t>(pair.continuation.size());
  if (pair.continuation.empty()) return r;
  std::vector<int64_t> all(pair.context);
  all.insert(all.end(), pair.continuation.begin(), pair.continuation.end());
  if (max_length > 0 && static_cast<int64_t>(all.size()) > max_length + 1)
    all.erase(all.begin(), all.end() - (max_length + 1));
  std::vector<int64_t> input(all.begin(), all.end() - 1);
  if (input.empty()) throw Error("loglikelihood: the context is empty and no prefix token was given");
  c10::InferenceMode inference_mode;
  const int64_t n = r.tokens, L = static_cast<int64_t>(input.size());
  at::Tensor ids = at::tensor(input, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);  // [1, L]
  at::Tensor hidden = model.forward_hidden(ids);                                           // [1, L, D]
  at::Tensor logits = model.lm_head(hidden.select(0, 0).narrow(0, L - n, n));              // [n, V] fp32
  at::Tensor logp = at::log_softmax(logits.to(at::kDouble), -1).cpu();                     // [n, V] fp64
  at::Tensor target = at::tensor(pair.continuation, at::TensorOptions().dtype(at::kLong));  // [n]
  at::Tensor picked = logp.gather(1, target.unsqueeze(1)).squeeze(1);                      // [n]
  at::Tensor greedy = logp.argmax(-1);                                                     // [n]
  r.logprob = picked.sum().item<double>();
  r.is_greedy = greedy.equal(target);
  return r;
}

int64_t utf8_length(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

Result<std::vector<ChoiceItem>> load_choice_file(const std::string& path) {
  return read_jsonl<ChoiceItem>(path, [](const nlohmann::json& j, const std::string& where) -> Result<ChoiceItem> {
    ChoiceItem it;
    auto ctx = string_field(j, {"context", "query"}, where);
    if (!ctx.ok()) return ctx.error_info();
    it.context = *ctx;
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].size() < 2)
      return make_error(where + ": field \"choices\" must be an array of >= 2 strings");
    for (const auto& c : j["choices"]) {
      if (!c.is_string()) return make_error(where + ": field \"choices\" must hold strings");
      it.choices.push_back(c);
    }
    const char* gold_key = j.contains("gold") ? "gold" : "label";
    if (!j.contains(gold_key) || !j[gold_key].is_number_integer())
      return make_error(where + ": field \"gold\" must be an integer index into \"choices\"");
    it.gold = j[gold_key].get<int64_t>();
    if (it.gold < 0 || it.gold >= static_cast<int64_t>(it.choices.size()))
      return make_error(where + ": \"gold\" " + std::to_string(it.gold) + " is outside [0, " +
                        std::to_string(it.choices.size()) + ")");
    for (const auto& c : it.choices)
      if (c.empty()) return make_error(where + ": an empty choice cannot be length-normalised");
    return it;
  });
}

ChoiceResult score_choices(const std::vector<double>& logprobs, const std::vector<std::string>& choices,
                           int64_t gold) {
  ChoiceResult r;
  r.logprobs = logprobs;
  double best = -INFINITY, best_norm = -INFINITY;
  for (size_t i = 0; i < logprobs.size(); ++i) {
    const double norm = logprobs[i] / static_cast<double>(utf8_length(choices[i]));
    if (logprobs[i] > best) {  // strict: ties keep the first index, as np.argmax
      best = logprobs[i];
      r.pred = static_cast<int64_t>(i);
    }
    if (norm > best_norm) {
      best_norm = norm;
      r.pred_norm = static_cast<int64_t>(i);
    }
  }
  r.acc = r.pred == gold ? 1.0 : 0.0;
  r.acc_norm = r.pred_norm == gold ? 1.0 : 0.0;
  return r;
}

std::vector<ClozeItem> make_cloze_items(const std::string& text, int64_t count, int64_t words_per_item,
                                        uint64_t seed) {
  const std::vector<std::string> words = ruler::split_words(text);
  std::vector<ClozeItem> items;
  if (static_cast<int64_t>(words.size()) <= words_per_item + 1 || count <= 0) return items;
  // Candidate targets: words after at least words_per_item others, alphabetic once trailing punctuation goes.
  std::vector<size_t> candidates;
  for (size_t k = static_cast<size_t>(words_per_item); k < words.size(); ++k) {
    std::string w = words[k];
    while (!w.empty() && std::ispunct(static_cast<unsigned char>(w.back()))) w.pop_back();
    bool alpha = w.size() >= 3 && std::all_of(w.begin(), w.end(), [](char c) {
      return std::isalpha(static_cast<unsigned char>(c));
    });
    if (alpha) candidates.push_back(k);
  }
  // Evenly spread picks with a seeded offset: deterministic, and passages overlap as little as possible.
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  s ^= s >> 31;
  const size_t n = std::min(candidates.size(), static_cast<size_t>(count));
  if (n == 0) return items;
  const double step = static_cast<double>(candidates.size()) / static_cast<double>(n);
  const size_t offset = static_cast<size_t>(s % static_cast<uint64_t>(std::max(1.0, step)));
  for (size_t i = 0; i < n; ++i) {
    const size_t k = candidates[std::min(candidates.size() - 1, static_cast<size_t>(step * static_cast<double>(i)) + offset)];
    ClozeItem it;
    for (size_t w = k - static_cast<size_t>(words_per_item); w < k; ++w) it.context += (it.context.empty() ? "" : " ") + words[w];
    it.target = words[k];
    while (!it.target.empty() && std::ispunct(static_cast<unsigned char>(it.target.back()))) it.target.pop_back();
    items.push_back(std::move(it));
  }
  return items;
}

Result<std::vector<GenItem>> load_gen_file(const std::string& path) {
  return read_jsonl<GenItem>(path, [](const nlohmann::json& j, const std::string& where) -> Result<GenItem> {
    GenItem it;
    auto q = string_field(j, {"question"}, where);
    if (!q.ok()) return q.error_info();
    auto a = string_field(j, {"answer"}, where);
    if (!a.ok()) return a.error_info();
    it.question = *q;
    it.answer = *a;
    return it;
  });
}

std::string gsm8k_prompt(const std::vector<GenItem>& shots, const GenItem& item) {
  std::string p;
  for (const auto& s : shots) p += "Question: " + s.question + "\nAnswer: " + s.answer + "\n\n";
  return p + "Question: " + item.question + "\nAnswer:";
}

std::string extract_strict(const std::string& output) {
  static const std::regex re(R"(#### (-?[0-9.,]+))");
  std::smatch m;
  if (std::regex_search(output, m, re)) return m[1];
  return "[invalid]";
}

std::string extract_flexible(const std::string& output) {
  static const std::regex re(R"((-?[$0-9.,]{2,})|(-?[0-9]+))");
  std::string last = "[invalid]";
  for (auto it = std::sregex_iterator(output.begin(), output.end(), re); it != std::sregex_iterator(); ++it)
    last = (*it)[1].matched && (*it)[1].length() > 0 ? (*it)[1].str() : (*it)[2].str();
  return last;
}

std::string normalize_answer(const std::string& s) {
  // lm-eval gsm8k: regexes_to_ignore [",", "\$", "(?s).*#### ", "\.$"], then ignore_case.
  std::string out = s;
  out.erase(std::remove(out.begin(), out.end(), ','), out.end());
  out.erase(std::remove(out.begin(), out.end(), '$'), out.end());
  const size_t hash = out.rfind("#### ");  // "(?s).*#### " is greedy: up to the last marker
  if (hash != std::string::npos) out.erase(0, hash + 5);
  // Python's "\.$" matches a "." at the very end or right before a final newline.
  if (!out.empty() && out.back() == '.') {
    out.pop_back();
  } else if (out.size() >= 2 && out[out.size() - 1] == '\n' && out[out.size() - 2] == '.') {
    out.erase(out.size() - 2, 1);
  }
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool exact_match(const std::string& prediction, const std::string& reference) {
  return normalize_answer(prediction) == normalize_answer(reference);
}

}  // namespace hylo::eval
