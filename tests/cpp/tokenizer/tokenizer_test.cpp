// Unit tests of the tokenizer's pieces: lossy UTF-8, the byte-level map, normalization, the Oniguruma ->
// PCRE2 rewrite, split behaviours, BPE merge order, added-token splitting, decoders and StreamDecoder.
// End-to-end parity with Hugging Face `tokenizers` is tests/oracles/test_tokenizer_parity.py.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/io/tokenizer/components.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/io/tokenizer/unicode.h"
#include "tiny_spm_json.h"

namespace hylo::tok {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(Utf8Lossy, ValidTextUnchanged) {
  const std::string s = "abc \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";
  EXPECT_TRUE(utf8_valid(s));
  EXPECT_EQ(utf8_lossy(s), s);
}

// utf8_prev steps back over whole code points of 1..4 bytes (the inverse of utf8_next) and stops at lo.
TEST(Utf8Prev, StepsBackOneCodePoint) {
  const std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a, e-acute, euro, grinning face
  std::vector<std::size_t> starts;
  for (std::size_t i = s.size(); i > 0; i = utf8_prev(s, i)) starts.push_back(utf8_prev(s, i));
  EXPECT_EQ(starts, (std::vector<std::size_t>{6, 3, 1, 0}));
  for (std::size_t k = 0; k + 1 < starts.size(); ++k) {
    std::size_t i = starts[k + 1];
    utf8_next(s, i);
    EXPECT_EQ(i, starts[k]);  // utf8_next from the previous start lands on this one
  }
  EXPECT_EQ(utf8_prev(s, s.size(), 8), 8u);  // never below lo, even mid-sequence
}

TEST(Utf8Lossy, MaximalSubpartsBecomeOneReplacementEach) {
  // Cases from the Unicode standard's "U+FFFD substitution of maximal subparts" (as Rust and Python do).
  EXPECT_EQ(utf8_lossy("\xFF"), kFffd);
  EXPECT_EQ(utf8_lossy("a\x80" "b"), "a" + kFffd + "b");
  EXPECT_EQ(utf8_lossy("\xE2\x82"), kFffd);                       // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98" "x"), kFffd + "x");         // truncated 4-byte sequence
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), kFffd + kFffd);               // overlong: C0 never valid
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);   // surrogate: ED A0 is not a valid prefix
  EXPECT_EQ(utf8_lossy("\xE0\x80\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // above U+10FFFF
  EXPECT_EQ(utf8_lossy("\xE2\x82\xE2\x82\xAC"), kFffd + "\xE2\x82\xAC");
  EXPECT_FALSE(utf8_valid("\xC3"));
}

TEST(ByteLevel, MapIsTheGpt2Bijection) {
  const auto& m = byte_level_map();
  EXPECT_EQ(m.byte_to_utf8['A'], "A");
  EXPECT_EQ(m.byte_to_utf8[' '], "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(m.byte_to_utf8['\n'], "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(m.byte_to_utf8[0xAD], "\xC5\x83");  // the last remapped byte -> U+0143
  int mapped = 0;
  for (int b = 0; b < 256; ++b) {
    std::size_t i = 0;
    const uint32_t cp = utf8_next(m.byte_to_utf8[b], i);
    EXPECT_EQ(m.byte_of(cp), b);
    ++mapped;
  }
  EXPECT_EQ(mapped, 256);
}

TEST(Normalize, NfcComposesAndReorders) {
  EXPECT_EQ(unicode_normalize("e\xCC\x81", NormForm::kNFC), "\xC3\xA9");               // e + acute -> é
  EXPECT_EQ(unicode_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", NormForm::kNFC), "\xEA\xB0\x81");  // Hangul LVT
  EXPECT_EQ(unicode_normalize("\xE2\x84\xAB", NormForm::kNFC), "\xC3\x85");            // Angstrom sign -> Å
  // q + dot below + dot above: ccc 220 sorts before 230; no composite for q
  EXPECT_EQ(unicode_normalize("q\xCC\x87\xCC\xA3", NormForm::kNFC), "q\xCC\xA3\xCC\x87");
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", NormForm::kNFC), "\xEF\xAC\x81");        // ﬁ stays under NFC
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", NormForm::kNFKC), "fi");
  EXPECT_EQ(unicode_normalize("\xC3\xA9", NormForm::kNFD), "e\xCC\x81");
  EXPECT_EQ(unicode_normalize("plain ascii", NormForm::kNFC), "plain ascii");
}

TEST(Regex, OnigClassesAreSpelledOut) {
  EXPECT_EQ(onig_to_pcre2(R"(\s+(?!\S))"), R"([\t\n\x0B\f\r\x{85}\p{Z}]+(?![^\t\n\x0B\f\r\x{85}\p{Z}]))");
  EXPECT_EQ(onig_to_pcre2(R"([^\s\p{L}])"), R"([^\t\n\x0B\f\r\x{85}\p{Z}\p{L}])");
  EXPECT_EQ(onig_to_pcre2(R"(\\s)"), R"(\\s)");  // an escaped backslash followed by 's' is not \s
  auto re = Regex::compile(R"(\s+)", "test").value_or_throw();
  std::vector<std::pair<std::size_t, std::size_t>> m;
  re->find_all("a\xC2\x85" "b", m);  // NEL is whitespace for Oniguruma
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (std::pair<std::size_t, std::size_t>{1, 3}));
}

std::vector<std::string> split_texts(const std::string& text, const std::string& lit, SplitBehavior b, bool invert = false) {
  Pattern p;
  p.kind = Pattern::Kind::kString;
  p.literal = lit;
  std::vector<Piece> out;
  split_piece(Piece{text, true}, p, b, invert, out);
  std::vector<std::string> r;
  for (auto& x : out) r.push_back(x.text);
  return r;
}

TEST(Split, Behaviours) {
  using V = std::vector<std::string>;
  // The examples of tokenizers' SplitDelimiterBehavior documentation, delimiter "-".
  EXPECT_EQ(split_texts("the-final--countdown", "-", SplitBehavior::kRemoved), (V{"the", "final", "countdown"}));
  EXPECT_EQ(split_texts("the-final--countdown", "-", SplitBehavior::kIsolated), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_texts("the-final--countdown", "-", SplitBehavior::kMergedWithPrevious), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_texts("the-final--countdown", "-", SplitBehavior::kMergedWithNext), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_texts("the-final--countdown", "-", SplitBehavior::kContiguous), (V{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(split_texts("the-final--countdown", "-", SplitBehavior::kRemoved, true), (V{"-", "-", "-"}));
}

// A hand-written BPE where rank order and position order disagree.
constexpr const char* kTinyJson = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 8, "content": "<sp>", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true},
                   {"id": 9, "content": "<ls>", "single_word": false, "lstrip": true, "rstrip": true,
                    "normalized": false, "special": false}],
  "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": "?", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "?": 6, "aa": 7},
            "merges": ["b c", "a b", "a bc", "a a"]}
})";

