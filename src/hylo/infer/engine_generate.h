// Generation of one prompt on the engine (engine/engine.h): what `hylo generate` and `hylo chat` run. The same
// contract as generate() in generate.h (stop at an end-of-sequence id, after max_new_tokens, or at a stop string,
// which is never emitted; text streamed in complete UTF-8), with the prompt prefilled in chunks into the engine's
// pools and decoding continuing from them. generate() stays the readable reference: tests/cpp/infer compares the
// two (greedy ids identical).
#pragma once

#include <span>

#include "hylo/infer/engine/engine.h"
#include "hylo/infer/generate.h"

namespace hylo {

struct EngineGenerateResult {
  GenerateResult generation;
  int64_t cached_prompt_tokens = 0;  // prompt tokens the prefix cache supplied instead of the model
  int64_t preemptions = 0;
};

// prompt: token ids (BOS / chat template already applied). tokenizer may be null (no text, no stop strings).
// The engine must have no other work queued (the call runs steps until its request ends).
EngineGenerateResult generate(engine::Engine& engine, const tok::Tokenizer* tokenizer,
                              std::span<const int64_t> prompt, const GenerateOptions& options,
                              const TextCallback& on_text = {});

}  // namespace hylo
