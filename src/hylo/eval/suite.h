// Runs the evaluations `hylo eval` asks for on one model and returns its entry of the report (report.h): held-out
// perplexity with NLL by position, a RULER task list over a list of lengths, multiple-choice files, cloze from
// text, and generation files. Sections without input are skipped. Predictions of the generative tasks go to
// `samples_path` (JSONL) when given, so that every score can be checked by hand.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"

namespace hylo::eval {

struct SuiteOptions {
  uint64_t seed = 42;
  int64_t limit = 0;          // first N items of every task file, and at most N RULER samples (0 = no limit)
  int64_t ruler_samples = 10;  // samples per (task, length)

  std::string text_file;        // perplexity
  int64_t context = 2048, stride = 0, bucket = 0;

  std::vector<std::string> ruler_tasks;
  std::vector<int64_t> ruler_lengths;
  std::optional<double> depth;
  std::string haystack_file, qa_file;
  bool chat_template = true;

  std::vector<std::string> choice_files;
  std::string cloze_file;
  int64_t cloze_items = 500, cloze_words = 200;
  std::vector<std::string> gen_files;
  int64_t num_fewshot = 0, max_new_tokens = 256;

  std::filesystem::path samples_path;  // JSONL of generative predictions; empty = none
};

nlohmann::json evaluate_model(CausalLM& model, const tok::Tokenizer& tokenizer, const SuiteOptions& options);

// Bytes of text each id completes when `ids` are decoded in order (special tokens 0): for bits per byte.
std::vector<int64_t> token_bytes(const tok::Tokenizer& tokenizer, const std::vector<int64_t>& ids);

}  // namespace hylo::eval
