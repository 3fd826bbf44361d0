// Teacher-generated training text: continuations sampled from a teacher model, prompted with seeded random
// slices of real text. Each sample is one Document = prompt tokens + generated tokens (+ the end-of-document id
// unless the teacher ended with an EOS of its own); with mask_prompt only the generated tokens are targets.
//
// Prompts: the prompt files are tokenized (no special tokens); for group g of `batch` samples a length L is
// drawn uniformly from [min_prompt_tokens, max_prompt_tokens], and each sample of the group takes L consecutive
// tokens starting at a uniformly drawn position of one file (slices never cross files); BOS is prepended when
// the model's convention adds one. Sample i samples with its own seed, derived from (seed, i).
//
// Generation runs on the inference engine (infer/engine/engine.h): every sample is one Request (its prompt, its
// seed, the run's sampling parameters, max_new_tokens, the EOS ids as stop ids), at most `batch` sequences run at
// once with continuous batching, and each picks its tokens with its own infer/sampler.h Sampler, as generate()
// does. So sample i is what generate() gives for its prompt and seed, up to the rounding by which the engine's
// logits (paged caches, chunked prefill, rows batched with whatever else runs) differ from generate()'s: on the
// CPU in fp32 the tokens agree (tested); in bf16 on a GPU a near-tie can resolve differently with the batch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "hylo/infer/engine/engine.h"
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
  int64_t batch = 1;            // sequences the engine runs at once (and samples sharing a prompt length)
  SamplingParams sampling;     // sampling.seed is the run's seed
  bool mask_prompt = false;
  bool progress = true;        // a ProgressBar over generated tokens
  // > 0: no sample starts after this many seconds (the first `batch` always start; those running finish). The
  // samples made are then samples 0..k-1, the same as a run asked for k: a GPU lease buys what it has time for,
  // and the dataset stays reproducible from its recorded count.
  double max_seconds = 0.0;
  // The engine's pools and scheduling; max_sequences is replaced by `batch` (max_step_tokens raised to it when
  // below). memory_bytes 0: on a GPU the engine's rule (gpu_memory_fraction of the free memory), on the CPU
  // what `batch` sequences of the longest prompt plus max_new_tokens need.
  engine::EngineOptions engine;
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
  int64_t preemptions = 0;  // sequences the engine preempted (pages ran out) and recomputed later
  int64_t samples = 0;      // samples made: num_samples, or fewer when max_seconds stopped new ones
  double seconds = 0.0;
};

// Samples from `teacher` and returns one Document per sample (origin: `source`, index = sample number).
std::vector<Document> generate_teacher_documents(CausalLM& teacher, const tok::Tokenizer& tokenizer,
                                                 const DocConvention& conv, const PromptCorpus& corpus,
                                                 const TeacherSampleOptions& options, int32_t source,
                                                 GenerationStats* stats = nullptr);

}  // namespace hylo::train