TEST(Bpe, MergesLowestRankFirstThenLeftmost) {
  auto tok = Tokenizer::from_json_string(kTinyJson).value_or_throw();
  // (b,c) has rank 0 and merges before (a,b) although (a,b) is further left; then (a,bc) -> abc.
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{5}));
  EXPECT_EQ(tok.encode("abab"), (std::vector<int32_t>{3, 3}));
  // Equal ranks: the leftmost pair merges first, so "aaa" -> aa a, not a aa.
  EXPECT_EQ(tok.encode("aaa"), (std::vector<int32_t>{7, 0}));
  // Unknown characters fuse into one unknown token (fuse_unk).
  EXPECT_EQ(tok.encode("xyz a"), (std::vector<int32_t>{6, 0}));
}

TEST(AddedTokens, SplitBeforeTheModelWithStrip) {
  auto tok = Tokenizer::from_json_string(kTinyJson).value_or_throw();
  EXPECT_EQ(tok.encode("a<sp>b"), (std::vector<int32_t>{0, 8, 1}));
  EXPECT_EQ(tok.encode("<sp><sp>"), (std::vector<int32_t>{8, 8}));
  EXPECT_EQ(tok.encode("<sp"), (std::vector<int32_t>{6}));  // partial: ordinary text, all unknown -> fused
  // lstrip/rstrip swallow the whitespace around "<ls>".
  EXPECT_EQ(tok.encode("a   <ls>  b"), (std::vector<int32_t>{0, 9, 1}));
  EXPECT_TRUE(tok.is_special(8));
  EXPECT_FALSE(tok.is_special(9));
  EXPECT_EQ(tok.vocab_size(), 10);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 8, 1}, false), "a <sp> b");  // no decoder: tokens joined by spaces
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 8, 1}, true), "a b");
}

