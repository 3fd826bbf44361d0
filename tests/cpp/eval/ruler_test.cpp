// RULER generators and scorers: samples are deterministic by seed, needles sit at the requested depth, lengths
// land within 1% of the target in the real tokenizers' tokens (gpt2, Llama 3.2 with its chat template, Qwen3),
// answers are in the text, and RULER's string_match_all / string_match_part give the hand-computed scores.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <filesystem>
#include <regex>
#include <set>

#include "hylo/eval/ruler.h"
#include "hylo/eval/ruler_text.h"

namespace hylo::eval::ruler {
namespace {

std::filesystem::path data_dir() {
  if (const char* d = std::getenv("HYLO_DATA")) return d;
  return std::filesystem::path(std::getenv("HOME") ? std::getenv("HOME") : "/root") / ".cache/hylo/data";
}

const tok::Tokenizer* tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<tok::Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  auto dir = data_dir() / "tokenizers" / name;
  std::unique_ptr<tok::Tokenizer> t;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    auto r = tok::Tokenizer::from_path(dir);
    if (r.ok()) t = std::make_unique<tok::Tokenizer>(std::move(r).value());
  }
  return cache.emplace(name, std::move(t)).first->second.get();
}

#define NEED_TOKENIZER(var, name)                                                              \
  const tok::Tokenizer* var = tokenizer(name);                                                 \
  if (var == nullptr) GTEST_SKIP() << "tokenizer " << name << " not unpacked under $HYLO_DATA"

TaskSpec task(const std::string& name) { return task_by_name(name).value_or_throw(); }

Sample make(const std::string& name, const tok::Tokenizer& t, int64_t target, uint64_t seed,
            std::optional<double> depth = std::nullopt, bool chat = true) {
  GenerateSpec g;
  g.target_tokens = target;
  g.seed = seed;
  g.depth = depth;
  g.use_chat_template = chat;
  auto s = make_sample(task(name), t, g);
  if (!s.ok()) throw std::runtime_error(s.error());
  return std::move(s).value();
}

