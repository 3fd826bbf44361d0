// lm-eval-harness definitions on hand-made cases: acc / acc_norm (ties, code-point lengths), the context /
// continuation split, GSM8K answer extraction and normalisation, cloze passages, loglikelihood against a direct
// computation, and sliding-window perplexity against window-by-window forwards.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "hylo/eval/harness.h"
#include "hylo/eval/perplexity.h"
#include "hylo/eval/report.h"

namespace hylo::eval {
namespace {

TEST(Harness, AccAndAccNormAsLmEval) {
  // ll = [-10, -9, -12]; lengths 10, 3, 24 code points: acc picks 1, acc_norm picks -12/24 = -0.5 -> 2.
  std::vector<std::string> choices = {"abcdefghij", "abc", "abcdefghijklmnopqrstuvwx"};
  auto r = score_choices({-10.0, -9.0, -12.0}, choices, 2);
  EXPECT_EQ(r.pred, 1);
  EXPECT_EQ(r.pred_norm, 2);
  EXPECT_EQ(r.acc, 0.0);
  EXPECT_EQ(r.acc_norm, 1.0);
  // Ties go to the first index, as np.argmax.
  r = score_choices({-3.0, -3.0}, {"ab", "ab"}, 1);
  EXPECT_EQ(r.pred, 0);
  EXPECT_EQ(r.pred_norm, 0);
  EXPECT_EQ(r.acc, 0.0);
  // Lengths are code points (Python len), not bytes: "ééé" is 3 long, 6 bytes.
  EXPECT_EQ(utf8_length("ééé"), 3);
  r = score_choices({-6.0, -4.0}, {"ééé", "abcd"}, 0);  // -2.0 vs -1.0: "abcd" wins either way
  EXPECT_EQ(r.pred_norm, 1);
  r = score_choices({-6.0, -7.5}, {"ééé", "abcde"}, 1);  // -2.0 vs -1.5 by code points (bytes would give -1.0)
  EXPECT_EQ(r.pred_norm, 1);
  r = score_choices({-5.0, -7.5}, {"ééé", "abcde"}, 1);  // -1.667 vs -1.5
  EXPECT_EQ(r.pred_norm, 1);
  r = score_choices({-4.0, -7.5}, {"ééé", "abcde"}, 0);  // -1.333 vs -1.5: by bytes it would be 1
  EXPECT_EQ(r.pred_norm, 0);
}

TEST(Harness, Gsm8kExtractionAndExactMatch) {
  EXPECT_EQ(extract_strict("so 3 + 4 = 7\n#### 7"), "7");
  EXPECT_EQ(extract_strict("#### -1,234.5 then #### 9"), "-1,234.5");  // the first
  EXPECT_EQ(extract_strict("The answer is 7"), "[invalid]");
  EXPECT_EQ(extract_flexible("He has 3 apples and buys 12, so $15."), "$15.");  // the last number-like run
  EXPECT_EQ(extract_flexible("x = 5"), "5");                                     // second alternative (one digit)
  EXPECT_EQ(extract_flexible("no digits"), "[invalid]");
  EXPECT_EQ(normalize_answer("Natalia sold 48/2 = 24 clips.\n#### 1,072"), "1072");
  EXPECT_EQ(normalize_answer("$15."), "15");
  EXPECT_TRUE(exact_match("$1,072.", "reasoning #### 1072"));
  EXPECT_TRUE(exact_match(extract_flexible("so the total is 18."), "#### 18"));
  EXPECT_FALSE(exact_match("18.5", "#### 18"));
  EXPECT_FALSE(exact_match("[invalid]", "#### 18"));
  auto prompt = gsm8k_prompt({{"Q1?", "A1 #### 1"}}, {"Q2?", "#### 2"});
  EXPECT_EQ(prompt, "Question: Q1?\nAnswer: A1 #### 1\n\nQuestion: Q2?\nAnswer:");
}

TEST(Harness, ClozeItemsEndBeforeAnAlphabeticWord) {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "word" + std::to_string(i) + (i % 7 == 0 ? " Whale, " : " ");
  auto items = make_cloze_items(text, 10, 20, 3);
  ASSERT_EQ(items.size(), 10u);
  for (const auto& it : items) {
    EXPECT_EQ(it.target, "Whale");  // the only alphabetic words of >= 3 letters; the comma is dropped
    EXPECT_EQ(std::count(it.context.begin(), it.context.end(), ' '), 19);  // 20 words
    EXPECT_EQ(text.find(it.context + " Whale"), text.find(it.context));  // a real passage of the text
  }
  auto again = make_cloze_items(text, 10, 20, 3);
  EXPECT_EQ(again[4].context, items[4].context);
  EXPECT_TRUE(make_cloze_items("too short", 5, 20, 1).empty());
}

std::filesystem::path gpt2_dir() {
  const char* d = std::getenv("HYLO_DATA");
  std::filesystem::path base = d ? d : std::filesystem::path(std::getenv("HOME") ? std::getenv("HOME") : "/root") /
                                           ".cache/hylo/data";
  return base / "tokenizers" / "gpt2";
}

TEST(Harness, EncodePairMovesTrailingSpacesToTheContinuation) {
  if (!std::filesystem::exists(gpt2_dir() / "tokenizer.json")) GTEST_SKIP() << "gpt2 tokenizer not unpacked";
  auto t = tok::Tokenizer::from_path(gpt2_dir()).value_or_throw();
  auto enc = [&](const std::string& s) {
    auto v = t.encode(s, false);
    return std::vector<int64_t>(v.begin(), v.end());
  };
  // "Question: 2+2=" + " 4": no trailing space, plain split.
  auto p = encode_pair(t, "Question: 2+2=", " 4");
  EXPECT_EQ(p.context, enc("Question: 2+2="));
  auto whole = enc("Question: 2+2= 4");
  EXPECT_EQ(p.continuation, std::vector<int64_t>(whole.begin() + static_cast<long>(p.context.size()), whole.end()));
  // A trailing space moves into the continuation: same ids as without it.
  auto q = encode_pair(t, "The cat sat on the ", "mat");
  EXPECT_EQ(q.context, enc("The cat sat on the"));
  EXPECT_EQ(q.continuation, enc(" mat"));
  // Empty context: the prefix token (gpt2 has no BOS in its post-processor; its eos is <|endoftext|>).
  auto e = encode_pair(t, "", "Hello");
  ASSERT_EQ(e.context.size(), 1u);
  EXPECT_EQ(e.continuation, enc("Hello"));
}

ModelConfig tiny_llama() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 256;
  for (int i = 0; i < 2; ++i) {
    LayerSpec l;
    l.mixer = MixerKind::kGqa;
    l.gqa.num_heads = 4;
    l.gqa.num_kv_heads = 2;
    l.gqa.head_dim = 8;
    l.intermediate_size = 48;
    c.layers.push_back(l);
  }
  return c;
}

std::vector<int64_t> some_ids(int n) {
  std::vector<int64_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 37 + 11) % 97);
  return ids;
}

