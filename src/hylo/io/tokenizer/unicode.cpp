// Lossy UTF-8 decoding, the byte-level map and normalization forms (see unicode.h).
#include "hylo/io/tokenizer/unicode.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace hylo::tok {
namespace {
#include "hylo/io/tokenizer/unicode_tables.inc"

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// The rule for a lead byte b0: how many continuation bytes follow it and the range of the first one (overlongs,
// surrogates and code points above U+10FFFF excluded; the others are 80..BF). False for a byte that starts no
// multi-byte sequence (ASCII, continuation bytes, C0/C1, F5..FF).
bool lead_rule(unsigned char b0, std::size_t& need, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) { need = 1; }
  else if (b0 == 0xE0) { need = 2; lo = 0xA0; }
  else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) { need = 2; }
  else if (b0 == 0xED) { need = 2; hi = 0x9F; }
  else if (b0 == 0xF0) { need = 3; lo = 0x90; }
  else if (b0 >= 0xF1 && b0 <= 0xF3) { need = 3; }
  else if (b0 == 0xF4) { need = 3; hi = 0x8F; }
  else return false;
  return true;
}

// Length of a valid UTF-8 sequence at s[i], or 0 with `bad` = the length of the maximal invalid subpart.
std::size_t valid_seq_len(std::string_view s, std::size_t i, std::size_t& bad) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = b(i);
  if (b0 < 0x80) return 1;
  std::size_t need;
  unsigned char lo, hi;
  if (!lead_rule(b0, need, lo, hi)) { bad = 1; return 0; }
  std::size_t k = 1;
  for (; k <= need; ++k) {
    if (i + k >= s.size()) break;
    const unsigned char c = b(i + k);
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) break;
  }
  if (k == need + 1) return need + 1;
  bad = k;  // the lead byte plus the continuation bytes that were still valid
  return 0;
}

int ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = kCccTable + sizeof(kCccTable) / sizeof(kCccTable[0]);
  const auto* it = std::lower_bound(kCccTable, end, cp, [](const uint32_t (&e)[2], uint32_t v) { return e[0] < v; });
  return (it != end && (*it)[0] == cp) ? static_cast<int>((*it)[1]) : 0;
}

template <std::size_t N>
const uint32_t* find3(const uint32_t (&table)[N][3], uint32_t cp) {
  const auto* end = table + N;
  const auto* it = std::lower_bound(table, end, cp, [](const uint32_t (&e)[3], uint32_t v) { return e[0] < v; });
  return (it != end && (*it)[0] == cp) ? *it : nullptr;
}

template <std::size_t N>
bool in_ranges(const uint32_t (&table)[N][2], uint32_t cp) {
  const auto* end = table + N;
  const auto* it = std::upper_bound(table, end, cp, [](uint32_t v, const uint32_t (&e)[2]) { return v < e[0]; });
  if (it == table) return false;
  --it;
  return cp >= (*it)[0] && cp <= (*it)[1];
}

void decompose(uint32_t cp, bool compat, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const uint32_t* e = find3(kCanonIndex, cp)) {
    for (uint32_t k = 0; k < e[2]; ++k) decompose(kCanonPool[e[1] + k], compat, out);
    return;
  }
  if (compat) {
    if (const uint32_t* e = find3(kCompatIndex, cp)) {
      for (uint32_t k = 0; k < e[2]; ++k) decompose(kCompatPool[e[1] + k], compat, out);
      return;
    }
  }
  out.push_back(cp);
}

uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = kCompositions + sizeof(kCompositions) / sizeof(kCompositions[0]);
  const auto* it = std::lower_bound(kCompositions, end, std::pair{a, b}, [](const uint32_t (&e)[3], std::pair<uint32_t, uint32_t> v) {
    return e[0] < v.first || (e[0] == v.first && e[1] < v.second);
  });
  return (it != end && (*it)[0] == a && (*it)[1] == b) ? (*it)[2] : 0;
}

}  // namespace

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t bad = 0;
    const std::size_t n = valid_seq_len(s, i, bad);
    if (n) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

bool utf8_valid(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    std::size_t bad = 0;
    const std::size_t n = valid_seq_len(s, i, bad);
    if (!n) return false;
    i += n;
  }
  return true;
}

