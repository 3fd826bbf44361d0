// libFuzzer target for the tokenizer. The first input byte picks the mode:
//   even: the rest is text, encoded with the fixed byte-level tokenizer tests/data/tokenizer/tiny_bytelevel.json;
//         decode(encode(x)) must equal the lossy UTF-8 reading of x (byte-level BPE is lossless), StreamDecoder
//         must emit the same text piecewise, and with bit 1 set, encoding with special tokens must add exactly
//         the template's <|endoftext|> in front.
//   even with bit 2 set: the same with the SentencePiece-score GGUF vocabulary tests/data/tokenizer/tiny_spm.gguf
//         (llama.cpp's SPM algorithm): ids in range, decode is valid UTF-8 and (without U+FFFD) equals StreamDecoder's
//         output, and for
//         valid UTF-8 without special-token text or U+2581 decode(encode(x)) == x; with bit 1 set, <s> is added in front.
//   odd:  the rest is a tokenizer.json; loading must end in a tokenizer or an error (never a crash), and an
//         accepted tokenizer must encode and decode a fixed text.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/io/tokenizer/unicode.h"

namespace {
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
  hylo::tok::StreamDecoder sd(tok, /*skip_special_tokens=*/false);
  std::string streamed;
  for (int32_t id : ids) streamed += sd.push(id);
  streamed += sd.flush();
  if (!hylo::tok::utf8_valid(streamed)) std::abort();
  // A run of byte tokens that is not UTF-8 decodes to U+FFFD per byte as a whole (tokenizers' ByteFallback), so
  // a stream cut inside such a run may differ; without U+FFFD in the text the stream must equal decode.
  if (text.find("\xEF\xBF\xBD") == std::string::npos && streamed != text) std::abort();
  return 0;
}

const hylo::tok::Tokenizer& fixed_tokenizer() {
  static hylo::tok::Tokenizer tok = [] {
    const auto path = std::filesystem::path(HYLO_SOURCE_DIR) / "tests/data/tokenizer/tiny_bytelevel.json";
    return hylo::tok::Tokenizer::from_path(path).value_or_throw();
  }();
  return tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
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
    hylo::tok::StreamDecoder sd(tok, /*skip_special_tokens=*/false);
    std::string streamed;
    for (int32_t id : ids) streamed += sd.push(id);
    streamed += sd.flush();
    if (streamed != hylo::tok::utf8_lossy(rest)) std::abort();
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
  return 0;
}
