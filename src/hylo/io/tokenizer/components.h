// The pipeline stages of a Hugging Face tokenizer, as hylo runs them: normalizers, pre-tokenizers, the BPE
// model, post-processors and decoders. Each stage mirrors the `tokenizers` 0.23 component of the same name
// so that encode/decode are equal token for token; tokenizer_json.cpp and gguf_vocab.cpp build them.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hylo/io/tokenizer/regex.h"
#include "hylo/io/tokenizer/unicode.h"

namespace hylo::tok {

// Transparent string hashing so that lookups by string_view do not allocate.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// A piece of text on its way through pre-tokenization. `at_start`: the piece begins at offset 0 of the
// original input (Metaspace's prepend_scheme "first" looks at this).
struct Piece {
  std::string text;
  bool at_start = false;
};

// ---- patterns and splitting ---------------------------------------------------------------------------------
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// What a Split finds: a regex, a literal string, or one character class tested per code point.
struct Pattern {
  enum class Kind { kRegex, kString, kChar, kWhiteSpaceChar };
  Kind kind = Kind::kString;
  std::shared_ptr<const Regex> regex;
  std::string literal;
  uint32_t ch = 0;
  // Covers `text` with (start, end, is_match) segments in order, as tokenizers' Pattern::find_matches.
  void find_matches(std::string_view text, std::vector<std::pair<std::pair<std::size_t, std::size_t>, bool>>& out) const;
};

// Splits `piece` by `pattern` with `behavior` (`invert` swaps matches and the rest), appending non-empty
// pieces to `out`.
void split_piece(const Piece& piece, const Pattern& pattern, SplitBehavior behavior, bool invert, std::vector<Piece>& out);

// ---- normalizers ---------------------------------------------------------------------------------------------
struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};
std::unique_ptr<Normalizer> make_unicode_normalizer(NormForm form);
std::unique_ptr<Normalizer> make_prepend_normalizer(std::string prepend);
std::unique_ptr<Normalizer> make_replace_normalizer(Pattern pattern, std::string content);
std::unique_ptr<Normalizer> make_strip_normalizer(bool left, bool right);
std::unique_ptr<Normalizer> make_sequence_normalizer(std::vector<std::unique_ptr<Normalizer>> parts);

// ---- pre-tokenizers ------------------------------------------------------------------------------------------
struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their pre-tokenized pieces.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_split_pre_tokenizer(Pattern pattern, SplitBehavior behavior, bool invert);
// ByteLevel: optional prefix space, optional GPT-2 regex split, then bytes -> byte-level characters.
Result<std::unique_ptr<PreTokenizer>> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex);
Result<std::unique_ptr<PreTokenizer>> make_digits_pre_tokenizer(bool individual_digits);
enum class PrependScheme { kFirst, kNever, kAlways };
std::unique_ptr<PreTokenizer> make_metaspace_pre_tokenizer(uint32_t replacement, PrependScheme scheme, bool split);
Result<std::unique_ptr<PreTokenizer>> make_whitespace_pre_tokenizer();
std::unique_ptr<PreTokenizer> make_whitespace_split_pre_tokenizer();
std::unique_ptr<PreTokenizer> make_sequence_pre_tokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts);

// The GPT-2 pre-tokenization regex that ByteLevel(use_regex=true) applies.
extern const char* const kGpt2Pattern;

// ---- BPE model -----------------------------------------------------------------------------------------------
class Bpe {
 public:
  StringIdMap vocab;
  std::vector<std::string> id_to_token;  // dense; "" for holes
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix, end_of_word_suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;

  // Merge table keyed by the pair of ids: rank (lower merges first) and the id of the merged token.
  struct MergeInfo { int32_t rank; int32_t new_id; };
  std::unordered_map<uint64_t, MergeInfo> merges;
  static uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  // Ids of "<0xNN>" byte tokens (byte_fallback), -1 where absent.
  int32_t byte_token[256];

  Bpe();
  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
  // The merge loop alone, on initial symbols (exposed for tests): `symbols` in, merged ids out.
  void merge_symbols(std::vector<int32_t>& ids) const;
  void clear_cache() const;

