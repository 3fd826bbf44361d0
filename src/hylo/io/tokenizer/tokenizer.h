// The tokenizer hylo runs with: byte-level BPE (GPT-2, Llama-3, Qwen2/3, SmolLM2) and SentencePiece-style
// BPE with byte fallback (Llama-2, Mistral), loaded from a tokenizer.json, a model directory, or GGUF vocab
// metadata. Encode/decode equal Hugging Face `tokenizers` token for token. Invalid UTF-8 input is defined:
// each invalid byte is treated as U+FFFD, as `tokenizers` does on a lossy Rust string (never a crash).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::tok {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string content;
};

class TokenizerImpl;

class Tokenizer {
 public:
  // PATH may be a tokenizer.json file, a directory holding tokenizer.json (and tokenizer_config.json for
  // the chat template and special tokens), or a .gguf file (tokenizer.ggml.* metadata).
  static Result<Tokenizer> from_path(const std::filesystem::path& path);
  static Result<Tokenizer> from_json_string(const std::string& tokenizer_json,
                                            const std::string& tokenizer_config_json = "");

  // add_special_tokens: the post-processor's BOS/EOS (as `tokenizers`' encode(add_special_tokens=...)).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;                       // including added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  std::optional<int32_t> bos_id() const;
  std::vector<int32_t> eos_ids() const;             // eos plus chat end-of-turn tokens
  bool is_special(int32_t id) const;

  // Renders messages as the model family was trained (ChatML for Qwen/SmolLM2, Llama-3 headers, [INST] for
  // Llama-2/Mistral), matching transformers' apply_chat_template output for these families.
  Result<std::string> apply_chat_template(const std::vector<ChatMessage>& messages,
                                          bool add_generation_prompt = true) const;
  bool has_chat_template() const;

  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
  std::unique_ptr<TokenizerImpl> impl_;
};

class DecoderStream;

// Incremental detokenizer for streaming output: feeds ids one by one and returns text as soon as no later id can
// change it. The concatenation of everything push() and flush() return equals decode() of all ids, exactly, for
// every decoder (each decoder has a streaming form beside its one-shot form, decoder_streams.cpp). Held back is
// only what a later id can change: with byte-level BPE the bytes of an unfinished UTF-8 character (at most 3);
// with byte fallback (SentencePiece) a run of <0xNN> byte tokens while it is still valid UTF-8, since decode()
// renders a whole run as U+FFFD per byte once any byte of it is ill-formed; with Strip the copies of its content
// that may end the text. Ill-formed bytes come out as U+FFFD at once. (A decoder chain that applies a regex
// Replace, ByteLevel or ByteFallback after Fuse has no streaming form within the fused text: it is held to the
// end, still exact.) The work per id is bounded by that id's text and the text it releases, never by the length
// of the stream.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  ~StreamDecoder();
  StreamDecoder(StreamDecoder&&) noexcept;
  std::string push(int32_t id);   // newly final text (may be empty mid-character)
  std::string flush();            // everything held; the next push starts a new text
  std::size_t held_bytes() const; // text held back for later ids, in bytes
 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::unique_ptr<DecoderStream> stream_;
};

}  // namespace hylo::tok