std::string fixture(const char* name) {
  return read_text_file(std::filesystem::path(HYLO_SOURCE_DIR) / "tests/data/tokenizer" / name).value_or_throw();
}

TEST(ByteLevelTokenizer, EncodesAndRoundTrips) {
  auto tok = Tokenizer::from_json_string(fixture("tiny_bytelevel.json")).value_or_throw();
  // Ids from `tokenizers` 0.23 for this file (the generator script is in the commit that added it).
  EXPECT_EQ(tok.encode("Call me Ishmael 2024 <think>x<|im_start|>"),
            (std::vector<int32_t>{400, 34, 390, 349, 293, 82, 71, 76, 64, 68, 75, 220, 17, 15, 17, 19, 220, 402, 87, 401}));
  const std::string text = "Whale \xF0\x9F\x90\x8B ships, 1851!\r\n\tend";
  EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
  // Invalid input is decoded lossily first, so it round-trips to the U+FFFD form.
  EXPECT_EQ(tok.decode(tok.encode("a\xFF" "b", false)), "a" + kFffd + "b");
}

TEST(StreamDecoder, EmitsOnlyCompleteCharacters) {
  auto tok = Tokenizer::from_json_string(fixture("tiny_bytelevel.json")).value_or_throw();
  const std::string text = "sea \xF0\x9F\x90\x8B and \xE2\x82\xAC 5";
  const auto ids = tok.encode(text, false);
  StreamDecoder sd(tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    EXPECT_TRUE(utf8_valid(piece));
    EXPECT_EQ(piece.find(kFffd), std::string::npos);
    streamed += piece;
  }
  streamed += sd.flush();
  EXPECT_EQ(streamed, text);
}


TEST(SentencePieceStyle, ByteFallbackAndStreaming) {
  auto tok = Tokenizer::from_json_string(kTinySpmJson).value_or_throw();
  // "a b\u20ACa": ▁a ▁ b <0xE2> <0x82> <0xAC> a ; "z" has no piece and no byte token -> <unk>
  EXPECT_EQ(tok.encode("a b\xE2\x82\xAC" "a"), (std::vector<int32_t>{4, 1, 3, 5, 6, 7, 2}));
  EXPECT_EQ(tok.encode("zz a"), (std::vector<int32_t>{1, 0, 4}));
  const std::vector<int32_t> ids{4, 1, 3, 5, 6, 7, 2, 4, 5, 4};
  const std::string full = tok.decode(ids);
  EXPECT_EQ(full, "a b\xE2\x82\xAC" "a a" + kFffd + " a");  // a lone <0xE2> decodes to U+FFFD
  StreamDecoder sd(tok, false);
  std::string streamed;
  for (int32_t id : ids) streamed += sd.push(id);
  streamed += sd.flush();
  EXPECT_EQ(streamed, full);
}

TEST(Errors, BrokenJsonNamesTheProblem) {
  auto r = Tokenizer::from_json_string("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("WordPiece"), std::string::npos);
  auto r2 = Tokenizer::from_json_string("{\"model\": ");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().find("invalid JSON"), std::string::npos) << r2.error();
  // Duplicate keys are an error (nlohmann alone would keep the last one silently).
  auto r4 = Tokenizer::from_json_string("{\"model\": {}, \"model\": {}}");
  ASSERT_FALSE(r4.ok());
  EXPECT_NE(r4.error().find("duplicate"), std::string::npos) << r4.error();
  auto r3 = Tokenizer::from_path("/nonexistent/tokenizer.json");
  ASSERT_FALSE(r3.ok());
  EXPECT_NE(r3.error().find("/nonexistent/tokenizer.json"), std::string::npos);
}

}  // namespace
}  // namespace hylo::tok
