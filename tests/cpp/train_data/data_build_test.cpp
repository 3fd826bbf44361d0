// `hylo data` end to end with the GPT-2 tokenizer on small text files: document splitting, the model's
// document convention, the held-out split (never in the training stream, listed in the index), determinism by
// seed, JSONL fields, and chat masking (exactly the assistant turns are targets).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <set>

#include "data_test_util.h"
#include "hylo/train/data.h"
#include "hylo/train/data_build.h"

namespace hylo::train {
namespace {

using testing::TempDir;

#define REQUIRE_GPT2()                                                                      \
  if (!std::filesystem::exists(testing::gpt2_tokenizer()))                                  \
  GTEST_SKIP() << testing::gpt2_tokenizer() << " missing (scripts/setup.sh unpacks it)"

std::vector<int64_t> whole_split(const TokenDataset& ds, Split split) {
  std::vector<int64_t> ids(static_cast<size_t>(ds.num_tokens(split)));
  ds.read(split, 0, static_cast<int64_t>(ids.size()), ids.data(), nullptr, nullptr);
  return ids;
}

std::string decode(const tok::Tokenizer& tok, const std::vector<int64_t>& ids) {
  std::vector<int32_t> v(ids.begin(), ids.end());
  return tok.decode(v);
}

// 40 paragraphs "Paragraph <i> tells of <word>.", in 4 files.
void write_corpus(const TempDir& tmp) {
  const char* words[] = {"whales", "ships", "storms", "harbours", "ropes"};
  for (int f = 0; f < 4; ++f) {
    std::string text;
    for (int p = 0; p < 10; ++p) {
      const int i = f * 10 + p;
      text += "Paragraph " + std::to_string(i) + " tells of " + words[i % 5] + ".\nIt has a second line.\n\n";
    }
    testing::write_text(tmp / "corpus" / ("part" + std::to_string(f) + ".txt"), text);
  }
}

DataBuildOptions base_options(const TempDir& tmp) {
  DataBuildOptions o;
  o.tokenizer = testing::gpt2_tokenizer();
  o.out = tmp / "ds";
  o.inputs = {tmp / "corpus"};
  o.input.split = TextSplit::kParagraphs;
  o.progress = false;
  return o;
}

TEST(SplitText, ParagraphsSeparatorsAndLines) {
  const std::string text = "a b\nc\n\n \n\nd\ne\n\n\nf";
  auto p = split_text(text, 0, static_cast<int64_t>(text.size()), TextSplit::kParagraphs, "");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(text.substr(p[0].byte_begin, p[0].byte_end - p[0].byte_begin), "a b\nc");
  EXPECT_EQ(text.substr(p[1].byte_begin, p[1].byte_end - p[1].byte_begin), "d\ne");
  EXPECT_EQ(p[1].line_begin, 6);
  EXPECT_EQ(p[1].line_end, 7);
  EXPECT_EQ(text.substr(p[2].byte_begin), "f");
  auto s = split_text("x<doc>y<doc><doc> <doc>z", 0, 24, TextSplit::kSeparator, "<doc>");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[2].byte_begin, 23);
  auto whole = split_text(" \n", 0, 2, TextSplit::kFile, "");
  EXPECT_TRUE(whole.empty());
  auto r = line_range("l1\nl2\nl3\nl4", 2, 3, "f");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string("l1\nl2\nl3\nl4").substr(r->byte_begin, r->byte_end - r->byte_begin), "l2\nl3\n");
  EXPECT_TRUE(line_range("l1\nl2\nl3\nl4", 4, 4, "f").ok());
  auto bad = line_range("l1\nl2\n", 2, 5, "f.txt");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("f.txt"), std::string::npos);
}

