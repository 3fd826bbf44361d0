// Resumable training state of one stage: a directory written atomically (staging directory + one rename, so a
// run killed while saving keeps the previous state) that lets `hylo train --resume` continue bit for bit:
//   params.safetensors          every model parameter in fp32 (rank 0)
//   optimizer.rank<r>.safetensors   AdamW state of the parameters rank r owns (each rank; ZeRO-1)
//   state.json                  step, schedule length, tokens seen, data-loader position, world size (rank 0)
// There is no other randomness in a training step (no dropout, no sampling), so with the data order restored
// from the loader state the resumed steps are the steps the uninterrupted run takes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "hylo/core/result.h"
#include "hylo/model/causal_lm.h"
#include "hylo/train/adamw.h"
#include "hylo/train/data.h"
#include "hylo/train/sync_hooks.h"

namespace hylo::train {

struct TrainState {
  std::string stage;
  int64_t step = 0;          // optimizer steps done
  int64_t total_steps = 0;   // the schedule's length
  int64_t tokens = 0;        // training tokens consumed (global)
  LoaderState loader;
  int world = 1;
  double elapsed_seconds = 0;
};

// Collective: every rank calls it (barriers inside).
Status save_train_state(const std::filesystem::path& dir, CausalLM& model, const AdamW& optimizer,
                        const TrainState& state, SyncHooks& hooks);
// Loads parameters into `model` (same names and shapes), the owned optimizer state, and returns the state.
Result<TrainState> load_train_state(const std::filesystem::path& dir, CausalLM& model, AdamW& optimizer);

}  // namespace hylo::train