// -log p(ids[t] | ids[start..t)) from a stateless forward of exactly that window, in double.
double nll_direct(CausalLM& m, const std::vector<int64_t>& ids, int64_t start, int64_t t) {
  std::vector<int64_t> w(ids.begin() + start, ids.begin() + t);
  at::Tensor logits = m.forward(at::tensor(w, at::kLong).unsqueeze(0));  // [1, n, V]
  return -at::log_softmax(logits[0][t - start - 1].to(at::kDouble), -1)[ids[static_cast<size_t>(t)]].item<double>();
}

TEST(Harness, LoglikelihoodSumsTheContinuationTokens) {
  auto m = CausalLM::random(tiny_llama(), 3);
  EncodedPair p{{5, 6, 7, 8}, {9, 10, 11}};
  auto r = loglikelihood(*m, p);
  std::vector<int64_t> all = {5, 6, 7, 8, 9, 10, 11};
  double want = 0.0;
  for (int64_t t = 4; t < 7; ++t) want -= nll_direct(*m, all, 0, t);
  EXPECT_NEAR(r.logprob, want, 1e-4 * std::abs(want));
  EXPECT_EQ(r.tokens, 3);
  // max_length truncates from the left: (ctx + cont)[-(max_length+1):][:-1].
  auto r2 = loglikelihood(*m, p, 4);
  double want2 = 0.0;
  for (int64_t t = 4; t < 7; ++t) want2 -= nll_direct(*m, all, 2, t);
  EXPECT_NEAR(r2.logprob, want2, 1e-4 * std::abs(want2));
}

