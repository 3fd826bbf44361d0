#include "hylo/infer/engine/engine_layer.h"

#include "hylo/core/result.h"

namespace hylo::engine {

std::unique_ptr<EngineLayer> make_engine_layer(Mixer& mixer, LayerCache& cache, int64_t page_size) {
  switch (mixer.kind()) {
    case MixerKind::kMla: return make_mla_layer(mixer, cache, page_size);
    case MixerKind::kGqa: return make_gqa_layer(mixer, cache, page_size);
    case MixerKind::kGdn: return make_gdn_layer(mixer, cache);
    case MixerKind::kMamba2: return make_mamba2_layer(mixer, cache);
  }
  throw Error("engine: no engine form for this mixer kind");
}

}  // namespace hylo::engine
