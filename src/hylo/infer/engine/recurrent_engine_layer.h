// The engine form shared by the recurrent mixers (GDN, Mamba2; engine_layer_gdn.cpp, engine_layer_mamba2.cpp): no
// math of its own. Each prefill chunk runs the mixer's own forward on a state object whose tensors are views of
// its slot's rows (the mixer's store_state writes them in place); the decode tokens run one batched forward over
// their slots' rows gathered into one state, scattered back afterwards -- except GDN on CUDA in bf16, whose decode
// tokens run one fused kernel that updates the slots' pool rows in place through the slot indices
// (GatedDeltaNetMixer::decode_fused, kernels/gated_delta/gdn_decode_fused.h).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "hylo/infer/engine/engine_layer.h"

namespace hylo::engine {

class RecurrentEngineLayer : public EngineLayer {
 public:
  // `name` names the kind in errors ("gdn", "mamba2"). cache.slots must be the pool made by this kind's mixer.
  RecurrentEngineLayer(Mixer& mixer, LayerCache& cache, const char* name);

  // x: [1, N, D] -> [1, N, D] in packed order.
  at::Tensor forward(const at::Tensor& x, const StepBatch& batch) override;

 private:
  // The dtype the mixer works with for each pool part at input dtype `x_dtype` (the recurrent state in its compute
  // type, fp32 / fp64); a bf16 pool part is converted on the way in and rounded on the way back.
  const std::vector<at::ScalarType>& native_dtypes(const at::Tensor& x);
  at::Tensor positions_of(const StepBatch& batch, const SeqChunk& c, const at::Tensor& x) const;
  at::Tensor run_decode(const at::Tensor& x, const StepBatch& batch);   // [num_decode, 1, D]
  at::Tensor run_chunk(const at::Tensor& x, const StepBatch& batch, const SeqChunk& c);  // [1, count, D]

  Mixer& mixer_;
  LayerCache& cache_;
  const char* name_;
  std::vector<at::Tensor> pool_;  // the pool's part tensors, in recurrent_state_parts order (undefined kept)
  at::ScalarType native_for_ = at::ScalarType::Undefined;
  std::vector<at::ScalarType> native_;
};

}  // namespace hylo::engine
