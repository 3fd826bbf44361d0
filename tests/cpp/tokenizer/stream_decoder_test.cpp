// StreamDecoder against decode(): the concatenated stream equals the one-shot decode for every decoder and any id
// sequence (ill-formed byte runs, characters split over tokens, text that really ends in U+FFFD), what is held back
// stays small, and ill-formed bytes come out at once. Also the UTF-8 helpers the streams rely on, checked
// exhaustively against utf8_lossy / utf8_valid.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/io/tokenizer/unicode.h"
#include "tiny_spm_json.h"

namespace hylo::tok {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

// Bytes that exercise every UTF-8 rule: ASCII, continuation ranges (80-8F, 90-9F, A0-BF), never-valid leads
// (C0 C1 F5 FF) and leads with special second-byte ranges (E0 ED F0 F4).
const std::vector<unsigned char> kProbeBytes = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                                0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};

std::vector<std::string> probe_strings(std::size_t max_len) {
  std::vector<std::string> all{""}, level{""};
  for (std::size_t len = 1; len <= max_len; ++len) {
    std::vector<std::string> next;
    for (const auto& s : level)
      for (unsigned char b : kProbeBytes) next.push_back(s + static_cast<char>(b));
    all.insert(all.end(), next.begin(), next.end());
    level.swap(next);
  }
  return all;
}

// Every way to finish a character: up to 3 continuation bytes from each continuation range's ends.
std::vector<std::string> continuations() {
  std::vector<std::string> out;
  for (const auto& c : probe_strings(3))
    if (std::all_of(c.begin(), c.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) == 0x80; }))
      out.push_back(c);
  return out;
}

TEST(Utf8IncompleteTail, SplitsLossyDecodingExactly) {
  const auto finish = continuations();
  const auto strings = probe_strings(4);
  const auto tails = probe_strings(1);
  for (const auto& s : strings) {
    const std::size_t k = utf8_incomplete_tail(s);
    ASSERT_LE(k, 3u);
    const std::string head = s.substr(0, s.size() - k), held = s.substr(s.size() - k);
    for (const auto& t : tails) ASSERT_EQ(utf8_lossy(s + t), utf8_lossy(head) + utf8_lossy(held + t)) << testing::PrintToString(s);
    // What is held can still become a character; with nothing held, nothing could.
    const bool completable =
        std::any_of(finish.begin(), finish.end(), [&](const std::string& c) { return !c.empty() && utf8_valid(held + c); });
    EXPECT_EQ(k > 0, completable) << testing::PrintToString(s);
  }
}

TEST(Utf8Validator, AgreesWithUtf8Valid) {
  for (const auto& s : probe_strings(4)) {
    Utf8Validator v;
    for (char c : s) v.feed(static_cast<unsigned char>(c));
    ASSERT_EQ(v.complete(), utf8_valid(s)) << testing::PrintToString(s);
  }
  // failed(): no bytes that follow can make it valid (every validator state is reached within 3 bytes).
  const auto finish = continuations();
  for (const auto& s : probe_strings(3)) {
    Utf8Validator v;
    for (char c : s) v.feed(static_cast<unsigned char>(c));
    const bool can_be_valid =
        std::any_of(finish.begin(), finish.end(), [&](const std::string& c) { return utf8_valid(s + c); });
    ASSERT_EQ(v.failed(), !can_be_valid) << testing::PrintToString(s);
  }
}

std::filesystem::path data(const char* name) { return std::filesystem::path(HYLO_SOURCE_DIR) / "tests/data/tokenizer" / name; }

std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder sd(tok, skip);
  std::string out;
  for (int32_t id : ids) out += sd.push(id);
  return out + sd.flush();
}

// Random id sequences, biased towards the ids that make decoding hard (byte tokens, specials).
void expect_stream_equals_decode(const Tokenizer& tok, const std::vector<int32_t>& interesting, int cases, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto vocab = static_cast<int32_t>(tok.vocab_size());
  std::uniform_int_distribution<int32_t> any(-2, vocab + 1);
  std::uniform_int_distribution<std::size_t> pick(0, interesting.size() - 1), len(0, 40);
  for (int c = 0; c < cases; ++c) {
    std::vector<int32_t> ids(len(rng));
    for (auto& id : ids) id = (rng() % 3 != 0 && !interesting.empty()) ? interesting[pick(rng)] : any(rng);
    for (bool skip : {false, true})
      ASSERT_EQ(stream_all(tok, ids, skip), tok.decode(ids, skip)) << "ids " << testing::PrintToString(ids) << " skip " << skip;
  }
}

std::vector<int32_t> ids_of(const Tokenizer& tok, const std::vector<std::string>& tokens) {
  std::vector<int32_t> ids;
  for (const auto& t : tokens)
    if (auto id = tok.token_to_id(t)) ids.push_back(*id);
  return ids;
}