TEST(Ruler, ScorersMatchRulersDefinitions) {
  // string_match_all: the fraction of references found, case-insensitively.
  EXPECT_DOUBLE_EQ(string_match_all("The numbers are 1234567 and 7654321.", {"1234567", "7654321"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("only 1234567 here", {"1234567", "7654321"}), 0.5);
  EXPECT_DOUBLE_EQ(string_match_all("AAA bbb", {"aaa", "BBB", "ccc", "ddd"}), 0.5);
  EXPECT_DOUBLE_EQ(string_match_all("nothing", {"x1", "x2", "x3"}), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("abc", {"abc", "abc", "zzz"}), 2.0 / 3.0);
  // string_match_part: 1 when any reference is found.
  EXPECT_DOUBLE_EQ(string_match_part("Paris, France", {"London", "paris"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_part("Lyon", {"London", "paris"}), 0.0);
  EXPECT_DOUBLE_EQ(score(Metric::kStringMatchPart, "a b", {"b", "c"}), 1.0);
  EXPECT_DOUBLE_EQ(score(Metric::kStringMatchAll, "a b", {"b", "c"}), 0.5);
  // Predictions are stripped and control characters become newlines.
  EXPECT_EQ(postprocess_prediction("  \t 123\x01" "456\r\n "), "123\n456");
  EXPECT_EQ(postprocess_prediction("\n\n"), "");
}

TEST(Ruler, TaskListAndUnknownNames) {
  auto names = task_names();
  EXPECT_EQ(names.size(), 11u);
  for (const char* n : {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
                        "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe"})
    EXPECT_TRUE(task_by_name(n).ok()) << n;
  auto bad = task_by_name("niah_single_9");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("known: niah_single_1"), std::string::npos);
  EXPECT_EQ(task("qa").metric, Metric::kStringMatchPart);
}

TEST(Ruler, WordListsAreDistinct) {
  std::set<std::string_view> a(adjectives().begin(), adjectives().end()), n(nouns().begin(), nouns().end());
  EXPECT_EQ(a.size(), adjectives().size());
  EXPECT_EQ(n.size(), nouns().size());
  for (auto w : a) EXPECT_EQ(n.count(w), 0u) << w;
}

TEST(Ruler, DeterministicBySeed) {
  NEED_TOKENIZER(t, "gpt2");
  for (const char* name : {"niah_single_1", "niah_multikey_3", "vt", "cwe", "fwe"}) {
    Sample a = make(name, *t, 2048, 7), b = make(name, *t, 2048, 7), c = make(name, *t, 2048, 8);
    EXPECT_EQ(a.prompt, b.prompt) << name;
    EXPECT_EQ(a.outputs, b.outputs) << name;
    EXPECT_NE(a.prompt, c.prompt) << name;
  }
}

TEST(Ruler, SingleNeedleTextAndAnswer) {
  NEED_TOKENIZER(t, "gpt2");
  Sample s = make("niah_single_1", *t, 1024, 3);
  ASSERT_EQ(s.outputs.size(), 1u);
  EXPECT_TRUE(std::regex_match(s.outputs[0], std::regex("[1-9][0-9]{6}"))) << s.outputs[0];
  ASSERT_EQ(s.needles.size(), 1u);
  // The needle names the value, and the singular template asks for it.
  EXPECT_NE(s.user_text.find("One of the special magic numbers for "), std::string::npos);
  EXPECT_NE(s.user_text.find(" is: " + s.outputs[0] + "."), std::string::npos);
  EXPECT_EQ(s.user_text.rfind("A special magic number is hidden within the following text.", 0), 0u) << s.user_text.substr(0, 80);
  EXPECT_NE(s.user_text.find("What is the special magic number for "), std::string::npos);
  EXPECT_EQ(s.answer_prefix.rfind(" The special magic number for ", 0), 0u);
  EXPECT_TRUE(s.answer_prefix.ends_with(" mentioned in the provided text is")) << s.answer_prefix;
  EXPECT_NE(s.user_text.find(std::string(kNoiseSentence)), std::string::npos);
  EXPECT_EQ(s.tokens_to_generate, 128);
  // gpt2 has no chat template: RULER's base template, the text then the answer prefix.
  EXPECT_EQ(s.prompt, s.user_text + s.answer_prefix);
}

TEST(Ruler, MultiNeedleTasksAskForEveryValue) {
  NEED_TOKENIZER(t, "gpt2");
  Sample mv = make("niah_multivalue", *t, 2048, 1);
  EXPECT_EQ(mv.outputs.size(), 4u);
  EXPECT_NE(mv.user_text.find("What are all the special magic numbers for "), std::string::npos);
  for (const auto& v : mv.outputs) EXPECT_NE(mv.user_text.find(v), std::string::npos) << v;
  Sample mq = make("niah_multiquery", *t, 2048, 1);
  EXPECT_EQ(mq.outputs.size(), 4u);
  EXPECT_NE(mq.answer_prefix.find(", and "), std::string::npos);  // "k1, k2, k3, and k4"
  Sample mk = make("niah_multikey_1", *t, 2048, 1);
  EXPECT_EQ(mk.needles.size(), 4u);
  EXPECT_EQ(mk.outputs.size(), 1u);
  Sample u = make("niah_multikey_3", *t, 2048, 1);
  EXPECT_TRUE(std::regex_match(u.outputs[0],
                               std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))
      << u.outputs[0];
}

TEST(Ruler, NeedleSitsAtTheRequestedDepth) {
  NEED_TOKENIZER(t, "gpt2");
  for (const char* name : {"niah_single_1", "niah_single_2", "niah_multikey_2"}) {
    for (double depth : {0.0, 0.25, 0.5, 0.9, 1.0}) {
      Sample s = make(name, *t, 4096, 11, depth);
      ASSERT_EQ(s.needles.size(), 1u);
      EXPECT_DOUBLE_EQ(s.needle_depths[0], depth);
      // The haystack runs from after the template's first line to before the question.
      const std::string& u = s.user_text;
      const size_t begin = u.find('\n') + 1, end = u.rfind("\nWhat ");
      const size_t at = u.find(s.needles[0]);
      ASSERT_NE(at, std::string::npos);
      const double frac = static_cast<double>(at - begin) / static_cast<double>(end - begin - s.needles[0].size());
      // Units are noise lines / sentences / distractors of ~100 characters in a ~16000-character haystack.
      EXPECT_NEAR(frac, depth, 0.015) << name << " depth " << depth;
    }
  }
}

TEST(Ruler, DefaultDepthsAreRulersGrid) {
  NEED_TOKENIZER(t, "gpt2");
  std::set<double> seen;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    Sample s = make("niah_single_2", *t, 1024, seed);
    const double d = s.needle_depths[0] * 100.0;
    EXPECT_NEAR(d, std::nearbyint(d), 1e-9);
    bool on_grid = false;
    for (int i = 0; i < 40; ++i) on_grid |= std::nearbyint(100.0 * i / 39.0) == std::nearbyint(d);
    EXPECT_TRUE(on_grid) << d;
    seen.insert(d);
  }
  EXPECT_GT(seen.size(), 4u);
}

struct LengthCase {
  const char* tokenizer;
  const char* task;
  int64_t target;
};

class RulerLength : public testing::TestWithParam<LengthCase> {};

TEST_P(RulerLength, WithinOnePercentOfTheTarget) {
  const auto& p = GetParam();
  NEED_TOKENIZER(t, p.tokenizer);
  Sample s = make(p.task, *t, p.target, 5);
  EXPECT_LE(s.length(), p.target);
  EXPECT_GE(static_cast<double>(s.length()), 0.99 * static_cast<double>(p.target))
      << p.task << " with " << p.tokenizer << ": " << s.length() << " for target " << p.target;
  // The ids are the tokenizer's encoding of the rendered prompt, and the answers are in the text (except cwe/fwe,
  // whose answers are words that repeat in it, and vt, whose answers are its variable names).
  EXPECT_FALSE(s.ids.empty());
  for (const auto& o : s.outputs) EXPECT_NE(s.user_text.find(o), std::string::npos) << o;
  if (t->has_chat_template()) {
    EXPECT_NE(s.prompt.find(s.user_text), std::string::npos);
    EXPECT_EQ(s.prompt.substr(s.prompt.size() - s.answer_prefix.size()), s.answer_prefix);
  }
}

std::vector<LengthCase> length_cases() {
  std::vector<LengthCase> cases;
  for (const char* tk : {"gpt2", "llama3_2", "qwen3"})
    for (const char* task : {"niah_single_1", "niah_single_3", "niah_multikey_2", "niah_multikey_3",
                             "niah_multiquery", "vt", "cwe", "fwe"})
      for (int64_t L : {1024, 4096}) cases.push_back({tk, task, L});
  cases.push_back({"llama3_2", "niah_single_2", 16384});
  cases.push_back({"qwen3", "niah_multikey_1", 32768});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, RulerLength, testing::ValuesIn(length_cases()),
                         [](const auto& info) {
                           return std::string(info.param.tokenizer) + "_" + info.param.task + "_" +
                                  std::to_string(info.param.target);
                         });

TEST(Ruler, ChatTemplateWrapsTheUserTurn) {
  NEED_TOKENIZER(t, "llama3_2");
  ASSERT_TRUE(t->has_chat_template());
  Sample chat = make("niah_single_1", *t, 2048, 2), plain = make("niah_single_1", *t, 2048, 2, std::nullopt, false);
  EXPECT_NE(chat.prompt.find("<|start_header_id|>user<|end_header_id|>"), std::string::npos);
  EXPECT_NE(chat.prompt.find("<|start_header_id|>assistant<|end_header_id|>\n\n" + chat.answer_prefix),
            std::string::npos);
  EXPECT_EQ(plain.prompt, plain.user_text + plain.answer_prefix);
  EXPECT_EQ(plain.ids.front(), *t->bos_id());
}

TEST(Ruler, VariableTrackingChain) {
  NEED_TOKENIZER(t, "gpt2");
  Sample s = make("vt", *t, 2048, 4);
  ASSERT_EQ(s.outputs.size(), 5u);  // 4 hops: 5 variables
  std::smatch m;
  ASSERT_TRUE(std::regex_search(s.answer_prefix, m, std::regex("5 variables are assigned the value ([0-9]{5}),")));
  const std::string value = m[1];
  // The chain sits in order after the worked example: VAR v0 = value, VAR v1 = VAR v0, ...
  const size_t task_start = s.user_text.find("\nMemorize and track");
  ASSERT_NE(task_start, std::string::npos);
  size_t at = s.user_text.find("VAR " + s.outputs[0] + " = " + value, task_start);
  ASSERT_NE(at, std::string::npos);
  for (size_t j = 1; j < s.outputs.size(); ++j) {
    size_t next = s.user_text.find("VAR " + s.outputs[j] + " = VAR " + s.outputs[j - 1] + " ", task_start);
    ASSERT_NE(next, std::string::npos) << j;
    EXPECT_GT(next, at);
    at = next;
  }
}

TEST(Ruler, CommonAndFrequentWordsAnswersAreTheMostFrequent) {
  NEED_TOKENIZER(t, "gpt2");
  for (int64_t L : {2048, 8192}) {
    Sample s = make("cwe", *t, L, 9);
    ASSERT_EQ(s.outputs.size(), 10u);
    const std::string list = s.user_text.substr(s.user_text.rfind("Below is a numbered list"));
    auto count = [&](const std::string& w) {
      int c = 0;
      std::regex re("\\b[0-9]+\\. " + w + "(?= |\\n)");
      for (auto it = std::sregex_iterator(list.begin(), list.end(), re); it != std::sregex_iterator(); ++it) ++c;
      return c;
    };
    const int want = L < 4096 ? 6 : 30;
    for (const auto& w : s.outputs) EXPECT_EQ(count(w), want) << w << " at " << L;
  }
  Sample f = make("fwe", *t, 4096, 9);
  ASSERT_EQ(f.outputs.size(), 3u);
  auto occurrences = [&](const std::string& w) {
    int c = 0;
    for (size_t p = f.user_text.find(" " + w + " "); p != std::string::npos; p = f.user_text.find(" " + w + " ", p + 1)) ++c;
    return c;
  };
  EXPECT_GT(occurrences(f.outputs[0]), occurrences(f.outputs[1]));
  EXPECT_GT(occurrences(f.outputs[1]), occurrences(f.outputs[2]));
  EXPECT_GT(occurrences("..."), occurrences(f.outputs[0]));
}

TEST(Ruler, UserHaystackAndBadArguments) {
  NEED_TOKENIZER(t, "gpt2");
  std::string text = "Call me Ishmael. Some years ago, never mind how long precisely, I thought I would sail about.";
  GenerateSpec g;
  g.target_tokens = 1024;
  g.haystack_text = &text;
  auto s = make_sample(task("niah_single_2"), *t, g);
  ASSERT_TRUE(s.ok()) << s.error();
  EXPECT_NE(s->user_text.find("Call me Ishmael."), std::string::npos);
  g.target_tokens = 32;
  auto bad = make_sample(task("niah_single_2"), *t, g);
  ASSERT_FALSE(bad.ok());
  g.target_tokens = 100;  // the template alone plus 128 tokens to generate do not fit
  bad = make_sample(task("niah_single_2"), *t, g);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("over the target 100"), std::string::npos) << bad.error();
  g.target_tokens = 1024;
  auto qa = make_sample(task("qa"), *t, g);
  ASSERT_FALSE(qa.ok());
  EXPECT_NE(qa.error().find("QA file"), std::string::npos);
}

TEST(Ruler, QaFromAUserFile) {
  NEED_TOKENIZER(t, "gpt2");
  auto dir = std::filesystem::path(testing::TempDir()) / "ruler_qa";
  std::filesystem::create_directories(dir);
  auto path = dir / "qa.jsonl";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("{\"question\": \"Who wrote the letter?\", \"answers\": [\"Ada\", \"Ada Lovelace\"], "
               "\"context\": \"The letter was written by Ada Lovelace in 1843.\"}\n\n", f);
    std::fputs("{\"question\": \"Where is the mill?\", \"answers\": [\"by the river\"], "
               "\"documents\": [\"The mill stands by the river.\", \"It was built in 1820.\"]}\n", f);
    std::fclose(f);
  }
  auto items = load_qa_file(path.string());
  ASSERT_TRUE(items.ok()) << items.error();
  ASSERT_EQ(items->size(), 2u);
  GenerateSpec g;
  g.target_tokens = 200;
  g.qa = &*items;
  g.sample_index = 0;
  auto s = make_sample(task("qa"), *t, g);
  ASSERT_TRUE(s.ok()) << s.error();
  EXPECT_LE(s->length(), 200);
  EXPECT_NE(s->user_text.find("The letter was written by Ada Lovelace in 1843."), std::string::npos);
  EXPECT_NE(s->user_text.find("Question: Who wrote the letter?"), std::string::npos);
  EXPECT_EQ(s->answer_prefix, " Answer:");
  EXPECT_DOUBLE_EQ(score(s->metric, "Ada Lovelace", s->outputs), 1.0);
  // Bad files name the line and the field.
  auto bad = dir / "bad.jsonl";
  std::FILE* f = std::fopen(bad.c_str(), "w");
  std::fputs("{\"question\": \"q\", \"answers\": []}\n", f);
  std::fclose(f);
  auto r = load_qa_file(bad.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("line 1: field \"answers\""), std::string::npos) << r.error();
}

}  // namespace
}  // namespace hylo::eval::ruler
