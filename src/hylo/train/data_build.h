// `hylo data` as a library call: read and tokenize the inputs, optionally sample teacher text, choose the
// held-out documents, shuffle the training documents by seed, and write the dataset (train/data_format.h).
// The result is a pure function of the inputs and the options (same bytes on every run).
//
// Held-out documents, in this order of precedence:
//   heldout_files   every document of these files (added to the inputs when not among them)
//   heldout_lines   lines [first, last] of a file, as one document (cut out of that file's training text when the
//                   file is also an input)
//   heldout_fraction / heldout_docs   a seeded draw (permutation by (seed, "heldout")) over all other documents,
//                   teacher samples included: round(fraction x count) of them, or exactly heldout_docs
// Training documents are written in the order of a seeded permutation; held-out ones in source order, and their
// text also goes to heldout.txt (for `hylo perplexity`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/core/result.h"
#include "hylo/model/causal_lm.h"
#include "hylo/train/data_generate.h"
#include "hylo/train/data_sources.h"

namespace hylo::train {

struct HeldoutLines {
  std::filesystem::path file;
  int64_t first = 0, last = 0;  // 1-based, inclusive
};

// "FILE:FIRST-LAST" -> HeldoutLines; errors name the option.
Result<HeldoutLines> parse_heldout_lines(const std::string& spec);

struct DataBuildOptions {
  std::filesystem::path tokenizer;          // tokenizer.json, model dir or GGUF; empty: the teacher's
  std::filesystem::path out;
  std::vector<std::filesystem::path> inputs;
  InputOptions input;
  std::string doc_end;                      // "" (model default), "none", or a token string
  uint64_t seed = 0;
  double heldout_fraction = 0.0;
  int64_t heldout_docs = 0;
  std::vector<std::filesystem::path> heldout_files;
  std::vector<HeldoutLines> heldout_lines;
  int64_t shard_tokens = int64_t{1} << 26;
  bool progress = true;
  // Teacher-generated samples (when generate_with is set); gen.sampling.seed is taken from `seed`.
  std::filesystem::path generate_with;
  std::vector<std::filesystem::path> prompts_from;
  TeacherSampleOptions gen;
  LoadOptions load;
};

struct DataBuildSummary {
  int64_t train_tokens = 0, train_documents = 0, heldout_tokens = 0, heldout_documents = 0;
  int64_t sources = 0;
  GenerationStats generation;
  double seconds = 0.0;
};

Result<DataBuildSummary> build_token_dataset(const DataBuildOptions& options);

}  // namespace hylo::train
