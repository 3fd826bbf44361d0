// The tensors of a recurrent mixer's per-sequence state (GatedDeltaNetState, Mamba2State) listed generically, so
// that the pools (cache_pool.cpp) and the recurrent engine layers (recurrent_engine_layer.cpp) handle both kinds
// with one piece of code: allocate, convert the recurrent part to the pool's state dtype, copy / zero slots, and
// bind a slot's rows to a state object the mixer's own forward updates.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "hylo/model/mixer.h"

namespace hylo::engine {

struct StatePart {
  at::Tensor* tensor = nullptr;  // a member of the state object; may be undefined (GDN without short conv)
  bool recurrent = false;        // the delta-rule / SSD state (stored in EngineOptions::state_dtype); else conv
};

// Every tensor member of `state`, in a fixed order per kind, undefined ones included. Throws hylo::Error for a
// state that is not a GatedDeltaNetState or Mamba2State.
std::vector<StatePart> recurrent_state_parts(MixerState& state);

// A new state object of the same concrete type as `state` with no tensors (for binding slot rows).
std::unique_ptr<MixerState> empty_state_like(const MixerState& state);

}  // namespace hylo::engine