TEST(BuildDataset, HeldOutDocumentsNeverAppearInTheTrainStream) {
  REQUIRE_GPT2();
  TempDir tmp;
  write_corpus(tmp);
  DataBuildOptions o = base_options(tmp);
  o.heldout_fraction = 0.25;
  o.seed = 7;
  const DataBuildSummary s = build_token_dataset(o).value_or_throw();
  EXPECT_EQ(s.heldout_documents, 10);
  EXPECT_EQ(s.train_documents, 30);

  const auto tok = tok::Tokenizer::from_path(testing::gpt2_tokenizer()).value_or_throw();
  auto ds = TokenDataset::open(tmp / "ds").value_or_throw();
  EXPECT_EQ(ds->doc_end_id(), tok.token_to_id("<|endoftext|>"));
  const std::string train = decode(tok, whole_split(*ds, Split::kTrain));
  const std::string held = decode(tok, whole_split(*ds, Split::kHeldout));
  const auto index = nlohmann::json::parse(testing::read_all(tmp / "ds" / "index.json"));
  std::set<int> held_ids;
  for (const auto& d : index["heldout"]["documents"]) {
    // Document k of file partF.txt is paragraph 10 F + k.
    const std::string path = d["path"].get<std::string>();
    const int f = path[path.size() - 5] - '0';
    held_ids.insert(10 * f + d["document"].get<int>());
    EXPECT_EQ(d["lines"][1].get<int>() - d["lines"][0].get<int>(), 1);
  }
  ASSERT_EQ(held_ids.size(), 10u);
  for (int i = 0; i < 40; ++i) {
    const std::string marker = "Paragraph " + std::to_string(i) + " tells";
    const bool in_train = train.find(marker) != std::string::npos;
    const bool in_held = held.find(marker) != std::string::npos;
    EXPECT_NE(in_train, in_held) << i;
    EXPECT_EQ(in_held, held_ids.count(i) == 1) << i;
  }
  // Each document ends with <|endoftext|>; heldout.txt is the held-out text.
  EXPECT_EQ(std::count(train.begin(), train.end(), '|'), 30 * 2);
  EXPECT_NE(testing::read_all(tmp / "ds" / "heldout.txt").find("Paragraph"), std::string::npos);
  // The evaluation stream reads only held-out tokens.
  PackedLoader eval(ds, Split::kHeldout, 4, 0);
  const std::vector<int64_t> held_ids_stream = whole_split(*ds, Split::kHeldout);
  const PackedBatch b = eval.next(2);
  for (int64_t r = 0; r < 2; ++r) {
    const int64_t first = b.ids[r][0].item<int64_t>();
    EXPECT_NE(std::find(held_ids_stream.begin(), held_ids_stream.end(), first), held_ids_stream.end());
  }
}

TEST(BuildDataset, DeterministicBySeedAndDifferentAcrossSeeds) {
  REQUIRE_GPT2();
  TempDir tmp;
  write_corpus(tmp);
  DataBuildOptions o = base_options(tmp);
  o.heldout_docs = 5;
  o.seed = 1;
  o.shard_tokens = 200;
  build_token_dataset(o).value_or_throw();
  o.out = tmp / "again";
  build_token_dataset(o).value_or_throw();
  o.out = tmp / "other";
  o.seed = 2;
  build_token_dataset(o).value_or_throw();
  int compared = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp / "ds")) {
    const std::string name = e.path().filename().string();
    if (name == "index.json") continue;
    EXPECT_EQ(testing::read_all(e.path()), testing::read_all(tmp / "again" / name)) << name;
    ++compared;
  }
  EXPECT_GT(compared, 4);
  auto index_of = [&](const char* d) {
    auto j = nlohmann::json::parse(testing::read_all(tmp / d / "index.json"));
    return j;
  };
  // Same options: identical index (paths aside, which differ only in --out, not stored).
  EXPECT_EQ(index_of("ds"), index_of("again"));
  EXPECT_NE(index_of("ds")["heldout"]["documents"], index_of("other")["heldout"]["documents"]);
  EXPECT_NE(testing::read_all(tmp / "ds" / "train-00000.tok"), testing::read_all(tmp / "other" / "train-00000.tok"));
}

TEST(BuildDataset, HeldOutLinesAreCutOutOfTheirFile) {
  REQUIRE_GPT2();
  TempDir tmp;
  std::string text;
  for (int i = 1; i <= 12; ++i) text += "Line number " + std::to_string(i) + " of the book.\n";
  testing::write_text(tmp / "book.txt", text);
  testing::write_text(tmp / "other.txt", "Another text entirely.\n");
  DataBuildOptions o;
  o.tokenizer = testing::gpt2_tokenizer();
  o.out = tmp / "ds";
  o.inputs = {tmp / "book.txt", tmp / "other.txt"};
  o.heldout_lines = {parse_heldout_lines((tmp / "book.txt").string() + ":4-6").value_or_throw()};
  o.progress = false;
  const DataBuildSummary s = build_token_dataset(o).value_or_throw();
  EXPECT_EQ(s.heldout_documents, 1);
  EXPECT_EQ(s.train_documents, 3);  // lines 1-3, lines 7-12, other.txt
  EXPECT_EQ(testing::read_all(tmp / "ds" / "heldout.txt"),
            "Line number 4 of the book.\nLine number 5 of the book.\nLine number 6 of the book.\n");
  const auto tok = tok::Tokenizer::from_path(testing::gpt2_tokenizer()).value_or_throw();
  auto ds = TokenDataset::open(tmp / "ds").value_or_throw();
  const std::string train = decode(tok, whole_split(*ds, Split::kTrain));
  for (int i = 1; i <= 12; ++i)
    EXPECT_EQ(train.find("Line number " + std::to_string(i) + " ") != std::string::npos, i < 4 || i > 6) << i;
  const auto index = nlohmann::json::parse(testing::read_all(tmp / "ds" / "index.json"));
  EXPECT_EQ(index["heldout"]["documents"][0]["lines"], nlohmann::json({4, 6}));
  EXPECT_FALSE(parse_heldout_lines("book.txt:6-4").ok());
  EXPECT_FALSE(parse_heldout_lines("book.txt").ok());
}

