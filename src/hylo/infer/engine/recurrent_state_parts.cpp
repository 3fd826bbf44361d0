#include "hylo/infer/engine/recurrent_state_parts.h"

#include "hylo/core/result.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "hylo/model/mixers/mamba2.h"

namespace hylo::engine {

std::vector<StatePart> recurrent_state_parts(MixerState& state) {
  if (auto* g = dynamic_cast<GatedDeltaNetState*>(&state))
    return {{&g->conv_q, false}, {&g->conv_k, false}, {&g->conv_v, false}, {&g->recurrent, true}};
  if (auto* m = dynamic_cast<Mamba2State*>(&state)) return {{&m->conv, false}, {&m->ssm, true}};
  throw Error("engine: a recurrent slot pool needs a GatedDeltaNetState or Mamba2State, got another state type");
}

std::unique_ptr<MixerState> empty_state_like(const MixerState& state) {
  if (dynamic_cast<const GatedDeltaNetState*>(&state)) return std::make_unique<GatedDeltaNetState>();
  if (dynamic_cast<const Mamba2State*>(&state)) return std::make_unique<Mamba2State>();
  throw Error("engine: a recurrent slot pool needs a GatedDeltaNetState or Mamba2State, got another state type");
}

}  // namespace hylo::engine