TEST(Harness, SlidingWindowsScoreEveryTokenOnceWithTheirWindow) {
  auto m = CausalLM::random(tiny_llama(), 4);
  const auto ids = some_ids(50);
  PerplexityOptions o;
  o.context = 16;
  o.stride = 6;
  o.per_token = true;
  o.bucket = 4;
  auto r = perplexity(*m, ids, o);
  ASSERT_EQ(r.predicted, 49);  // every token but the first
  EXPECT_EQ(r.windows, perplexity_windows(50, 16, 6));
  EXPECT_EQ(r.windows, 1 + (50 - 16 + 5) / 6);
  // Token t is scored in the first window that holds it: windows start at 0, 6, 12, ...; window k scores
  // positions [max(16 + 6(k-1), 1), min(6k + 16, 50)).
  int64_t checked = 0;
  for (int64_t t = 1; t < 50; ++t) {
    int64_t start = 0;
    while (start + 16 <= t) start += 6;
    const double want = nll_direct(*m, ids, start, t);
    EXPECT_NEAR(r.nll[static_cast<size_t>(t - 1)], want, 1e-4 * std::max(1.0, want)) << "token " << t;
    ++checked;
  }
  EXPECT_EQ(checked, 49);
  // Stride = context is the non-overlapping definition.
  PerplexityOptions same = o;
  same.stride = 16;
  auto a = perplexity(*m, ids, same);
  auto b = perplexity(*m, ids, 16, false);
  EXPECT_EQ(a.predicted, b.predicted);
  EXPECT_NEAR(a.nll_sum, b.nll_sum, 1e-9 * std::abs(b.nll_sum));
  // Buckets: count and sum add up to the totals.
  int64_t count = 0;
  double sum = 0.0;
  for (size_t k = 0; k < r.bucket_count.size(); ++k) {
    count += r.bucket_count[k];
    sum += r.bucket_nll_sum[k];
  }
  EXPECT_EQ(count, r.predicted);
  EXPECT_NEAR(sum, r.nll_sum, 1e-9 * r.nll_sum);
  // Bits per byte: NLL / ln 2 over the bytes of the predicted tokens.
  std::vector<int64_t> bytes(ids.size(), 3);
  bytes[0] = 100;  // the first token is never predicted: its bytes do not count
  o.token_bytes = &bytes;
  auto c = perplexity(*m, ids, o);
  EXPECT_EQ(c.bytes, 49 * 3);
  EXPECT_NEAR(c.bits_per_byte, c.nll_sum / std::log(2.0) / (49 * 3), 1e-12);
  o.stride = 17;
  EXPECT_THROW(perplexity(*m, ids, o), Error);
}

TEST(Report, MarkdownAndPlotsFromTheJson) {
  nlohmann::json rep = {{"seed", 1}, {"limit", 0}, {"models", nlohmann::json::array()}};
  for (const char* name : {"teacher", "hybrid"}) {
    nlohmann::json m = {{"name", name}, {"path", std::string("/m/") + name}};
    m["perplexity"] = {{"file", "heldout.txt"}, {"context", 2048}, {"stride", 0}, {"predicted", 1000},
                       {"nll_mean", 3.0}, {"perplexity", 20.0856}, {"bits_per_byte", 1.1},
                       {"nll_by_position", {{{"start", 0}, {"end", 128}, {"count", 10}, {"nll", 4.0}},
                                            {{"start", 128}, {"end", 256}, {"count", 10}, {"nll", 3.0}}}}};
    m["ruler"] = {{"lengths", {1024, 2048}},
                  {"tasks", {{"niah_single_1", {{"1024", {{"score", 100.0}}}, {"2048", {{"score", 50.0}}}}},
                             {"niah_multikey_1", {{"1024", {{"score", 80.0}}}, {"2048", {{"score", 0.0}}}}}}},
                  {"average", {{"1024", 90.0}, {"2048", 25.0}}}};
    m["multiple_choice"] = {{"arc.jsonl", {{"n", 4}, {"acc", 0.5}, {"acc_norm", 0.75}}}};
    rep["models"].push_back(m);
  }
  const std::string md = report_markdown(rep);
  EXPECT_NE(md.find("| teacher | niah_single_1 | 100.0 | 50.0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| hybrid | **average** | 90.0 | 25.0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1K | 2K |"), std::string::npos);
  EXPECT_NE(md.find("| teacher | arc.jsonl | 4 | 0.5000 | 0.7500 |"), std::string::npos);
  EXPECT_NE(md.find("| teacher | heldout.txt | 2048 | 0 | 1000 | 3.0000 | 20.086 | 1.1000 |"), std::string::npos);
  auto dir = std::filesystem::path(testing::TempDir()) / "eval_report";
  std::filesystem::create_directories(dir);
  auto files = write_plots(rep, dir);
  ASSERT_TRUE(files.ok()) << files.error();
  EXPECT_EQ(files->size(), 4u);  // ruler.svg, two per-task charts, nll_by_position.svg
  for (const auto& f : *files) EXPECT_TRUE(std::filesystem::exists(f)) << f;
}

}  // namespace
}  // namespace hylo::eval
