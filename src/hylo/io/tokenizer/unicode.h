// UTF-8 and Unicode helpers of the tokenizer: lossy UTF-8 decoding (each maximal invalid subpart becomes
// U+FFFD, as Rust's String::from_utf8_lossy and Python's errors="replace" do), code point iteration, the
// GPT-2 byte <-> character map of byte-level BPE, and Unicode normalization forms (NFC/NFD/NFKC/NFKD) from
// tables generated out of the Unicode Character Database (scripts/gen_unicode_tables.py).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace hylo::tok {

// Returns the text with every maximal ill-formed subsequence replaced by U+FFFD (EF BF BD).
std::string utf8_lossy(std::string_view bytes);
bool utf8_valid(std::string_view bytes);

// Length (0..3) of the bytes at the end of s that begin a character and are still a valid start of one: utf8_lossy
// renders them as one U+FFFD, but more bytes may complete the character. Everything before them decodes the same
// whatever follows: utf8_lossy(s + t) == utf8_lossy(s[0, n-k)) + utf8_lossy(s[n-k, n) + t).
std::size_t utf8_incomplete_tail(std::string_view s);

// utf8_valid one byte at a time (the rules of utf8_valid), for bytes that arrive in parts.
class Utf8Validator {
 public:
  void feed(unsigned char c);
  bool failed() const { return failed_; }                 // ill-formed: no further bytes can make it valid
  bool complete() const { return !failed_ && need_ == 0; }  // valid and not inside a character
 private:
  std::size_t need_ = 0;           // continuation bytes still expected
  unsigned char lo_ = 0x80, hi_ = 0xBF;  // range of the next continuation byte
  bool failed_ = false;
};

// Decodes the code point starting at s[i] of VALID UTF-8 and advances i.
inline uint32_t utf8_next(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) { ++i; return b0; }
  if (b0 < 0xE0) {
    uint32_t cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return cp;
  }
  if (b0 < 0xF0) {
    uint32_t cp = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                  (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return cp;
  }
  uint32_t cp = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return cp;
}
// Start of the code point that ends just before byte i (i > lo), stepping back over continuation bytes but never
// below lo; the inverse of utf8_next on valid UTF-8.
inline std::size_t utf8_prev(std::string_view s, std::size_t i, std::size_t lo = 0) {
  std::size_t b = i - 1;
  while (b > lo && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  return b;
}

// Length in bytes of the UTF-8 sequence whose lead byte is b (valid UTF-8 assumed).
inline std::size_t utf8_len(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }
void utf8_append(std::string& out, uint32_t cp);

// GPT-2's reversible byte <-> printable character map (bytes_to_unicode in the original encoder.py).
struct ByteLevelMap {
  std::array<std::string, 256> byte_to_utf8;  // byte -> UTF-8 of its character
  std::array<int16_t, 324> char_to_byte;      // code point (< 324) -> byte, or -1
  int byte_of(uint32_t cp) const { return cp < char_to_byte.size() ? char_to_byte[cp] : -1; }
};
const ByteLevelMap& byte_level_map();

enum class NormForm { kNFC, kNFD, kNFKC, kNFKD };
// Normalizes valid UTF-8 text.
std::string unicode_normalize(std::string_view text, NormForm form);

// Unicode White_Space, as Rust's char::is_whitespace.
bool is_white_space(uint32_t cp);

}  // namespace hylo::tok
