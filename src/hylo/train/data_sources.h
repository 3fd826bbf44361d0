// Turning input files into tokenized Documents for `hylo data`: plain text (one document per file, per
// blank-line paragraph, or per separator-delimited piece), JSONL text fields, and chat JSONL rendered with the
// model's chat template (optionally masking everything but the assistant's turns out of the loss). Every
// document follows the model's convention: BOS as its tokenizer's post-processor adds it, then the text, then
// the end-of-document id.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/core/result.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/train/data_format.h"

namespace hylo::train {

// How a model separates documents. bos_added: encode(text, add_special_tokens=true) starts with bos_id (as
// Llama-3's does; GPT-2, SmolLM2 and Qwen add nothing). doc_end_id: appended after every document; by default
// the pretraining separator <|endoftext|> / <|end_of_text|> when the vocabulary has one, else the tokenizer's EOS.
struct DocConvention {
  std::optional<int32_t> bos_id;
  bool bos_added = false;
  std::optional<int32_t> doc_end_id;
};

// doc_end: "" for the default above, "none" for no end-of-document id, or a token string of the vocabulary.
Result<DocConvention> doc_convention(const tok::Tokenizer& tokenizer, const std::string& doc_end);

// The index's "tokenizer" block: vocab_size, fingerprint, bos_id, bos_added, doc_end_id (+ source path).
nlohmann::json tokenizer_json(const tok::Tokenizer& tokenizer, const DocConvention& conv, const std::string& source);

// FNV-1a 64 over every token string by id: equal fingerprints mean the same vocabulary (hex string).
std::string tokenizer_fingerprint(const tok::Tokenizer& tokenizer);

enum class TextSplit { kFile, kParagraphs, kSeparator };

// A piece of a text file that becomes one document. Bytes [byte_begin, byte_end) of the file; lines 1-based.
struct TextSpan {
  int64_t byte_begin = 0, byte_end = 0;
  int64_t line_begin = 0, line_end = 0;
};

// Splits bytes [begin, end) of `text` into document spans; whitespace-only pieces are dropped.
// kFile: the whole range; kParagraphs: maximal runs of non-blank lines; kSeparator: pieces between
// occurrences of `separator`.
std::vector<TextSpan> split_text(std::string_view text, int64_t begin, int64_t end, TextSplit mode,
                                 const std::string& separator);

// Byte range of lines [first, last] (1-based, inclusive) of `text`; an error names `where` if out of range.
Result<TextSpan> line_range(std::string_view text, int64_t first, int64_t last, const std::string& where);

// One document from text: BOS per convention, the encoded text, the end-of-document id. Every token a target.
Document text_document(const tok::Tokenizer& tokenizer, const DocConvention& conv, std::string text);

// One chat document: the messages rendered with the chat template (no generation prompt), encoded without
// added special tokens (the template carries them), then the end-of-document id. mask_prompt: only the
// assistant turns -- from the end of the generation prompt before each to the end of that turn as the template
// renders it (content and end-of-turn marker) -- are targets; the rendered text is then encoded piecewise at
// those boundaries. `where` (file:line) prefixes errors.
Result<Document> chat_document(const tok::Tokenizer& tokenizer, const DocConvention& conv,
                               const std::vector<tok::ChatMessage>& messages, bool mask_prompt,
                               const std::string& where);

struct InputOptions {
  TextSplit split = TextSplit::kFile;
  std::string separator;              // for kSeparator
  std::string jsonl_field = "text";   // JSONL lines without "messages" take their text from this field
  bool mask_prompt = false;           // chat: only assistant turns are targets
};

// Reads one input file: *.jsonl as JSONL (a line with a "messages" array is a chat, else jsonl_field is its
// text), anything else as text split per `options`. `exclude` (a byte range, may be empty) is cut out of a text
// file first (a held-out slice); the rest is split around it. Sets *kind for the index.
Result<std::vector<Document>> read_input_file(const std::filesystem::path& path, const tok::Tokenizer& tokenizer,
                                              const DocConvention& conv, const InputOptions& options,
                                              int32_t source, std::optional<TextSpan> exclude, std::string* kind);

// Files and directories to a sorted list of regular files (directories recursively, hidden names skipped).
Result<std::vector<std::filesystem::path>> expand_inputs(const std::vector<std::filesystem::path>& inputs);

}  // namespace hylo::train
