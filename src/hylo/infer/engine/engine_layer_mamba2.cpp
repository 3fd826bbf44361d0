// make_mamba2_layer (engine_layer.h): Mamba2 over the engine's state slots. The math is the mixer's own forward
// (ssd_chunk for prefill chunks, ssd_recurrent for the batched decode step); recurrent_engine_layer.cpp binds slot
// rows to Mamba2State objects around it.
#include <memory>

#include "hylo/core/result.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/infer/engine/recurrent_engine_layer.h"
#include "hylo/model/mixers/mamba2.h"

namespace hylo::engine {

std::unique_ptr<EngineLayer> make_mamba2_layer(Mixer& mixer, LayerCache& cache) {
  if (mixer.kind() != MixerKind::kMamba2 || !dynamic_cast<Mamba2Mixer*>(&mixer))
    throw Error(std::string("engine: make_mamba2_layer needs a mamba2 mixer, got ") + mixer_kind_name(mixer.kind()));
  if (cache.kind != MixerKind::kMamba2 || !cache.slots || !dynamic_cast<Mamba2State*>(cache.slots.get()))
    throw Error(std::string("engine: make_mamba2_layer needs a mamba2 layer cache, got one for ") +
                mixer_kind_name(cache.kind));
  return std::make_unique<RecurrentEngineLayer>(mixer, cache, "mamba2");
}

}  // namespace hylo::engine
