// The seam between the single-process trainer and data parallelism (train/distributed.*). The trainer calls
// these hooks at fixed points of every optimizer step; the default implementation is what one process needs
// (nothing), so `hylo train` without --nproc runs the same code path as N ranks.
//
// The contract, step by step (one optimizer step = `accum` micro-batches on every rank):
//   1. The trainer loads all micro-batches of the step, counts this rank's target tokens and calls
//      all_reduce_sum() on that count, so every rank knows the GLOBAL number of target tokens N.
//   2. For each micro-batch m = 0..accum-1:  before_backward(m, m == accum - 1); loss_m.backward();
//      Each micro-batch's loss is (sum of per-token losses on this rank's rows) / N, so the SUM of all
//      ranks' gradients is the gradient of the mean over the global batch: N ranks equal 1 rank.
//      Gradients accumulate in param.grad() across micro-batches. An ILD micro-batch runs one backward per
//      layer (the layers are independent), so "backward" may be several calls, but every trainable parameter
//      receives exactly one gradient contribution per micro-batch (the trainable set is chosen so that every
//      parameter in it gets one: ILD trains block parameters only).
//   3. after_backward(): when it returns, every parameter's grad() holds the SUM over ranks (all-reduce with
//      op SUM, not AVG) on every rank. An implementation may start bucketed all-reduces from gradient hooks
//      during the last micro-batch's backward (hence before_backward's `last` flag) and only wait here.
//   4. The trainer clips the gradient (global norm over all parameters: every rank has full grads) and runs
//      AdamW::step(), which updates only the parameters this rank owns (AdamW::set_owned, ZeRO-1).
//   5. after_step(): parameters owned by another rank are overwritten by the owner's broadcast.
// Metrics (loss sums, token counts) go through all_reduce_sum(); checkpoints use barrier() (see checkpoint
// writing in train/train_checkpoint.h: each rank writes the optimizer state it owns, rank 0 the rest).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace hylo::train {

// One trainable parameter: its checkpoint name and the model's own tensor (fp32 master weight, a leaf with
// requires_grad). The tensor shares storage with the model, so in-place updates are the model's update.
struct NamedParam {
  std::string name;
  at::Tensor tensor;  // fp32, requires_grad
};

class SyncHooks {
 public:
  virtual ~SyncHooks() = default;
  virtual int rank() const { return 0; }
  virtual int world() const { return 1; }

  // Once, after the trainer has collected the trainable parameters of a stage (in a fixed order, the same on
  // every rank) and before its first step. A data-parallel implementation registers gradient hooks and
  // builds its buckets here, and decides ownership (calling AdamW::set_owned through the trainer's callback).
  virtual void attach(const std::vector<NamedParam>& params) { (void)params; }
  // Once at the end of a stage: drop hooks/buckets that refer to the stage's parameters.
  virtual void detach() {}

  // Which parameters this rank updates and keeps optimizer state for (ZeRO-1). Index i refers to params[i]
  // of attach(). One process owns all.
  virtual std::vector<bool> owned(const std::vector<NamedParam>& params) const {
    return std::vector<bool>(params.size(), true);
  }

  virtual void before_backward(int micro_step, bool last_micro_step) {
    (void)micro_step;
    (void)last_micro_step;
  }
  virtual void after_backward() {}
  virtual void after_step() {}

  // Sums `values` (a small fp64 CPU tensor, in place) over all ranks.
  virtual void all_reduce_sum(at::Tensor& values) { (void)values; }
  virtual void barrier() {}
};

}  // namespace hylo::train