std::vector<std::string> byte_level_chars(std::initializer_list<int> bytes) {
  std::vector<std::string> out;
  for (int b : bytes) out.push_back(byte_level_map().byte_to_utf8[b]);
  return out;
}

TEST(StreamDecoderInvariant, ByteLevel) {
  auto tok = Tokenizer::from_path(data("tiny_bytelevel.json")).value_or_throw();
  auto interesting = ids_of(tok, byte_level_chars({0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xEF, 0xBF, 0xBD, 0xFF, 0xC3, 0xA9, 0x41, 0x20}));
  for (const char* s : {"<|endoftext|>", "<|im_start|>", "<think>"}) interesting.push_back(*tok.token_to_id(s));
  expect_stream_equals_decode(tok, interesting, 3000, 1);
}

TEST(StreamDecoderInvariant, SentencePieceGguf) {
  auto tok = Tokenizer::from_path(data("tiny_spm.gguf")).value_or_throw();
  std::vector<int32_t> interesting;
  for (const char* b : {"<0xE2>", "<0x82>", "<0xAC>", "<0xF0>", "<0x9F>", "<0x98>", "<0xEF>", "<0xBF>", "<0xBD>", "<0xFF>", "<0x20>"})
    if (auto id = tok.token_to_id(b)) interesting.push_back(*id);
  ASSERT_GE(interesting.size(), 8u);
  for (int32_t id = 0; id < 12 && id < tok.vocab_size(); ++id) interesting.push_back(id);  // specials, ▁ pieces
  expect_stream_equals_decode(tok, interesting, 3000, 2);
}

// A decoder chain in kTinySpmJson's place (the same vocabulary, ids 0..12).
std::string with_decoder(const std::string& decoder) {
  std::string json = kTinySpmJson;
  const auto b = json.find("\"decoder\""), e = json.find("\n  \"added_tokens\"");
  return json.substr(0, b) + "\"decoder\": " + decoder + "," + json.substr(e);
}

TEST(StreamDecoderInvariant, EveryDecoderKind) {
  const std::vector<std::string> decoders = {
      "null",
      R"({"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
          {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})",
      R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true})",
      R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": true})",
      R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
          {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true}]})",
      R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
          {"type": "Strip", "content": "a", "start": 2, "stop": 2}]})",
      R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
          {"type": "Strip", "content": "\u2581", "start": 1, "stop": 3}]})",
      R"({"type": "Strip", "content": "a", "start": 1, "stop": 1})",
      R"({"type": "Sequence", "decoders": [{"type": "Fuse"},
          {"type": "Replace", "pattern": {"String": "a\u2581b"}, "content": "<ab>"}]})",
      R"({"type": "Sequence", "decoders": [{"type": "Fuse"},
          {"type": "Replace", "pattern": {"Regex": "a+"}, "content": "A"}, {"type": "ByteFallback"}]})",
      R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "ByteLevel"}]})",
      R"({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "ByteFallback"}, {"type": "Fuse"}]})",
  };
  std::vector<int32_t> all;
  for (int32_t id = 0; id <= 12; ++id) all.push_back(id);
  for (std::size_t d = 0; d < decoders.size(); ++d) {
    SCOPED_TRACE("decoder " + decoders[d]);
    auto tok = Tokenizer::from_json_string(with_decoder(decoders[d])).value_or_throw();
    expect_stream_equals_decode(tok, all, 800, 10 + static_cast<uint32_t>(d));
    // Every sequence of up to 3 ids, too.
    for (int32_t a = -1; a <= 12; ++a)
      for (int32_t b = -1; b <= 12; ++b)
        for (int32_t c = -1; c <= 12; ++c) {
          std::vector<int32_t> ids;
          for (int32_t id : {a, b, c})
            if (id >= 0) ids.push_back(id);
          ASSERT_EQ(stream_all(tok, ids, false), tok.decode(ids, false)) << testing::PrintToString(ids);
        }
  }
}

// The quadratic-time case: a long run of bytes that never forms a character. Each ill-formed byte must come out as
// U+FFFD at the push that brings it, and nothing may pile up (before the fix the whole run was held and re-decoded
// on every push).
TEST(StreamDecoderBounds, ByteLevelInvalidRunIsEmittedAtOnce) {
  auto tok = Tokenizer::from_path(data("tiny_bytelevel.json")).value_or_throw();
  const auto ff = ids_of(tok, byte_level_chars({0xFF}));
  const auto e2_82 = ids_of(tok, byte_level_chars({0xE2, 0x82}));
  ASSERT_EQ(ff.size(), 1u);
  ASSERT_EQ(e2_82.size(), 2u);
  StreamDecoder sd(tok, false);
  std::vector<int32_t> ids;
  std::string streamed;
  for (int i = 0; i < 20000; ++i) {
    ids.push_back(ff[0]);
    ASSERT_EQ(sd.push(ff[0]), kFffd) << "byte " << i;
    ASSERT_EQ(sd.held_bytes(), 0u);
    streamed += kFffd;
  }
  // E2 82 E2 82 ...: each E2 ends the unfinished E2 82 before it; only that pair is ever held.
  for (int i = 0; i < 20000; ++i) {
    const int32_t id = e2_82[i % 2];
    ids.push_back(id);
    streamed += sd.push(id);
    ASSERT_LE(sd.held_bytes(), 2u);
    ASSERT_GE(streamed.size() / kFffd.size(), 20000u + static_cast<std::size_t>(i) / 2) << "byte " << i;
  }
  streamed += sd.flush();
  EXPECT_EQ(streamed, tok.decode(ids, false));
}

