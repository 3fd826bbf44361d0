// GGUF tokenizer metadata (tokenizer.ggml.*) -> pipeline. "gpt2" vocabularies are byte-level BPE: tokens and
// merges as stored, control tokens (token_type 3) as special added tokens and user-defined ones (4) as
// plain added tokens, as transformers' GGUF converter does; `tokenizer.ggml.pre` picks the pre-tokenizer the
// vocabulary was trained with (as llama.cpp does). "llama" vocabularies (SentencePiece scores: Llama-2, Mistral,
// Gemma, Phi-3) encode with llama.cpp's SPM tokenizer (Spm, spm.cpp) and decode with the decoder chain of their
// tokenizer.json (▁ -> space, byte fallback, fuse, strip the prefix space).

#include <algorithm>

#include "hylo/io/gguf.h"
#include "hylo/io/tokenizer/tokenizer_impl.h"

namespace hylo::tok {
namespace {

// Pre-tokenizer regexes of llama.cpp's pre-tokenizer types (the same strings as the tokenizer.json files).
constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::optional<bool> meta_bool(const io::GgufFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  if (it == f.metadata().end()) return std::nullopt;
  if (const bool* b = std::get_if<bool>(&it->second.v)) return *b;
  return std::nullopt;
}

Result<std::unique_ptr<PreTokenizer>> split_then_bytes(const char* pattern, const std::string& what) {
  HYLO_TRY(auto re, Regex::compile(pattern, what));
  Pattern p;
  p.kind = Pattern::Kind::kRegex;
  p.regex = std::move(re);
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  parts.push_back(make_split_pre_tokenizer(std::move(p), SplitBehavior::kIsolated, false));
  HYLO_TRY(auto bl, make_byte_level_pre_tokenizer(false, false));
  parts.push_back(std::move(bl));
  return make_sequence_pre_tokenizer(std::move(parts));
}

// GGUF token types (llama.cpp's llama_token_type).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// "llama" vocabularies: the Spm model (llama.cpp's defaults: add_space_prefix true), the vocabulary for lookups
// and decode, control / unknown tokens as special added tokens and user-defined ones as plain added tokens.
Result<std::unique_ptr<TokenizerImpl>> load_spm(const io::GgufFile& file, const std::vector<std::string>& tokens,
                                                const std::vector<int64_t>& types, const std::string& what) {
  auto impl = std::make_unique<TokenizerImpl>();
  impl->source = what;
  auto spm = std::make_unique<Spm>();
  const std::size_t n = tokens.size();
  spm->scores.assign(n, 0.0f);
  if (file.has("tokenizer.ggml.scores")) {
    HYLO_TRY(auto sc, file.get_float_array("tokenizer.ggml.scores"));
    if (sc.size() != n)
      return make_error(what + ": tokenizer.ggml.scores has " + std::to_string(sc.size()) +
                        " entries, tokenizer.ggml.tokens has " + std::to_string(n));
    for (std::size_t i = 0; i < n; ++i) spm->scores[i] = static_cast<float>(sc[i]);
  }
  Bpe& vocab = impl->model;
  vocab.id_to_token = tokens;
  for (std::size_t i = 0; i < n; ++i) {
    vocab.vocab.emplace(tokens[i], static_cast<int32_t>(i));       // lookups: the first id of a text
    spm->by_text[tokens[i]] = static_cast<int32_t>(i);              // merges: the last, as llama.cpp
  }
  if (file.has("tokenizer.ggml.unknown_token_id")) {
    HYLO_TRY(int64_t unk, file.get_int("tokenizer.ggml.unknown_token_id"));
    if (unk >= 0 && unk < static_cast<int64_t>(n)) spm->unk_id = static_cast<int32_t>(unk);
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const std::string name = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    if (auto it = spm->by_text.find(name); it != spm->by_text.end()) spm->byte_token[b] = it->second;
    else if (auto it1 = spm->by_text.find(std::string(1, static_cast<char>(b))); it1 != spm->by_text.end())
      spm->byte_token[b] = it1->second;
    else spm->byte_token[b] = spm->unk_id;
  }
  if (auto v = meta_bool(file, "tokenizer.ggml.add_space_prefix")) spm->add_space_prefix = *v;
  std::vector<AddedToken> special, user;
  for (std::size_t i = 0; i < types.size(); ++i) {
    const int64_t t = types[i];
    if (t != kControl && t != kUserDefined && t != kUnknown) continue;
    spm->specials.push_back(Spm::Special{tokens[i], static_cast<int32_t>(i)});
    if (t == kUserDefined) user.push_back(AddedToken{tokens[i], -1, false, false, false, false, false, {}});
    else special.push_back(AddedToken{tokens[i], -1, true, false, false, false, false, {}});
  }
  std::stable_sort(spm->specials.begin(), spm->specials.end(),
                   [](const Spm::Special& a, const Spm::Special& b) { return a.text.size() > b.text.size(); });
  impl->add_tokens(special);
  impl->add_tokens(user);
  // The decoder of a Llama-2 tokenizer.json: "▁" -> " ", <0xXX> runs -> UTF-8 (U+FFFD per byte if invalid),
  // fuse, then drop the one space the encoder put in front.
  std::vector<std::unique_ptr<Decoder>> dec;
  Pattern space;
  space.kind = Pattern::Kind::kString;
  space.literal = "\xE2\x96\x81";
  dec.push_back(make_replace_decoder(std::move(space), " "));
  dec.push_back(make_byte_fallback_decoder());
  dec.push_back(make_fuse_decoder());
  if (spm->add_space_prefix) dec.push_back(make_strip_decoder(" ", 1, 0));
  impl->decoder = make_sequence_decoder(std::move(dec));
  impl->spm = std::move(spm);
  return impl;
}

Result<std::unique_ptr<TokenizerImpl>> finish(const io::GgufFile& file, const std::vector<std::string>& tokens,
                                              std::unique_ptr<TokenizerImpl> impl, const std::string& what,
                                              bool add_bos_default);

}  // namespace

Result<std::unique_ptr<TokenizerImpl>> load_gguf_vocab(const std::filesystem::path& path) {
  const std::string what = path.string();
  HYLO_TRY(auto file, io::GgufFile::open(path));
  HYLO_TRY(auto model, file.get_string("tokenizer.ggml.model"));
  if (model != "gpt2" && model != "llama")
    return make_error(what + ": unsupported tokenizer.ggml.model '" + model + "' (supported: gpt2, llama)");
  HYLO_TRY(auto tokens, file.get_string_array("tokenizer.ggml.tokens"));
  std::vector<int64_t> types;
  if (file.has("tokenizer.ggml.token_type")) {
    HYLO_TRY(auto t, file.get_int_array("tokenizer.ggml.token_type"));
    types = std::move(t);
    if (types.size() != tokens.size())
      return make_error(what + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                        " entries, tokenizer.ggml.tokens has " + std::to_string(tokens.size()));
  }
  auto impl = std::make_unique<TokenizerImpl>();
  impl->source = what;
  if (model == "llama") {
    HYLO_TRY(impl, load_spm(file, tokens, types, what));
    return finish(file, tokens, std::move(impl), what, /*add_bos_default=*/true);
  }
  Bpe& bpe = impl->model;
  // Tokens spelled outside the byte-level alphabet are respelled byte by byte (transformers does the same).
  const auto& map = byte_level_map();
  bpe.id_to_token.resize(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::string t = tokens[i];
    bool in_alphabet = utf8_valid(t);
    for (std::size_t k = 0; in_alphabet && k < t.size();) in_alphabet = map.byte_of(utf8_next(t, k)) >= 0;
    if (!in_alphabet) {
      std::string respelled;
      for (unsigned char c : t) respelled += map.byte_to_utf8[c];
      t = std::move(respelled);
    }
    bpe.vocab.emplace(t, static_cast<int32_t>(i));  // the first of duplicate spellings keeps its id
    bpe.id_to_token[i] = std::move(t);
  }
  if (file.has("tokenizer.ggml.merges")) {
    HYLO_TRY(auto merges, file.get_string_array("tokenizer.ggml.merges"));
    bpe.merges.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      const std::string& s = merges[i];
      const auto sp = s.find(' ');
      const std::string mw = what + ": tokenizer.ggml.merges[" + std::to_string(i) + "] '" + s + "'";
      if (sp == std::string::npos) return make_error(mw + " must be two tokens separated by a space");
      const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
      auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b), im = bpe.vocab.find(a + b);
      if (ia == bpe.vocab.end() || ib == bpe.vocab.end() || im == bpe.vocab.end())
        return make_error(mw + " references a token that is not in tokenizer.ggml.tokens");
      bpe.merges[Bpe::pair_key(ia->second, ib->second)] = Bpe::MergeInfo{static_cast<int32_t>(i), im->second};
    }
  }
  std::string pre = "default";
  if (file.has("tokenizer.ggml.pre")) {
    HYLO_TRY(auto p, file.get_string("tokenizer.ggml.pre"));
    pre = p;
  }
  const std::string pw = what + ": tokenizer.ggml.pre '" + pre + "'";
  if (pre == "smollm") {
    // SmolLM's tokenizer.json: Digits(individual_digits) then ByteLevel with the GPT-2 regex.
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    HYLO_TRY(auto d, make_digits_pre_tokenizer(true));
    HYLO_TRY(auto bl, make_byte_level_pre_tokenizer(false, true));
    parts.push_back(std::move(d));
    parts.push_back(std::move(bl));
    impl->pre_tokenizer = make_sequence_pre_tokenizer(std::move(parts));
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    HYLO_TRY(impl->pre_tokenizer, split_then_bytes(kLlama3Split, pw));
    bpe.ignore_merges = true;  // as Llama-3's tokenizer.json and llama.cpp's LLAMA3 pre-tokenizer
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    HYLO_TRY(impl->pre_tokenizer, split_then_bytes(kQwen2Split, pw));
  } else if (pre == "gpt-2" || pre == "default" || pre == "gpt2") {
    HYLO_TRY(impl->pre_tokenizer, make_byte_level_pre_tokenizer(false, true));
  } else {
    return make_error(pw + " is not supported (supported: smollm, llama-bpe, llama3, qwen2, gpt-2, default)");
  }
  impl->decoder = make_byte_level_decoder();

  std::vector<AddedToken> special, user;
  for (std::size_t i = 0; i < types.size(); ++i) {
    if (types[i] == 3) special.push_back(AddedToken{tokens[i], -1, true, false, false, false, false, {}});
    if (types[i] == 4) user.push_back(AddedToken{tokens[i], -1, false, false, false, false, false, {}});
  }
  impl->add_tokens(special);
  impl->add_tokens(user);
  return finish(file, tokens, std::move(impl), what, /*add_bos_default=*/false);
}

