#include "hylo/infer/engine/recurrent_engine_layer.h"

#include <ATen/core/grad_mode.h>

#include <memory>
#include <string>

#include "hylo/core/result.h"
#include "hylo/infer/engine/recurrent_state_parts.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::engine {

RecurrentEngineLayer::RecurrentEngineLayer(Mixer& mixer, LayerCache& cache, const char* name)
    : mixer_(mixer), cache_(cache), name_(name) {
  if (!cache.slots)
    throw Error(std::string("engine: the ") + name + " layer's cache has no state slots (is it a " + name +
                " layer of the pools' model?)");
  for (const StatePart& p : recurrent_state_parts(*cache.slots)) pool_.push_back(*p.tensor);
}

const std::vector<at::ScalarType>& RecurrentEngineLayer::native_dtypes(const at::Tensor& x) {
  if (native_for_ != x.scalar_type()) {
    // A one-row state on the meta device: the mixer's own dtypes for this input dtype, nothing allocated.
    const at::TensorOptions meta = x.options().device(at::kMeta);
    std::unique_ptr<MixerState> fresh = mixer_.new_state(1, 1, meta);
    native_.clear();
    for (const StatePart& p : recurrent_state_parts(*fresh))
      native_.push_back(p.tensor->defined() ? p.tensor->scalar_type() : at::ScalarType::Undefined);
    if (native_.size() != pool_.size())
      throw Error(std::string("engine: the ") + name_ + " mixer's state does not match its slot pool");
    native_for_ = x.scalar_type();
  }
  return native_;
}

at::Tensor RecurrentEngineLayer::positions_of(const StepBatch& batch, const SeqChunk& c, const at::Tensor& x) const {
  if (batch.positions.defined()) return batch.positions.narrow(0, c.offset, c.count);
  return at::arange(c.start, c.start + c.count, x.options().dtype(at::kLong));
}

at::Tensor RecurrentEngineLayer::run_decode(const at::Tensor& x, const StepBatch& batch) {
  const int64_t nd = batch.num_decode, D = x.size(2);
  bool rows_in_front = true;  // the runner packs decode tokens first: rows 0..nd-1, read without a copy
  std::vector<int64_t> rows(static_cast<size_t>(nd)), slots(static_cast<size_t>(nd));
  for (int64_t i = 0; i < nd; ++i) {
    rows[static_cast<size_t>(i)] = batch.seqs[static_cast<size_t>(i)].offset;
    slots[static_cast<size_t>(i)] = batch.seqs[static_cast<size_t>(i)].slot;
    rows_in_front = rows_in_front && rows[static_cast<size_t>(i)] == i;
  }
  const at::TensorOptions idx_opts = x.options().dtype(at::kLong);
  at::Tensor xd = rows_in_front ? x.narrow(1, 0, nd)                                            // [1, nd, D]
                                : x.index_select(1, at::tensor(rows, at::kLong).to(idx_opts.device()));
  xd = xd.reshape({nd, 1, D});                                                                  // [nd, 1, D]
  at::Tensor idx = batch.slots.defined() ? batch.slots.narrow(0, 0, nd)                         // [nd] int64
                                         : at::tensor(slots, at::kLong).to(idx_opts.device());

  // GDN on CUDA: one fused kernel reads and updates the slots' pool rows through idx in place, no gather/scatter
  // (an undefined result: the kernel does not cover this layer or pool dtype, and the generic path below runs).
  if (auto* gdn = dynamic_cast<GatedDeltaNetMixer*>(&mixer_)) {
    at::Tensor y = gdn->decode_fused(xd, dynamic_cast<GatedDeltaNetState&>(*cache_.slots), idx);  // [nd, 1, D]
    if (y.defined()) return y;
  }
  const std::vector<at::ScalarType>& native = native_dtypes(x);
  std::unique_ptr<MixerState> state = empty_state_like(*cache_.slots);
  std::vector<StatePart> parts = recurrent_state_parts(*state);
  for (size_t k = 0; k < pool_.size(); ++k)
    if (pool_[k].defined()) *parts[k].tensor = pool_[k].index_select(0, idx).to(native[k]);  // [nd, ...]
  at::Tensor y = mixer_.forward(xd, positions_of(batch, batch.seqs[0], x), state.get());     // [nd, 1, D]
  // (positions are the first decode token's: GDN and Mamba2 do not read them.)
  for (size_t k = 0; k < pool_.size(); ++k)
    if (pool_[k].defined()) pool_[k].index_copy_(0, idx, parts[k].tensor->to(pool_[k].scalar_type()));
  return y;
}