TEST(StreamDecoderBounds, ByteFallbackInvalidRunIsEmittedAtOnce) {
  auto tok = Tokenizer::from_json_string(kTinySpmJson).value_or_throw();
  StreamDecoder sd(tok, false);
  std::vector<int32_t> ids;
  std::string streamed;
  for (int i = 0; i < 20000; ++i) {  // <0xE2> <0x82> <0xE2> ...: ill-formed from the third byte on
    const int32_t id = i % 2 ? 6 : 5;
    ids.push_back(id);
    const std::string piece = sd.push(id);
    streamed += piece;
    ASSERT_LE(sd.held_bytes(), 2u);
    if (i >= 2) ASSERT_EQ(piece.size() / kFffd.size(), i == 2 ? 3u : 1u) << "byte " << i;
  }
  streamed += sd.flush();
  EXPECT_EQ(streamed, tok.decode(ids, false));
}

// A split character is held only until its last byte arrives, and text that really ends in U+FFFD (its three
// bytes, as byte-level BPE spells it) is not held at all.
TEST(StreamDecoderBounds, ByteLevelHoldsOnlyAnUnfinishedCharacter) {
  auto tok = Tokenizer::from_path(data("tiny_bytelevel.json")).value_or_throw();
  const auto emoji = ids_of(tok, byte_level_chars({0xF0, 0x9F, 0x98, 0x80}));
  const auto fffd = ids_of(tok, byte_level_chars({0xEF, 0xBF, 0xBD}));
  StreamDecoder sd(tok, false);
  for (std::size_t i = 0; i + 1 < emoji.size(); ++i) {
    EXPECT_EQ(sd.push(emoji[i]), "");
    EXPECT_EQ(sd.held_bytes(), i + 1);
  }
  EXPECT_EQ(sd.push(emoji.back()), "\xF0\x9F\x98\x80");
  for (int rep = 0; rep < 3; ++rep) {
    EXPECT_EQ(sd.push(fffd[0]), "");
    EXPECT_EQ(sd.push(fffd[1]), "");
    EXPECT_EQ(sd.push(fffd[2]), kFffd);  // a real U+FFFD, out at once
    EXPECT_EQ(sd.held_bytes(), 0u);
  }
  EXPECT_EQ(sd.flush(), "");
}

// With a byte-fallback decoder a run of byte tokens is text only if all of it is valid UTF-8, so a valid run is
// held to its end: "€" followed by a stray byte in the same run is four U+FFFD, as decode() says.
TEST(StreamDecoderBounds, ByteFallbackRunIsDecidedAsAWhole) {
  auto tok = Tokenizer::from_json_string(kTinySpmJson).value_or_throw();
  const std::vector<int32_t> euro_then_a{4, 5, 6, 7, 2}, euro_then_ff{4, 5, 6, 7, 8, 2};
  EXPECT_EQ(tok.decode(euro_then_a, false), "a\xE2\x82\xAC" "a");
  EXPECT_EQ(tok.decode(euro_then_ff, false), "a" + kFffd + kFffd + kFffd + kFffd + "a");
  for (const auto& ids : {euro_then_a, euro_then_ff}) {
    StreamDecoder sd(tok, false);
    std::string streamed;
    for (int32_t id : ids) streamed += sd.push(id);
    EXPECT_EQ(sd.held_bytes(), 0u);
    EXPECT_EQ(streamed + sd.flush(), tok.decode(ids, false));
  }
  // A valid run of 3,000 "€" (9,000 byte tokens) is held whole, then comes out once the run ends.
  StreamDecoder sd(tok, false);
  std::vector<int32_t> ids{4};
  std::string streamed = sd.push(4);
  for (int i = 0; i < 3000; ++i)
    for (int32_t id : {5, 6, 7}) {
      ids.push_back(id);
      streamed += sd.push(id);
    }
  EXPECT_EQ(sd.held_bytes(), 9000u);
  ids.push_back(2);
  streamed += sd.push(2);
  EXPECT_EQ(sd.held_bytes(), 0u);
  EXPECT_EQ(streamed, tok.decode(ids, false));
}

}  // namespace
}  // namespace hylo::tok
