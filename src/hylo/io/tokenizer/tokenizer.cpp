// hylo::tok::Tokenizer: the encode pipeline (added tokens -> normalizer -> pre-tokenizer -> BPE -> template)
// and decode, in the order and with the semantics of `tokenizers` 0.23 (TokenizerImpl::encode_single_sequence
// and decode), plus StreamDecoder.
#include "hylo/io/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/tokenizer_impl.h"

namespace hylo::tok {

// ---- TokenizerImpl -------------------------------------------------------------------------------------------
void TokenizerImpl::add_tokens(const std::vector<AddedToken>& tokens) {
  for (const auto& t : tokens) {
    if (t.content.empty()) continue;
    std::optional<int32_t> id = token_to_id(t.content);
    if (!id) {
      // AddedVocabulary::add_tokens: the model's vocabulary size (its number of entries) for the first new
      // token, then one past the largest added id.
      const auto model_size = static_cast<int32_t>(model.vocab.size());
      std::optional<int32_t> max_added;
      for (const auto& a : added) max_added = std::max(max_added.value_or(a.id), a.id);
      id = !max_added ? model_size : (*max_added >= model_size || model_size == 0) ? *max_added + 1 : model_size;
    }
    AddedToken tok = t;
    tok.id = *id;
    if (auto it = added_by_content.find(tok.content); it != added_by_content.end()) {
      added[added_by_id.at(it->second)] = tok;  // same content: the later definition wins
      continue;
    }
    added_by_id[tok.id] = added.size();
    added_by_content.emplace(tok.content, tok.id);
    added.push_back(std::move(tok));
  }
  refresh_matchers();
}

void TokenizerImpl::refresh_matchers() {
  std::vector<std::pair<std::string, int>> raw, norm;
  // tokenizers lists special tokens first, then the others; the first of equal patterns wins.
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < added.size(); ++i) {
      const auto& t = added[i];
      if (t.special != (pass == 0)) continue;
      if (t.normalized) {
        std::string content = t.content;
        if (normalizer) normalizer->normalize(content);
        added[i].decoded = content;
        norm.emplace_back(std::move(content), static_cast<int>(i));
      } else {
        added[i].decoded = t.content;
        raw.emplace_back(t.content, static_cast<int>(i));
      }
    }
  }
  raw_matcher.build(raw);
  normalized_matcher.build(norm);
}

namespace {
bool is_word_char(uint32_t cp) {
  // Approximates Rust's char::is_alphanumeric() || '_' for single_word tokens: ASCII exactly, and any
  // non-ASCII, non-space code point above U+00BF counted as part of a word.
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  return cp >= 0xC0 && !is_white_space(cp);
}
uint32_t last_cp(std::string_view s) {
  std::size_t b = utf8_prev(s, s.size());
  return utf8_next(s, b);
}
}  // namespace

void TokenizerImpl::split_added(const Piece& piece, const TokenMatcher& matcher,
                                std::vector<std::pair<Piece, int32_t>>& out) const {
  const std::string& text = piece.text;
  if (matcher.empty()) {
    if (!text.empty()) out.emplace_back(piece, -1);
    return;
  }
  std::size_t start_offset = 0, pos = 0, s = 0, e = 0;
  auto push_text = [&](std::size_t a, std::size_t b) {
    if (b > a) out.emplace_back(Piece{text.substr(a, b - a), piece.at_start && a == 0}, -1);
  };
  for (int idx; (idx = matcher.find(text, pos, s, e)) >= 0;) {
    pos = e;
    const AddedToken& tok = added[static_cast<std::size_t>(idx)];
    if (tok.single_word) {
      std::size_t k = e;
      const bool start_space = s == 0 || !is_word_char(last_cp(std::string_view(text).substr(0, s)));
      const bool stop_space = e == text.size() || !is_word_char(utf8_next(text, k));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      std::size_t ns = s;
      while (ns > 0) {
        const std::size_t b = utf8_prev(text, ns);
        std::size_t k = b;
        if (!is_white_space(utf8_next(text, k))) break;
        ns = b;
      }
      s = std::max(ns, start_offset);
    }
    if (tok.rstrip) {
      while (e < text.size()) {
        std::size_t k = e;
        if (!is_white_space(utf8_next(text, k))) break;
        e = k;
      }
    }
    push_text(start_offset, s);
    out.emplace_back(Piece{text.substr(s, e - s), piece.at_start && s == 0}, tok.id);
    start_offset = e;
  }
  push_text(start_offset, text.size());
}

