// The dataset files: what is written reads back token for token (ids, masks, document starts, across shards),
// and a damaged or half-written dataset fails to open with an error naming the file and the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data_test_util.h"
#include "hylo/train/data.h"
#include "hylo/train/data_format.h"

namespace hylo::train {
namespace {

using testing::TempDir;

struct Stream {
  std::vector<int64_t> ids;
  std::vector<float> mask;
  std::vector<char> doc_start;
};

Stream read_split(const TokenDataset& ds, Split split) {
  const int64_t n = ds.num_tokens(split);
  Stream s;
  s.ids.resize(n);
  s.mask.resize(n);
  auto starts = std::make_unique<bool[]>(static_cast<size_t>(n));
  ds.read(split, 0, n, s.ids.data(), s.mask.data(), starts.get());
  s.doc_start.assign(starts.get(), starts.get() + n);
  return s;
}

TEST(DatasetFormat, RoundTripOfTokensMasksAndDocumentStartsAcrossShards) {
  TempDir tmp;
  const std::vector<int> sizes = {5, 1, 7, 3, 9, 2, 4};
  DatasetContents c = testing::positional_contents(sizes, /*with_masks=*/true, 1000);
  c.shard_tokens = 10;  // several shards, documents never split
  Document held;
  held.tokens = {900, 901, 902};
  held.text = "held-out text";
  c.heldout.push_back(held);
  ASSERT_TRUE(write_token_dataset(tmp / "ds", c).ok());

  auto opened = TokenDataset::open(tmp / "ds");
  ASSERT_TRUE(opened.ok()) << opened.error();
  const TokenDataset& ds = **opened;
  EXPECT_EQ(ds.vocab_size(), 1000);
  EXPECT_TRUE(ds.has_loss_mask());
  EXPECT_EQ(ds.num_documents(Split::kTrain), 7);
  EXPECT_EQ(ds.num_tokens(Split::kTrain), 31);
  EXPECT_EQ(ds.num_documents(Split::kHeldout), 1);
  EXPECT_EQ(ds.num_tokens(Split::kHeldout), 3);

  const Stream s = read_split(ds, Split::kTrain);
  int64_t pos = 0;
  for (size_t d = 0; d < sizes.size(); ++d)
    for (int i = 0; i < sizes[d]; ++i, ++pos) {
      EXPECT_EQ(s.ids[pos], pos);
      EXPECT_EQ(s.doc_start[pos], i == 0) << pos;
      const float want = (d % 2 == 1 && i % 3 == 0) ? 0.0f : 1.0f;
      EXPECT_EQ(s.mask[pos], want) << pos;
    }
  // A read that starts and ends inside shards.
  std::vector<int64_t> part(13);
  ds.read(Split::kTrain, 4, 13, part.data(), nullptr, nullptr);
  for (int i = 0; i < 13; ++i) EXPECT_EQ(part[i], 4 + i);
  EXPECT_THROW(ds.read(Split::kTrain, 30, 2, part.data(), nullptr, nullptr), Error);

  const Stream h = read_split(ds, Split::kHeldout);
  EXPECT_EQ(h.ids, (std::vector<int64_t>{900, 901, 902}));
  EXPECT_EQ(testing::read_all(tmp / "ds" / "heldout.txt"), "held-out text");

  const auto index = nlohmann::json::parse(testing::read_all(tmp / "ds" / "index.json"));
  EXPECT_GT(index["splits"]["train"]["shards"].size(), 2u);
}

TEST(DatasetFormat, WithoutMasksEveryTokenIsATarget) {
  TempDir tmp;
  ASSERT_TRUE(write_token_dataset(tmp / "ds", testing::positional_contents({4, 4}, false, 100)).ok());
  auto ds = TokenDataset::open(tmp / "ds").value_or_throw();
  EXPECT_FALSE(ds->has_loss_mask());
  EXPECT_FALSE(std::filesystem::exists(tmp / "ds" / "train-00000.mask"));
  const Stream s = read_split(*ds, Split::kTrain);
  for (float m : s.mask) EXPECT_EQ(m, 1.0f);
}

class DamagedDataset : public ::testing::Test {
 protected:
  void SetUp() override {
    DatasetContents c = testing::positional_contents({6, 6, 6}, true, 100);
    c.shard_tokens = 12;
    ASSERT_TRUE(write_token_dataset(dir(), c).ok());
  }
  std::filesystem::path dir() const { return tmp_ / "ds"; }
  std::string open_error() {
    auto r = TokenDataset::open(dir());
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : r.error();
  }
  void edit_index(const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(testing::read_all(dir() / "index.json"));
    edit(j);
    testing::write_text(dir() / "index.json", j.dump());
  }
  TempDir tmp_;
};

TEST_F(DamagedDataset, MissingIndexSaysTheDatasetIsIncomplete) {
  std::filesystem::remove(dir() / "index.json");
  const std::string e = open_error();
  EXPECT_NE(e.find((dir() / "index.json").string()), std::string::npos) << e;
  EXPECT_NE(e.find("incomplete"), std::string::npos) << e;
}

TEST_F(DamagedDataset, TruncatedShardNamesTheFile) {
  std::filesystem::resize_file(dir() / "train-00001.tok", 5 * 4);
  const std::string e = open_error();
  EXPECT_NE(e.find("train-00001.tok"), std::string::npos) << e;
  EXPECT_NE(e.find("20 bytes"), std::string::npos) << e;
}

TEST_F(DamagedDataset, MissingShardAndMaskNameTheFile) {
  std::filesystem::remove(dir() / "train-00000.mask");
  EXPECT_NE(open_error().find("train-00000.mask: missing"), std::string::npos);
}

TEST_F(DamagedDataset, WrongCountsNameTheField) {
  edit_index([](nlohmann::json& j) { j["splits"]["train"]["tokens"] = 17; });
  std::string e = open_error();
  EXPECT_NE(e.find("index.json: splits.train.tokens"), std::string::npos) << e;
  edit_index([](nlohmann::json& j) {
    j["splits"]["train"]["tokens"] = 18;
    j["splits"]["train"]["shards"][0]["documents"] = 3;
  });
  e = open_error();
  EXPECT_NE(e.find("train-00000.docs"), std::string::npos) << e;
  edit_index([](nlohmann::json& j) { j["splits"]["train"]["shards"][0].erase("documents"); });
  e = open_error();
  EXPECT_NE(e.find("splits.train.shards[0]: missing field \"documents\""), std::string::npos) << e;
}

TEST_F(DamagedDataset, TokenOutsideTheVocabularyAndWrongFormat) {
  edit_index([](nlohmann::json& j) { j["vocab_size"] = 10; });
  std::string e = open_error();
  EXPECT_NE(e.find("train-00000.tok: token 10 is id 10"), std::string::npos) << e;
  edit_index([](nlohmann::json& j) {
    j["vocab_size"] = 100;
    j["format"] = "something-else";
  });
  e = open_error();
  EXPECT_NE(e.find("format"), std::string::npos) << e;
}

TEST_F(DamagedDataset, CorruptDocumentOffsetsAreRejected) {
  std::vector<uint64_t> bad = {0, 0};
  testing::write_text(dir() / "train-00000.docs", std::string(reinterpret_cast<const char*>(bad.data()), 16));
  const std::string e = open_error();
  EXPECT_NE(e.find("train-00000.docs: document 1"), std::string::npos) << e;
}

TEST(DatasetFormat, RefusesToReplaceADirectoryThatIsNotADataset) {
  TempDir tmp;
  testing::write_text(tmp / "notes" / "a.txt", "precious");
  const Status s = write_token_dataset(tmp / "notes", testing::positional_contents({3}, false, 10));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().find("not a token dataset"), std::string::npos) << s.error();
  EXPECT_EQ(testing::read_all(tmp / "notes" / "a.txt"), "precious");
  // An existing dataset is replaced as a whole (no shard of the old build survives).
  DatasetContents big = testing::positional_contents({5, 5, 5, 5}, false, 100);
  big.shard_tokens = 5;
  ASSERT_TRUE(write_token_dataset(tmp / "ds", big).ok());
  EXPECT_TRUE(std::filesystem::exists(tmp / "ds" / "train-00003.tok"));
  ASSERT_TRUE(write_token_dataset(tmp / "ds", testing::positional_contents({3}, false, 100)).ok());
  EXPECT_FALSE(std::filesystem::exists(tmp / "ds" / "train-00003.tok"));
  EXPECT_TRUE(TokenDataset::open(tmp / "ds").ok());
}

}  // namespace
}  // namespace hylo::train
