// Teacher-generated training text: continuations sampled from a teacher model, prompted with seeded random
// slices of real text. Each sample is one Document = prompt tokens + generated tokens (+ the end-of-document id
// unless the teacher ended with an EOS of its own); with mask_prompt only the generated tokens are targets.
//
// Prompts: the prompt files are tokenized (no special tokens); for group g of `batch` samples a length L is
// drawn uniformly from [min_prompt_tokens, max_prompt_tokens], and each sample of the group takes L consecutive
// tokens starting at a uniformly drawn position of one file (slices never cross files); BOS is prepended when
// the model's convention adds one. Sample i samples with its own seed, derived from (seed, i), so its tokens do
// not depend on which other samples share its batch (up to the floating-point effect of the batch size on
// the logits).
//
// batch == 1 runs the existing infer/generate.h loop per sample. batch > 1 prefills the group's equal-length
// prompts in one [B, L] forward and decodes all rows together, one [B, 1] forward per step; a row that has
// stopped keeps feeding its last token (its output is ignored) until every row has stopped. Tokens are chosen
// with infer/sampler.h: without a repetition penalty its processors run once on the [B, V] block and each row
// draws with sample_from_processed and a uniform taken as Sampler::next takes it; with one, each row has its
// own Sampler.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "hylo/infer/sampler.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"
#include "hylo/train/data_format.h"
#include "hylo/train/data_sources.h"

namespace hylo::train {

struct TeacherSampleOptions {
  int64_t num_samples = 0;
  int64_t max_new_tokens = 256;
  int64_t min_prompt_tokens = 16;
  int64_t max_prompt_tokens = 128;
  int64_t batch = 1;
  SamplingParams sampling;     // sampling.seed is the run's seed
  bool mask_prompt = false;
  bool progress = true;        // a ProgressBar over generated tokens
};

struct PromptCorpus {
  std::vector<std::vector<int32_t>> files;  // each prompt file's tokens
};

PromptCorpus tokenize_prompt_files(const tok::Tokenizer& tokenizer, const std::vector<std::filesystem::path>& files);

// One prompt (without BOS) per sample: [num_samples][L_g] tokens. Throws hylo::Error when no prompt file is as
// long as a drawn length.
std::vector<std::vector<int32_t>> draw_prompts(const PromptCorpus& corpus, const TeacherSampleOptions& options);

struct GenerationStats {
  int64_t prompt_tokens = 0, generated_tokens = 0, eos_stops = 0;
  double seconds = 0.0;
};

// Samples from `teacher` and returns one Document per sample (origin: `source`, index = sample number).
std::vector<Document> generate_teacher_documents(CausalLM& teacher, const tok::Tokenizer& tokenizer,
                                                 const DocConvention& conv, const PromptCorpus& corpus,
                                                 const TeacherSampleOptions& options, int32_t source,
                                                 GenerationStats* stats = nullptr);

}  // namespace hylo::train
