// libFuzzer target for the tokenizer. The first input byte picks the mode:
//   even: the rest is text, encoded with the fixed byte-level tokenizer tests/data/tokenizer/tiny_bytelevel.json;
//         decode(encode(x)) must equal the lossy UTF-8 reading of x (byte-level BPE is lossless), StreamDecoder
//         must emit the same text piecewise, and with bit 1 set, encoding with special tokens must add exactly
//         the template's <|endoftext|> in front.
//   even with bit 2 set: the same with the SentencePiece-score GGUF vocabulary tests/data/tokenizer/tiny_spm.gguf
//         (llama.cpp's SPM algorithm): ids in range, decode is valid UTF-8 and equals StreamDecoder's output, and for
//         valid UTF-8 without special-token text or U+2581 decode(encode(x)) == x; with bit 1 set, <s> is added in front.
//   even with bit 3 set: the rest is a sequence of ids (2 bytes each, little-endian, taken modulo the vocabulary
//         size plus 2, so unknown ids occur) for the byte-level tokenizer, or with bit 2 the GGUF one: StreamDecoder's
//         output equals decode, with special tokens kept, and with bit 1 skipped.
//   odd:  the rest is a tokenizer.json; loading must end in a tokenizer or an error (never a crash), and an
//         accepted tokenizer must encode and decode a fixed text, StreamDecoder giving the same text.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/io/tokenizer/unicode.h"

namespace {
// Everything a StreamDecoder gives for ids, pushed one at a time; it must always be valid UTF-8 and never hold
// more than max_held bytes (a byte-level decoder holds at most an unfinished character: 3 bytes).
std::string streamed(const hylo::tok::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special,
                     std::size_t max_held = SIZE_MAX) {
  hylo::tok::StreamDecoder sd(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    out += sd.push(id);
    if (sd.held_bytes() > max_held) std::abort();
  }
  out += sd.flush();
  if (!hylo::tok::utf8_valid(out)) std::abort();
  return out;
}

const hylo::tok::Tokenizer& spm_tokenizer() {
  static hylo::tok::Tokenizer tok = [] {
    const auto path = std::filesystem::path(HYLO_SOURCE_DIR) / "tests/data/tokenizer/tiny_spm.gguf";
    return hylo::tok::Tokenizer::from_path(path).value_or_throw();
  }();
  return tok;
}

int fuzz_spm(uint8_t mode, const std::string& rest) {
  const auto& tok = spm_tokenizer();
  const auto ids = tok.encode(rest, false);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  const std::string text = tok.decode(ids, false);
  if (!hylo::tok::utf8_valid(text)) std::abort();
  const bool plain = hylo::tok::utf8_valid(rest) && rest.find("<s>") == std::string::npos &&
                     rest.find("</s>") == std::string::npos && rest.find("<unk>") == std::string::npos &&
                     rest.find("<|u|>") == std::string::npos &&
                     rest.find("\xE2\x96\x81") == std::string::npos;  // a literal U+2581 decodes to a space
  if (plain && text != rest) std::abort();
  if (mode & 2) {
    auto with = tok.encode(rest, true);
    if (with.empty() || with[0] != 1 || !std::equal(with.begin() + 1, with.end(), ids.begin(), ids.end())) std::abort();
  }
  if (streamed(tok, ids, false) != text) std::abort();
  return 0;
}

const hylo::tok::Tokenizer& fixed_tokenizer() {
  static hylo::tok::Tokenizer tok = [] {
    const auto path = std::filesystem::path(HYLO_SOURCE_DIR) / "tests/data/tokenizer/tiny_bytelevel.json";
    return hylo::tok::Tokenizer::from_path(path).value_or_throw();
  }();
  return tok;
}

// Arbitrary ids, not only those encode gives: byte tokens that split characters or never form one, specials.
int fuzz_ids(uint8_t mode, const std::string& rest) {
  const auto& tok = (mode & 4) ? spm_tokenizer() : fixed_tokenizer();
  const bool skip = mode & 2;
  std::vector<int32_t> ids;
  for (std::size_t i = 0; i + 1 < rest.size(); i += 2) {
    const auto v = static_cast<uint16_t>(static_cast<uint8_t>(rest[i]) | (static_cast<uint8_t>(rest[i + 1]) << 8));
    ids.push_back(static_cast<int32_t>(v % (tok.vocab_size() + 2)));
  }
  const std::string text = tok.decode(ids, skip);
  const std::size_t max_held = (mode & 4) ? SIZE_MAX : 3;  // a byte-fallback run that is still valid is held whole
  if (!hylo::tok::utf8_valid(text) || streamed(tok, ids, skip, max_held) != text) std::abort();
  return 0;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0 && (data[0] & 8)) return fuzz_ids(data[0], rest);
  if ((data[0] & 1) == 0 && (data[0] & 4)) return fuzz_spm(data[0], rest);
  if ((data[0] & 1) == 0) {
    const auto& tok = fixed_tokenizer();
    const auto ids = tok.encode(rest, false);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    if (tok.decode(ids, false) != hylo::tok::utf8_lossy(rest)) std::abort();
    if (data[0] & 2) {
      // The file's template puts <|endoftext|> before the sequence.
      auto with = tok.encode(rest, true);
      if (with.empty() || with[0] != *tok.token_to_id("<|endoftext|>") ||
          !std::equal(with.begin() + 1, with.end(), ids.begin(), ids.end()))
        std::abort();
    }
    if (streamed(tok, ids, false, 3) != hylo::tok::utf8_lossy(rest)) std::abort();
    return 0;
  }
  auto tok = hylo::tok::Tokenizer::from_json_string(rest);
  if (!tok.ok()) {
    if (tok.error().empty()) std::abort();
    return 0;
  }
  const auto ids = tok->encode("Hello, world! 123 \xF0\x9F\x98\x80 <s>\xFF", true);
  const std::string text = tok->decode(ids, false);
  if (!hylo::tok::utf8_valid(text)) std::abort();
  if (streamed(*tok, ids, false) != text) std::abort();  // whatever the decoder chain
  return 0;
}