std::vector<int32_t> TokenizerImpl::encode(std::string_view input, bool add_special) const {
  std::vector<int32_t> ids;
  if (spm) {
    // llama.cpp's SPM path: its own special-token split, raw bytes (no lossy UTF-8 step), BOS/EOS below.
    if (add_special) ids.insert(ids.end(), post.prefix.begin(), post.prefix.end());
    spm->encode(input, ids);
    if (add_special) ids.insert(ids.end(), post.suffix.begin(), post.suffix.end());
    return ids;
  }
  // Invalid UTF-8 is decoded lossily first: tokenizers only ever sees a Rust String.
  std::string text = utf8_valid(input) ? std::string(input) : utf8_lossy(input);
  std::vector<std::pair<Piece, int32_t>> stage1, stage2;
  split_added(Piece{std::move(text), true}, raw_matcher, stage1);
  std::vector<Piece> words;
  for (auto& [piece, id] : stage1) {
    if (id >= 0) {
      ids.push_back(id);
      continue;
    }
    if (normalizer) normalizer->normalize(piece.text);
    stage2.clear();
    split_added(piece, normalized_matcher, stage2);
    for (auto& [p2, id2] : stage2) {
      if (id2 >= 0) {
        ids.push_back(id2);
        continue;
      }
      words.clear();
      words.push_back(std::move(p2));
      if (pre_tokenizer) pre_tokenizer->pre_tokenize(words);
      for (const auto& w : words) model.tokenize(w.text, ids);
    }
  }
  if (add_special && post.any) {
    std::vector<int32_t> full;
    full.reserve(post.prefix.size() + ids.size() + post.suffix.size());
    full.insert(full.end(), post.prefix.begin(), post.prefix.end());
    full.insert(full.end(), ids.begin(), ids.end());
    full.insert(full.end(), post.suffix.begin(), post.suffix.end());
    return full;
  }
  return ids;
}

const std::string* TokenizerImpl::decode_token(int32_t id, bool skip_special) const {
  if (auto it = added_by_id.find(id); it != added_by_id.end()) {
    const AddedToken& t = added[it->second];
    return skip_special && t.special ? nullptr : &t.decoded;
  }
  if (id >= 0 && static_cast<std::size_t>(id) < model.id_to_token.size() && !model.id_to_token[id].empty())
    return &model.id_to_token[id];
  return nullptr;
}

std::unique_ptr<DecoderStream> TokenizerImpl::decode_stream() const {
  return decoder ? decoder->stream() : make_join_stream();
}

