// The engine form of a token mixer: the same math as Mixer::forward, over a packed step of several sequences
// (step_batch.h) whose caches live in the engine's pools (cache_pool.h) instead of a per-sequence MixerState.
//
//   mla:    projections and RoPE on all N tokens at once; new latents scattered to their pages; each prefill chunk
//           attends (decompressed form) over its sequence's cached latent gathered from the pages; the decode
//           tokens attend together in the absorbed form over their page tables (lengths differ per sequence).
//   gqa:    the same with K/V pages (teachers and baselines in the same engine).
//   gdn, mamba2: each prefill chunk runs the mixer's chunk form from its slot's state and writes it back; the
//           decode tokens run one batched recurrent step over their slots' states.
//
// Each kind's factory lives beside it (engine_layer_*.cpp). They hold references to the mixer's parameters and to
// the layer's pools; none owns either.
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/step_batch.h"
#include "hylo/model/mixer.h"

namespace hylo::engine {

class EngineLayer {
 public:
  virtual ~EngineLayer() = default;
  // x: [1, N, D] the normalised hidden states of the step's packed tokens (the block's mixer input). Writes the
  // new tokens into the layer's pages / slots and returns the mixer output [1, N, D].
  virtual at::Tensor forward(const at::Tensor& x, const StepBatch& batch) = 0;
};

std::unique_ptr<EngineLayer> make_mla_layer(Mixer& mixer, LayerCache& cache, int64_t page_size);
std::unique_ptr<EngineLayer> make_gqa_layer(Mixer& mixer, LayerCache& cache, int64_t page_size);
std::unique_ptr<EngineLayer> make_gdn_layer(Mixer& mixer, LayerCache& cache);
std::unique_ptr<EngineLayer> make_mamba2_layer(Mixer& mixer, LayerCache& cache);

// Dispatches on mixer.kind(); throws hylo::Error for a kind without an engine form.
std::unique_ptr<EngineLayer> make_engine_layer(Mixer& mixer, LayerCache& cache, int64_t page_size);

}  // namespace hylo::engine