TEST(BuildDataset, ADatasetAsInputKeepsItsDocumentsAndItsHeldOutSplit) {
  REQUIRE_GPT2();
  TempDir tmp;
  write_corpus(tmp);
  std::string book;
  for (int i = 1; i <= 6; ++i) book += "Book line " + std::to_string(i) + ".\n";
  testing::write_text(tmp / "book.txt", book);
  DataBuildOptions o = base_options(tmp);
  o.heldout_lines = {parse_heldout_lines((tmp / "book.txt").string() + ":2-3").value_or_throw()};
  o.heldout_docs = 2;
  build_token_dataset(o).value_or_throw();

  testing::write_text(tmp / "extra.txt", "An extra document.");
  DataBuildOptions m;
  m.tokenizer = testing::gpt2_tokenizer();
  m.out = tmp / "merged";
  m.inputs = {tmp / "ds", tmp / "extra.txt"};
  m.seed = 99;
  m.progress = false;
  const DataBuildSummary s = build_token_dataset(m).value_or_throw();
  EXPECT_EQ(s.train_documents, 40 - 2 + 1);
  EXPECT_EQ(s.heldout_documents, 3);
  auto a = TokenDataset::open(tmp / "ds").value_or_throw();
  auto b = TokenDataset::open(tmp / "merged").value_or_throw();
  EXPECT_EQ(whole_split(*a, Split::kHeldout), whole_split(*b, Split::kHeldout));
  EXPECT_EQ(testing::read_all(tmp / "ds" / "heldout.txt"), testing::read_all(tmp / "merged" / "heldout.txt"));
  auto docs_of = [](const TokenDataset& d) {
    std::multiset<std::vector<uint32_t>> set;
    for (const auto& doc : read_documents(d, Split::kTrain)) set.insert(doc.tokens);
    return set;
  };
  auto want = docs_of(*a);
  const auto tok = tok::Tokenizer::from_path(testing::gpt2_tokenizer()).value_or_throw();
  auto extra = tok.encode("An extra document.");
  extra.push_back(*tok.token_to_id("<|endoftext|>"));
  want.insert(std::vector<uint32_t>(extra.begin(), extra.end()));
  EXPECT_EQ(docs_of(*b), want);
  // Another vocabulary is refused.
  const auto llama = testing::data_root() / "tokenizers/llama3_2";
  if (std::filesystem::exists(llama / "tokenizer.json")) {
    m.tokenizer = llama;
    auto r = build_token_dataset(m);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().find("fingerprint"), std::string::npos) << r.error();
  }
}

TEST(BuildDataset, HeldOutFileAndJsonlFields) {
  REQUIRE_GPT2();
  TempDir tmp;
  testing::write_text(tmp / "a.jsonl", "{\"body\": \"First record.\"}\n\n{\"body\": \"Second record.\"}\n");
  testing::write_text(tmp / "held.txt", "Held out whole file.");
  DataBuildOptions o;
  o.tokenizer = testing::gpt2_tokenizer();
  o.out = tmp / "ds";
  o.inputs = {tmp / "a.jsonl"};
  o.input.jsonl_field = "body";
  o.heldout_files = {tmp / "held.txt"};
  o.progress = false;
  const DataBuildSummary s = build_token_dataset(o).value_or_throw();
  EXPECT_EQ(s.train_documents, 2);
  EXPECT_EQ(s.heldout_documents, 1);
  const auto index = nlohmann::json::parse(testing::read_all(tmp / "ds" / "index.json"));
  EXPECT_EQ(index["sources"][0]["kind"], "jsonl");
  EXPECT_EQ(index["sources"][0]["train_documents"], 2);
  EXPECT_EQ(index["sources"][1]["heldout_documents"], 1);
  EXPECT_EQ(index["heldout"]["documents"][0]["path"], (tmp / "held.txt").string());

  o.input.jsonl_field = "text";
  auto r = build_token_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("a.jsonl:1: missing string field \"text\""), std::string::npos) << r.error();
}

