// make_gdn_layer (engine_layer.h): Gated DeltaNet over the engine's state slots. The math is the mixer's own
// forward (chunk form for prefill chunks, recurrent form for the batched decode step); recurrent_engine_layer.cpp
// binds slot rows to GatedDeltaNetState objects around it.
#include <memory>

#include "hylo/core/result.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/infer/engine/recurrent_engine_layer.h"
#include "hylo/model/mixers/gated_deltanet.h"

namespace hylo::engine {

std::unique_ptr<EngineLayer> make_gdn_layer(Mixer& mixer, LayerCache& cache) {
  if (mixer.kind() != MixerKind::kGdn || !dynamic_cast<GatedDeltaNetMixer*>(&mixer))
    throw Error(std::string("engine: make_gdn_layer needs a gdn mixer, got ") + mixer_kind_name(mixer.kind()));
  if (cache.kind != MixerKind::kGdn || !cache.slots || !dynamic_cast<GatedDeltaNetState*>(cache.slots.get()))
    throw Error(std::string("engine: make_gdn_layer needs a gdn layer cache, got one for ") +
                mixer_kind_name(cache.kind));
  return std::make_unique<RecurrentEngineLayer>(mixer, cache, "gdn");
}

}  // namespace hylo::engine