std::string TokenizerImpl::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (const std::string* t = decode_token(id, skip_special)) tokens.push_back(*t);
  if (!decoder) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  decoder->decode_chain(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

int64_t TokenizerImpl::vocab_size() const {
  // tokenizers' get_vocab_size(with_added_tokens=true): the highest id + 1 over model and added tokens.
  int64_t n = static_cast<int64_t>(model.id_to_token.size());
  for (const auto& a : added) n = std::max<int64_t>(n, a.id + 1);
  return n;
}

std::optional<int32_t> TokenizerImpl::token_to_id(std::string_view token) const {
  if (auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
  if (auto it = model.vocab.find(token); it != model.vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> TokenizerImpl::id_to_token(int32_t id) const {
  if (auto it = added_by_id.find(id); it != added_by_id.end()) return added[it->second].decoded;
  if (id >= 0 && static_cast<std::size_t>(id) < model.id_to_token.size() && !model.id_to_token[id].empty())
    return model.id_to_token[id];
  return std::nullopt;
}

namespace {
// tokenizer_config.json spells special tokens as a string or as {"content": ...}.
std::optional<std::string> token_string(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}
}  // namespace

Status TokenizerImpl::apply_config(const nlohmann::json& config, const std::string& what) {
  if (!config.is_object()) return make_error(what + ": expected a JSON object");
  if (auto it = config.find("chat_template"); it != config.end()) {
    if (it->is_string()) {
      chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      // A list of named templates: the one named "default".
      for (const auto& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
          chat_template = t["template"].get<std::string>();
    } else if (!it->is_null()) {
      return make_error(what + ": field 'chat_template' must be a string or a list of {name, template}");
    }
  }
  if (auto b = token_string(config, "bos_token")) {
    bos_token = *b;
    if (auto id = token_to_id(*b)) bos = *id;
  }
  if (auto e = token_string(config, "eos_token")) {
    eos_token = *e;
    if (auto id = token_to_id(*e)) eos = *id;
  }
  return {};
}

void TokenizerImpl::finish_special_ids() {
  eos_extra.clear();
  // End-of-turn tokens of the chat formats hylo knows stop generation as eos does.
  for (const char* name : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>"}) {
    auto it = added_by_content.find(std::string_view(name));
    if (it == added_by_content.end()) continue;
    if (eos && *eos == it->second) continue;
    eos_extra.push_back(it->second);
  }
}

// ---- Tokenizer ---------------------------------------------------------------------------------------------
Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Result<Tokenizer> Tokenizer::from_path(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    const auto json_path = path / "tokenizer.json";
    if (!std::filesystem::exists(json_path, ec)) {
      // A hylo checkpoint upcycled from a GGUF teacher carries that vocabulary as a tensor-free tokenizer.gguf.
      if (std::filesystem::exists(path / "tokenizer.gguf", ec)) return from_path(path / "tokenizer.gguf");
      return make_error(path.string() + ": directory has no tokenizer.json (nor tokenizer.gguf)");
    }
    HYLO_TRY(auto json_text, read_text_file(json_path));
    std::string config_text;
    const auto config_path = path / "tokenizer_config.json";
    if (std::filesystem::exists(config_path, ec)) {
      HYLO_TRY(auto c, read_text_file(config_path));
      config_text = std::move(c);
    }
    HYLO_TRY(auto impl, load_tokenizer_json(json_text, config_text, json_path.string()));
    return Tokenizer(std::move(impl));
  }
  if (!std::filesystem::exists(path, ec)) return make_error(path.string() + ": no such file or directory");
  if (path.extension() == ".gguf") {
    HYLO_TRY(auto impl, load_gguf_vocab(path));
    return Tokenizer(std::move(impl));
  }
  HYLO_TRY(auto json_text, read_text_file(path));
  std::string config_text;
  const auto config_path = path.parent_path() / "tokenizer_config.json";
  if (path.filename() == "tokenizer.json" && std::filesystem::exists(config_path, ec)) {
    HYLO_TRY(auto c, read_text_file(config_path));
    config_text = std::move(c);
  }
  HYLO_TRY(auto impl, load_tokenizer_json(json_text, config_text, path.string()));
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::from_json_string(const std::string& tokenizer_json, const std::string& tokenizer_config_json) {
  HYLO_TRY(auto impl, load_tokenizer_json(tokenizer_json, tokenizer_config_json, "<tokenizer.json string>"));
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}
std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}
int64_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }
std::optional<std::string> Tokenizer::id_to_token(int32_t id) const { return impl_->id_to_token(id); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::vector<int32_t> Tokenizer::eos_ids() const {
  std::vector<int32_t> out;
  if (impl_->eos) out.push_back(*impl_->eos);
  out.insert(out.end(), impl_->eos_extra.begin(), impl_->eos_extra.end());
  return out;
}
bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}
bool Tokenizer::has_chat_template() const { return !impl_->chat_template.empty(); }

Result<std::string> Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  if (impl_->chat_template.empty()) return make_error(impl_->source + ": the tokenizer has no chat template");
  HYLO_TRY(auto info, detect_chat_template(impl_->chat_template, impl_->bos_token, impl_->eos_token));
  // Message text is user input: invalid UTF-8 is replaced (U+FFFD) here, as encode() does, before the
  // renderers walk it by code point.
  std::vector<ChatMessage> clean = messages;
  for (auto& m : clean)
    if (!utf8_valid(m.content)) m.content = utf8_lossy(m.content);
  return render_chat(info, clean, add_generation_prompt);
}

// ---- StreamDecoder -------------------------------------------------------------------------------------------
StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tok_(&tokenizer), skip_special_(skip_special_tokens), stream_(tokenizer.impl_->decode_stream()) {}
StreamDecoder::~StreamDecoder() = default;
StreamDecoder::StreamDecoder(StreamDecoder&&) noexcept = default;

namespace {
std::string concat(std::vector<StreamPiece>& pieces) {
  std::string text;
  for (auto& p : pieces) text += p.text;
  return text;
}
}  // namespace

std::string StreamDecoder::push(int32_t id) {
  // An id that decode() drops changes nothing, not even the decoders' view of which token comes first.
  const std::string* token = tok_->impl_->decode_token(id, skip_special_);
  if (token == nullptr) return {};
  std::vector<StreamPiece> out;
  stream_->push(StreamPiece{*token, true}, out);
  return concat(out);
}

std::string StreamDecoder::flush() {
  std::vector<StreamPiece> out;
  stream_->finish(out);
  stream_ = tok_->impl_->decode_stream();
  return concat(out);
}

std::size_t StreamDecoder::held_bytes() const { return stream_->held_bytes(); }

}  // namespace hylo::tok