// Chat masking with the Llama-3.2 tokenizer (its tokenizer_config.json carries the chat template).
TEST(BuildDataset, ChatMaskMarksExactlyTheAssistantTokens) {
  const auto dir = testing::data_root() / "tokenizers/llama3_2";
  if (!std::filesystem::exists(dir / "tokenizer_config.json")) GTEST_SKIP() << dir << " missing";
  const auto tok = tok::Tokenizer::from_path(dir).value_or_throw();
  ASSERT_TRUE(tok.has_chat_template());
  const DocConvention conv = doc_convention(tok, "").value_or_throw();
  const std::vector<tok::ChatMessage> messages = {{"system", "Be brief."},
                                                  {"user", "Name a whale."},
                                                  {"assistant", "The sperm whale."},
                                                  {"user", "Another?"},
                                                  {"assistant", "A humpback."}};
  const Document d = chat_document(tok, conv, messages, /*mask_prompt=*/true, "chat.jsonl:1").value_or_throw();
  ASSERT_EQ(d.mask.size(), d.tokens.size());
  // The targets, run by run, are each assistant turn's content and its end-of-turn marker.
  std::vector<std::string> runs;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= d.tokens.size(); ++i) {
    if (i < d.tokens.size() && d.mask[i]) {
      run.push_back(static_cast<int32_t>(d.tokens[i]));
    } else if (!run.empty()) {
      runs.push_back(tok.decode(run));
      run.clear();
    }
  }
  EXPECT_EQ(runs, (std::vector<std::string>{"The sperm whale.<|eot_id|>", "A humpback.<|eot_id|>"}));
  // Everything, masked or not, is the rendered conversation followed by the document end.
  std::vector<int32_t> all(d.tokens.begin(), d.tokens.end() - 1);
  EXPECT_EQ(tok.decode(all), tok.apply_chat_template(messages, false).value_or_throw());
  EXPECT_EQ(static_cast<int32_t>(d.tokens.back()), conv.doc_end_id.value());
  EXPECT_EQ(d.mask.back(), 0);
  // Without --mask-prompt: no mask, every token a target.
  EXPECT_TRUE(chat_document(tok, conv, messages, false, "x").value_or_throw().mask.empty());
  // A chat without an assistant turn cannot be trained on with the mask.
  EXPECT_FALSE(chat_document(tok, conv, {{"user", "hi"}}, true, "x").ok());
}

TEST(BuildDataset, ChatJsonlThroughTheBuilderKeepsTheMask) {
  const auto dir = testing::data_root() / "tokenizers/llama3_2";
  if (!std::filesystem::exists(dir / "tokenizer_config.json")) GTEST_SKIP() << dir << " missing";
  TempDir tmp;
  testing::write_text(tmp / "chat.jsonl",
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
                      "\"content\": \"Hello there.\"}]}\n");
  DataBuildOptions o;
  o.tokenizer = dir;
  o.out = tmp / "ds";
  o.inputs = {tmp / "chat.jsonl"};
  o.input.mask_prompt = true;
  o.progress = false;
  build_token_dataset(o).value_or_throw();
  auto ds = TokenDataset::open(tmp / "ds").value_or_throw();
  ASSERT_TRUE(ds->has_loss_mask());
  const int64_t n = ds->num_tokens(Split::kTrain);
  std::vector<int64_t> ids(n);
  std::vector<float> mask(n);
  ds->read(Split::kTrain, 0, n, ids.data(), mask.data(), nullptr);
  const auto tok = tok::Tokenizer::from_path(dir).value_or_throw();
  std::vector<int32_t> targets;
  for (int64_t i = 0; i < n; ++i)
    if (mask[i] > 0) targets.push_back(static_cast<int32_t>(ids[i]));
  EXPECT_EQ(tok.decode(targets), "Hello there.<|eot_id|>");
  const auto index = nlohmann::json::parse(testing::read_all(tmp / "ds" / "index.json"));
  EXPECT_EQ(index["sources"][0]["kind"], "chat");
  EXPECT_TRUE(index["tokenizer"]["bos_added"].get<bool>());  // Llama-3 adds <|begin_of_text|>
}

TEST(BuildDataset, BadOptionsFailBeforeAnyWork) {
  REQUIRE_GPT2();
  TempDir tmp;
  write_corpus(tmp);
  DataBuildOptions o = base_options(tmp);
  o.heldout_fraction = 0.1;
  o.heldout_docs = 3;
  EXPECT_FALSE(build_token_dataset(o).ok());
  o = base_options(tmp);
  o.inputs = {tmp / "nope"};
  auto r = build_token_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("nope"), std::string::npos);
  o = base_options(tmp);
  o.heldout_fraction = 0.999;
  EXPECT_FALSE(build_token_dataset(o).ok());  // nothing left to train on
  EXPECT_FALSE(std::filesystem::exists(tmp / "ds"));
}

}  // namespace
}  // namespace hylo::train