namespace {

Result<std::unique_ptr<TokenizerImpl>> finish(const io::GgufFile& file, const std::vector<std::string>& tokens,
                                              std::unique_ptr<TokenizerImpl> impl, const std::string& what,
                                              bool add_bos_default) {
  auto id_of = [&](const char* key) -> Result<std::optional<int32_t>> {
    if (!file.has(key)) return std::optional<int32_t>();
    HYLO_TRY(int64_t id, file.get_int(key));
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()))
      return make_error(what + ": " + key + " = " + std::to_string(id) + " is outside the vocabulary of " +
                        std::to_string(tokens.size()));
    return std::optional<int32_t>(static_cast<int32_t>(id));
  };
  HYLO_TRY(impl->bos, id_of("tokenizer.ggml.bos_token_id"));
  HYLO_TRY(impl->eos, id_of("tokenizer.ggml.eos_token_id"));
  if (impl->bos) impl->bos_token = tokens[*impl->bos];
  if (impl->eos) impl->eos_token = tokens[*impl->eos];
  if (meta_bool(file, "tokenizer.ggml.add_bos_token").value_or(add_bos_default) && impl->bos) {
    impl->post.prefix.push_back(*impl->bos);
    impl->post.any = true;
  }
  if (meta_bool(file, "tokenizer.ggml.add_eos_token").value_or(false) && impl->eos) {
    impl->post.suffix.push_back(*impl->eos);
    impl->post.any = true;
  }
  if (file.has("tokenizer.chat_template")) {
    HYLO_TRY(auto t, file.get_string("tokenizer.chat_template"));
    impl->chat_template = std::move(t);
  }
  impl->finish_special_ids();
  return impl;
}

}  // namespace

}  // namespace hylo::tok
