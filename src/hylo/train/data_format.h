// The on-disk form of a token dataset (layout in train/data.h) and its writer. A builder collects Documents
// (token ids, an optional per-token target mask, where the text came from), assigns each to a split, and
// write_token_dataset() writes the shards and, last, index.json into a staging directory that then replaces
// the output directory in one step: readers see the old dataset or the complete new one, never a mix.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/core/result.h"
#include "hylo/train/data.h"

namespace hylo::train {

inline constexpr const char* kDatasetFormat = "hylo-token-dataset";
inline constexpr int kDatasetVersion = 1;
inline constexpr const char* kIndexFile = "index.json";
inline constexpr const char* kHeldoutTextFile = "heldout.txt";

// Where a document came from, for the index (so docs can say exactly what was held out).
struct DocumentOrigin {
  int32_t source = -1;        // index into the dataset's sources
  int64_t index = 0;          // the document's number within its source (0-based, in reading order)
  int64_t byte_begin = -1;    // its byte range in the source file, when it is a slice of one
  int64_t byte_end = -1;
  int64_t line_begin = -1;    // 1-based first and last line, when known
  int64_t line_end = -1;
};

struct Document {
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;  // empty: every token is a target; else one byte per token, 1 = target
  std::string text;           // the text the tokens came from (written to heldout.txt for held-out documents)
  DocumentOrigin origin;
};

// One source (an input file, a JSONL file, the teacher's samples) as the index lists it.
struct SourceRecord {
  std::string path;
  std::string kind;           // "text", "paragraphs", "separated", "lines", "jsonl", "chat", "generated"
  nlohmann::json extra = nlohmann::json::object();
};

struct DatasetContents {
  std::vector<SourceRecord> sources;
  std::vector<Document> train;       // in stream order (the builder has shuffled them)
  std::vector<Document> heldout;     // in source order
  nlohmann::json tokenizer;          // vocab_size, fingerprint, bos_id, bos_added, doc_end_id, source
  nlohmann::json heldout_rule;       // how the held-out documents were chosen
  nlohmann::json build;              // seed, options, generation, timings: copied into the index
  int64_t shard_tokens = int64_t{1} << 26;  // most tokens per shard file (documents are never split)
};

// Writes `contents` as a dataset at `out` (replacing an existing dataset there; a non-empty directory that is
// not a dataset is refused). Files are written into `out`.staging-<pid> and committed atomically.
Status write_token_dataset(const std::filesystem::path& out, const DatasetContents& contents);

// The documents of one split of an opened dataset, in stream order: tokens, and the mask when the dataset has
// one (text is left empty). Used to merge datasets (`hylo data OLD_DATASET ...`) and to slice prompts from one.
std::vector<Document> read_documents(const TokenDataset& data, Split split);

// Shard file stem of split `split`, shard `i`: "train-00000".
std::string shard_stem(Split split, int64_t i);

}  // namespace hylo::train
