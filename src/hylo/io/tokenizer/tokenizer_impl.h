// The state behind hylo::tok::Tokenizer: the assembled pipeline plus what tokenizer_config.json / GGUF
// metadata add (chat template, bos/eos). Built by tokenizer_json.cpp (tokenizer.json) and gguf_vocab.cpp.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "hylo/io/tokenizer/chat_template.h"
#include "hylo/io/tokenizer/components.h"
#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::tok {

class TokenizerImpl {
 public:
  std::string source;  // the file it came from, for messages
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  Bpe model;                      // vocabulary lookups and decode; encodes unless `spm` is set
  std::unique_ptr<Spm> spm;       // GGUF SentencePiece-score vocabularies: encodes as llama.cpp does
  PostProcessor post;
  std::unique_ptr<Decoder> decoder;

  std::vector<AddedToken> added;                 // in the order added
  std::unordered_map<int32_t, std::size_t> added_by_id;
  StringIdMap added_by_content;
  TokenMatcher raw_matcher, normalized_matcher;  // payload: index into `added`

  std::optional<int32_t> bos, eos;
  std::vector<int32_t> eos_extra;
  std::string bos_token, eos_token;  // as tokenizer_config.json / GGUF name them (the chat template uses them)
  std::string chat_template;

  // Adds tokens as tokenizers' AddedVocabulary::add_tokens does: a token already in the model vocabulary
  // keeps that id, any other gets the next free id; then rebuilds the matchers.
  void add_tokens(const std::vector<AddedToken>& tokens);
  void refresh_matchers();

  std::vector<int32_t> encode(std::string_view text, bool add_special) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special) const;
  // The token text decode() hands the decoder for `id`, or nullptr where decode() drops the id (a special token
  // when skipping them, an id with no token).
  const std::string* decode_token(int32_t id, bool skip_special) const;
  // The streaming form of decode()'s decoder (StreamDecoder).
  std::unique_ptr<DecoderStream> decode_stream() const;
  int64_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

  // Applies tokenizer_config.json (chat_template, bos_token, eos_token); `what` names the file.
  Status apply_config(const nlohmann::json& config, const std::string& what);
  void finish_special_ids();  // derives eos_extra once everything is loaded

 private:
  void split_added(const Piece& piece, const TokenMatcher& matcher, std::vector<std::pair<Piece, int32_t>>& out) const;
};

// tokenizer.json (with an optional tokenizer_config.json) -> pipeline. `what` names the source file.
Result<std::unique_ptr<TokenizerImpl>> load_tokenizer_json(const std::string& json_text, const std::string& config_text,
                                                           const std::string& what);
// GGUF tokenizer.ggml.* metadata -> pipeline.
Result<std::unique_ptr<TokenizerImpl>> load_gguf_vocab(const std::filesystem::path& path);

}  // namespace hylo::tok