 private:
  void tokenize_uncached(std::string_view word, std::vector<int32_t>& out) const;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

// ---- SentencePiece-score model (llama.cpp's SPM tokenizer) ------------------------------------------------------
// GGUF vocabularies with tokenizer.ggml.model "llama" (Llama-2, Mistral, Gemma, Phi-3, ...): the text is split at
// control / user-defined / unknown tokens (each found everywhere, longest token first), each remaining fragment
// gets "▁" for every space (and one leading "▁" when add_space_prefix and the fragment starts the text or follows
// a special token), then adjacent symbols merge by the highest score of the token they form (leftmost on ties),
// starting from UTF-8 characters; a symbol that is no token becomes its bytes' <0xXX> tokens. Input bytes are
// taken as they are: invalid UTF-8 bytes become single-byte symbols, hence byte tokens (as llama.cpp).
class Spm {
 public:
  StringIdMap by_text;             // token text -> id; of duplicate texts the last id wins (llama.cpp's map)
  std::vector<float> scores;       // [V] tokenizer.ggml.scores
  int32_t byte_token[256];         // "<0xXX>", else the one-byte token, else unk_id (-1: none)
  int32_t unk_id = -1;
  bool add_space_prefix = true;
  struct Special {
    std::string text;
    int32_t id;
  };
  std::vector<Special> specials;   // control, user-defined and unknown tokens, longest text first

  Spm();
  // Appends the ids of `text` (special tokens included as their ids; no BOS/EOS).
  void encode(std::string_view text, std::vector<int32_t>& out) const;
  // One fragment free of special tokens: escape, merge, byte fallback.
  void tokenize_fragment(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const;
};

// ---- post-processor ------------------------------------------------------------------------------------------
// The single-sequence template (TemplateProcessing / Roberta / Bert): ids before and after the sequence.
struct PostProcessor {
  std::vector<int32_t> prefix, suffix;
  bool any = false;
};

// ---- decoders ------------------------------------------------------------------------------------------------
// A token on its way through a streamed decoder chain: a whole token, or (whole == false) the next part of the one
// token that a fusing decoder (Fuse, ByteLevel) makes of everything; that token lasts to the end of the stream.
struct StreamPiece {
  std::string text;
  bool whole = true;
};

// The streaming form of a decoder (decoder_streams.cpp), for StreamDecoder: tokens arrive one at a time and output
// is given as soon as no later token can change it, so the concatenated output equals that of decode_chain on all
// tokens (decode_chain stays the reference; the tokenizer tests compare the two). Work per token is bounded by the
// token and the text it releases, never by the length of the stream.
class DecoderStream {
 public:
  virtual ~DecoderStream() = default;
  virtual void push(StreamPiece piece, std::vector<StreamPiece>& out) = 0;
  virtual void finish(std::vector<StreamPiece>& out) = 0;  // end of the stream: release what is held
  virtual std::size_t held_bytes() const = 0;              // text held back for later tokens
};

struct Decoder {
  virtual ~Decoder() = default;
  // tokenizers' decode_chain: tokens in, tokens out.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // A fresh streaming form of this decoder; it may refer to the decoder, which must outlive it.
  virtual std::unique_ptr<DecoderStream> stream() const = 0;
};
std::unique_ptr<Decoder> make_byte_level_decoder();
std::unique_ptr<Decoder> make_metaspace_decoder(uint32_t replacement, PrependScheme scheme);
std::unique_ptr<Decoder> make_replace_decoder(Pattern pattern, std::string content);
std::unique_ptr<Decoder> make_byte_fallback_decoder();
std::unique_ptr<Decoder> make_fuse_decoder();
std::unique_ptr<Decoder> make_strip_decoder(std::string content, std::size_t start, std::size_t stop);
std::unique_ptr<Decoder> make_sequence_decoder(std::vector<std::unique_ptr<Decoder>> parts);
// What decode does without a decoder (tokens joined by single spaces), streamed.
std::unique_ptr<DecoderStream> make_join_stream();

// ---- added tokens --------------------------------------------------------------------------------------------
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, normalized = false, single_word = false;
  // What decode and id_to_token give: tokenizers returns a normalized token's content normalized.
  std::string decoded;
};

// Leftmost-longest matcher over a set of strings (what `tokenizers` does with aho-corasick).
class TokenMatcher {
 public:
  void build(const std::vector<std::pair<std::string, int>>& patterns);  // (pattern, payload)
  bool empty() const { return nodes_.size() <= 1; }
  // Finds the leftmost-longest match at or after `from`: returns payload, sets [start, end); -1 if none.
  int find(std::string_view text, std::size_t from, std::size_t& start, std::size_t& end) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> next;
    int payload = -1;
  };
  std::vector<Node> nodes_{Node{}};
  bool first_byte_[256] = {};
};

}  // namespace hylo::tok
