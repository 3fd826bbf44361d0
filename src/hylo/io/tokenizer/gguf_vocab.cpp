// GGUF tokenizer metadata (tokenizer.ggml.*) -> pipeline. "gpt2" vocabularies are byte-level BPE: tokens and
// merges as stored, control tokens (token_type 3) as special added tokens and user-defined ones (4) as
// plain added tokens, as transformers' GGUF converter does; `tokenizer.ggml.pre` picks the pre-tokenizer the
// vocabulary was trained with (as llama.cpp does). "llama" (SentencePiece) vocabularies are rejected with
// a clear error: hylo reads Llama-2/Mistral tokenizers from their tokenizer.json.

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

}  // namespace

Result<std::unique_ptr<TokenizerImpl>> load_gguf_vocab(const std::filesystem::path& path) {
  const std::string what = path.string();
  HYLO_TRY(auto file, io::GgufFile::open(path));
  HYLO_TRY(auto model, file.get_string("tokenizer.ggml.model"));
  if (model == "llama")
    return make_error(what + ": tokenizer.ggml.model 'llama' (SentencePiece scores) is not supported; use the model's "
                             "tokenizer.json (supported GGUF tokenizer models: gpt2)");
  if (model != "gpt2")
    return make_error(what + ": unsupported tokenizer.ggml.model '" + model + "' (supported: gpt2)");
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
  if (meta_bool(file, "tokenizer.ggml.add_bos_token").value_or(false) && impl->bos) {
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

}  // namespace hylo::tok