at::Tensor RecurrentEngineLayer::run_chunk(const at::Tensor& x, const StepBatch& batch, const SeqChunk& c) {
  const std::vector<at::ScalarType>& native = native_dtypes(x);
  std::unique_ptr<MixerState> state = empty_state_like(*cache_.slots);
  std::vector<StatePart> parts = recurrent_state_parts(*state);
  std::vector<at::Tensor> views(pool_.size());
  for (size_t k = 0; k < pool_.size(); ++k) {
    if (!pool_[k].defined()) continue;
    views[k] = pool_[k].narrow(0, c.slot, 1);  // [1, ...] a view of the slot's row
    *parts[k].tensor = views[k].to(native[k]);  // the view itself when the dtypes agree
  }
  at::Tensor y = mixer_.forward(x.narrow(1, c.offset, c.count), positions_of(batch, c, x), state.get());
  // store_state wrote the views in place; a converted part (bf16 pool) or one rebound by autograd goes back here.
  for (size_t k = 0; k < pool_.size(); ++k)
    if (views[k].defined() && !parts[k].tensor->is_same(views[k])) views[k].copy_(*parts[k].tensor);
  return y;  // [1, count, D]
}

at::Tensor RecurrentEngineLayer::forward(const at::Tensor& x, const StepBatch& batch) {
  // Inference only: the mixers' store_state then writes the slot views in place, and the pools never join a graph.
  at::NoGradGuard no_grad;
  const int64_t N = batch.num_tokens;
  if (x.dim() != 3 || x.size(0) != 1 || x.size(1) != N)
    throw Error(std::string("engine: ") + name_ + " layer input must be [1, N=" + std::to_string(N) +
                ", D], got " + shape_str(x));
  const int64_t S = static_cast<int64_t>(batch.seqs.size()), rows = cache_.slot_tensors.empty()
                                                                      ? 0
                                                                      : cache_.slot_tensors[0].size(0);
  if (batch.num_decode < 0 || batch.num_decode > S)
    throw Error("engine: step has num_decode " + std::to_string(batch.num_decode) + " of " + std::to_string(S) +
                " sequences");
  int64_t covered = 0;
  for (int64_t i = 0; i < S; ++i) {
    const SeqChunk& c = batch.seqs[static_cast<size_t>(i)];
    const std::string who = "engine: " + std::string(name_) + " layer, step sequence " + std::to_string(i);
    if (c.count < 1 || c.offset < 0 || c.offset + c.count > N)
      throw Error(who + ": rows [" + std::to_string(c.offset) + ", " + std::to_string(c.offset + c.count) +
                  ") outside the step's " + std::to_string(N) + " tokens");
    if (i < batch.num_decode && c.count != 1)
      throw Error(who + ": a decode entry must have one token, has " + std::to_string(c.count));
    if (!batch.device_only && (c.slot < 0 || c.slot >= rows))
      throw Error(who + ": slot " + std::to_string(c.slot) + " outside the pool's [0, " + std::to_string(rows) +
                  ")");
    covered += c.count;
  }
  if (covered != N)
    throw Error("engine: the step's sequences cover " + std::to_string(covered) + " tokens, num_tokens is " +
                std::to_string(N));

  at::Tensor out = at::empty_like(x);  // [1, N, D], every row written below (the counts cover N)
  const int64_t nd = batch.num_decode;
  if (nd > 0) {
    at::Tensor yd = run_decode(x, batch).view({nd, x.size(2)});  // [nd, D]
    bool in_front = true;
    for (int64_t i = 0; i < nd; ++i) in_front = in_front && batch.seqs[static_cast<size_t>(i)].offset == i;
    // A decode-only step (every row a decode row, in order): the decode output is the layer's output as it is,
    // without a copy into `out` (one kernel fewer per recurrent layer in each graph-captured decode step).
    if (in_front && nd == N && yd.scalar_type() == x.scalar_type()) return yd.reshape({1, N, x.size(2)});
    if (in_front) {
      out.narrow(1, 0, nd).copy_(yd.unsqueeze(0));
    } else {
      for (int64_t i = 0; i < nd; ++i) out.select(1, batch.seqs[static_cast<size_t>(i)].offset).copy_(yd[i].unsqueeze(0));
    }
  }
  for (int64_t i = nd; i < S; ++i) {
    const SeqChunk& c = batch.seqs[static_cast<size_t>(i)];
    out.narrow(1, c.offset, c.count).copy_(run_chunk(x, batch, c));
  }
  return out;
}

}  // namespace hylo::engine
