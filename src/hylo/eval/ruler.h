// RULER-style synthetic long-context tasks (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your
// Long-Context Language Models?"; reference implementation github.com/NVIDIA/RULER, scripts/data/synthetic):
// generators for the tasks that need no outside data, and RULER's scorers.
//
// Tasks (names as in RULER's synthetic.yaml):
//   niah_single_1/2/3   one needle "One of the special magic {numbers|uuids} for {key} is: {value}." in a noise
//                       (1) or essay (2, 3) haystack; values are 7-digit numbers (1, 2) or UUIDs (3)
//   niah_multikey_1/2/3 the needle among 3 other keys' needles (1, essay), or in a haystack made of distractor
//                       needles (2: word keys, number values; 3: UUID keys and values)
//   niah_multivalue     one key with 4 values          niah_multiquery  4 keys asked at once
//   vt                  variable tracking: a chain "VAR A = 12345", "VAR B = VAR A ", ... (4 hops) in noise; the
//                       answer is every variable holding the value; preceded by one worked example, as RULER does
//   cwe                 common words: a numbered list where 10 words repeat 30x (6x below 4K) and the rest 3x (1x),
//                       after one worked example; answer the 10 common words
//   fwe                 frequent words: Zipf(alpha 2) coded 6-letter words, "..." the most frequent (noise); answer
//                       the next three
//   qa                  (with a user QA file) question answering over the gold document among distractor documents
//
// Length: a sample's length is the prompt's tokens in the model's tokenizer (chat template included) plus the
// task's tokens_to_generate, as RULER counts it; the haystack size is searched so that the length lands in
// [0.99 * target, target]. Needle depth: the fraction of the haystack's units (noise lines, sentences,
// distractor needles) before the needle; RULER draws it from 40 evenly spaced depths 0..100%, or it is given.
// Prompt: the task template in the user turn of the model's chat template (RULER's "base" template, i.e. the text
// alone after BOS, when the model has none), followed by the task's answer prefix, as RULER's prepare.py does.
//
// Differences from RULER, all for want of outside data: word keys come from hylo's own adjective/noun lists
// (ruler_text.h) instead of wonderwords; the essay haystack is hylo's own paragraph, repeated (or a user file)
// instead of Paul Graham essays; cwe draws words from those lists and, past them, from generated pronounceable
// words; the noise and needle haystacks may end with a partly cut unit so that lengths can be hit within 1%;
// cwe/vt worked examples sit inside the user turn (RULER repeats its whole model template for them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::eval::ruler {

enum class Kind { kNiah, kVariableTracking, kCommonWords, kFrequentWords, kQa };
enum class HaystackType { kNoise, kEssay, kNeedle };
enum class NeedleType { kNumbers, kWords, kUuids };
enum class Metric { kStringMatchAll, kStringMatchPart };

struct TaskSpec {
  std::string name;
  Kind kind = Kind::kNiah;
  HaystackType haystack = HaystackType::kEssay;
  NeedleType key_type = NeedleType::kWords, value_type = NeedleType::kNumbers;
  int num_k = 1, num_v = 1, num_q = 1;           // niah
  int num_chains = 1, num_hops = 4;              // vt
  int freq_cw = 30, freq_ucw = 3, num_cw = 10;   // cwe
  double alpha = 2.0;                            // fwe
  int tokens_to_generate = 128;
  Metric metric = Metric::kStringMatchAll;
};

std::vector<std::string> task_names();  // every synthetic task above (not qa)
Result<TaskSpec> task_by_name(const std::string& name);

// One QA item for the qa task: a question, its accepted answers, and the documents that answer it.
struct QaItem {
  std::string question;
  std::vector<std::string> answers;
  std::vector<std::string> documents;  // gold documents
};
// JSONL, one item a line: {"question": str, "answers": [str, ...], "context": str} or
// {"question": ..., "answers": ..., "documents": [str, ...]}. Other items' documents are the distractors.
Result<std::vector<QaItem>> load_qa_file(const std::string& path);

struct GenerateSpec {
  int64_t target_tokens = 4096;         // prompt + tokens_to_generate, in the model's tokens
  uint64_t seed = 42;
  std::optional<double> depth;          // needle depth in [0, 1]; default: drawn as RULER does
  const std::string* haystack_text = nullptr;  // essay-type haystack from this text (a user file); else hylo's essay
  bool use_chat_template = true;        // when the tokenizer has one
  const std::vector<QaItem>* qa = nullptr;     // the qa task's items (required for qa)
  int64_t sample_index = 0;             // qa: which item to ask
};

struct Sample {
  std::string task;
  int64_t target_tokens = 0;
  uint64_t seed = 0;
  std::string user_text;                // the task text (inside the chat template's user turn)
  std::string answer_prefix;            // appended after the generation prompt; the model continues it
  std::string prompt;                   // the full rendered text the model sees
  std::vector<int64_t> ids;             // tokens of `prompt`
  std::vector<std::string> outputs;     // references
  int tokens_to_generate = 0;
  Metric metric = Metric::kStringMatchAll;
  std::vector<double> needle_depths;    // niah: requested depth of each inserted needle, in insertion order
  std::vector<std::string> needles;     // niah: the needle sentences, in the order they appear in the text
  int64_t length() const { return static_cast<int64_t>(ids.size()) + tokens_to_generate; }
};

Result<Sample> make_sample(const TaskSpec& task, const tok::Tokenizer& tokenizer, const GenerateSpec& spec);

// RULER's scores for one prediction, in [0, 1] (RULER reports the mean x 100): string_match_all is the fraction of
// references found in the prediction, string_match_part is 1 when any is; both compare lowercased (ASCII).
double string_match_all(const std::string& prediction, const std::vector<std::string>& refs);
double string_match_part(const std::string& prediction, const std::vector<std::string>& refs);
double score(Metric metric, const std::string& prediction, const std::vector<std::string>& refs);
// RULER's postprocess_pred: strip, control characters to newlines, strip again.
std::string postprocess_prediction(const std::string& text);

}  // namespace hylo::eval::ruler