std::size_t utf8_incomplete_tail(std::string_view s) {
  // Every byte that is not a continuation byte starts a character in utf8_lossy's walk (an unfinished sequence
  // ends at it), so the tail is decided by the last such byte, if it lies within the last 3 bytes.
  for (std::size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    const auto b0 = static_cast<unsigned char>(s[s.size() - k]);
    if ((b0 & 0xC0) == 0x80) continue;
    std::size_t need;
    unsigned char lo, hi;
    if (!lead_rule(b0, need, lo, hi) || k - 1 >= need) return 0;  // ASCII, an invalid lead, or a finished sequence
    for (std::size_t j = 1; j < k; ++j) {
      const auto c = static_cast<unsigned char>(s[s.size() - k + j]);
      if (c < (j == 1 ? lo : 0x80) || c > (j == 1 ? hi : 0xBF)) return 0;  // already ill-formed
    }
    return k;
  }
  return 0;
}

void Utf8Validator::feed(unsigned char c) {
  if (failed_) return;
  if (need_ == 0) {
    if (c >= 0x80 && !lead_rule(c, need_, lo_, hi_)) failed_ = true;
    return;
  }
  if (c < lo_ || c > hi_) {
    failed_ = true;
    return;
  }
  --need_;
  lo_ = 0x80;
  hi_ = 0xBF;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const ByteLevelMap& byte_level_map() {
  static const ByteLevelMap map = [] {
    ByteLevelMap m;
    m.char_to_byte.fill(-1);
    // Printable Latin-1 bytes map to themselves; the other 68 bytes map to 256, 257, ... in byte order.
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = keep ? static_cast<uint32_t>(b) : next++;
      utf8_append(m.byte_to_utf8[b], cp);
      m.char_to_byte[cp] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return map;
}

bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::string unicode_normalize(std::string_view text, NormForm form) {
  const bool compat = form == NormForm::kNFKC || form == NormForm::kNFKD;
  const bool compose = form == NormForm::kNFC || form == NormForm::kNFKC;
  // Fast path: text without any character that can change under the form is already normalized.
  {
    bool maybe = false;
    std::size_t i = 0;
    while (i < text.size() && !maybe) {
      if (static_cast<unsigned char>(text[i]) < 0x80) { ++i; continue; }
      const uint32_t cp = utf8_next(text, i);
      if (compose) maybe = compat ? in_ranges(kMaybeNfkcRanges, cp) : in_ranges(kMaybeNfcRanges, cp);
      else maybe = ccc_of(cp) != 0 || (cp >= kSBase && cp < kSBase + kSCount) || find3(kCanonIndex, cp) ||
                   (compat && find3(kCompatIndex, cp));
    }
    if (!maybe) return std::string(text);
  }
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) decompose(utf8_next(text, i), compat, cps);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < cps.size();) {
    if (ccc_of(cps[i]) == 0) { ++i; continue; }
    std::size_t j = i;
    while (j < cps.size() && ccc_of(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(j),
                     [](uint32_t a, uint32_t b) { return ccc_of(a) < ccc_of(b); });
    i = j;
  }
  if (compose && !cps.empty()) {
    // Canonical composition (UAX #15): combine each character with the last starter unless blocked.
    std::vector<uint32_t> out;
    out.reserve(cps.size());
    std::size_t starter = SIZE_MAX;  // index in `out` of the last starter
    int last_ccc = 0;                // combining class of the last character in `out`
    for (uint32_t cp : cps) {
      const int c = ccc_of(cp);
      if (starter != SIZE_MAX) {
        const bool adjacent = out.size() == starter + 1;
        const bool blocked = !adjacent && (last_ccc == 0 || last_ccc >= c);
        if (!blocked) {
          if (const uint32_t comp = compose_pair(out[starter], cp)) {
            out[starter] = comp;
            continue;
          }
        }
      }
      if (c == 0) starter = out.size();
      last_ccc = c;
      out.push_back(cp);
    }
    cps.swap(out);
  }
  std::string result;
  result.reserve(text.size());
  for (uint32_t cp : cps) utf8_append(result, cp);
  return result;
}

}  // namespace hylo::tok
