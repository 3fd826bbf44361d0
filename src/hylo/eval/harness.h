// lm-eval-harness-style tasks: log-likelihood of a continuation given a context, multiple-choice scoring (acc,
// acc_norm), LAMBADA-style cloze built from held-out text, and generation tasks with GSM8K answer extraction.
// The definitions follow lm-evaluation-harness (EleutherAI) so that figures are comparable:
//
//  * loglikelihood(context, continuation): trailing spaces of the context move to the continuation; the
//    continuation's tokens are encode(context + continuation)[len(encode(context)):], with no special tokens
//    (HFLM's default for causal models); an empty context is replaced by the BOS id (else EOS). The sum of the
//    continuation tokens' log-probabilities, and is_greedy = every continuation token is the argmax.
//  * multiple choice: continuation = target_delimiter (" ") + choice; acc = [argmax_i ll_i == gold];
//    acc_norm = [argmax_i ll_i / len(choice_i) == gold], len in Unicode code points of the choice without the
//    delimiter (Python len(str), as lm-eval's completion_len); ties go to the first index (np.argmax).
//  * cloze (lambada): ll(context, " " + last word): acc = is_greedy, perplexity = exp(-mean ll).
//  * generation (gsm8k): greedy until "Question:" / EOS; "strict-match" takes the first "#### N" in the output,
//    "flexible-extract" the last number; exact match after removing ",", "$", everything up to "#### " and a
//    final "." from both prediction and reference, ignoring case.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"

namespace hylo::eval {

// ---- log-likelihood -------------------------------------------------------------------------------------------

struct EncodedPair {
  std::vector<int64_t> context, continuation;
};
EncodedPair encode_pair(const tok::Tokenizer& tokenizer, const std::string& context, const std::string& continuation);

struct Loglikelihood {
  double logprob = 0.0;  // natural log
  bool is_greedy = false;
  int64_t tokens = 0;    // continuation tokens
};
// (context + continuation)[-(max_length+1):][:-1] is fed, as lm-eval does; max_length <= 0: no limit.
Loglikelihood loglikelihood(CausalLM& model, const EncodedPair& pair, int64_t max_length = 0);

// ---- multiple choice ----------------------------------------------------------------------------------------

struct ChoiceItem {
  std::string context;
  std::vector<std::string> choices;
  int64_t gold = 0;
};
// JSONL: {"context" | "query": str, "choices": [str, ...], "gold" | "label": int}, one item a line.
Result<std::vector<ChoiceItem>> load_choice_file(const std::string& path);

struct ChoiceResult {
  std::vector<double> logprobs;  // per choice
  int64_t pred = 0, pred_norm = 0;
  double acc = 0.0, acc_norm = 0.0;
};
// lm-eval's process_results for multiple_choice, from the choices' log-likelihoods.
ChoiceResult score_choices(const std::vector<double>& logprobs, const std::vector<std::string>& choices, int64_t gold);
int64_t utf8_length(const std::string& s);  // code points

// ---- cloze --------------------------------------------------------------------------------------------------

struct ClozeItem {
  std::string context;  // ends right before the space and the target word
  std::string target;   // the word (no leading space)
};
// Passages of `words` whitespace-separated words from `text`, cut at random (seeded) places so that the next
// word is alphabetic with >= 3 letters (trailing punctuation dropped); `count` items.
std::vector<ClozeItem> make_cloze_items(const std::string& text, int64_t count, int64_t words, uint64_t seed);

// ---- generation ---------------------------------------------------------------------------------------------

struct GenItem {
  std::string question, answer;  // answer: the reference text (GSM8K: reasoning then "#### N")
};
// JSONL: {"question": str, "answer": str}.
Result<std::vector<GenItem>> load_gen_file(const std::string& path);

std::string gsm8k_prompt(const std::vector<GenItem>& shots, const GenItem& item);  // "Question: ...\nAnswer:"
std::string extract_strict(const std::string& output);    // first "#### N" group, or "[invalid]"
std::string extract_flexible(const std::string& output);  // last number, or "[invalid]"
std::string normalize_answer(const std::string& s);       // lm-eval's regexes_to_ignore + lowercase
bool exact_match(const std::string& prediction, const std::string& reference);

}  // namespace hylo::eval
