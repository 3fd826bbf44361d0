// DataParallel: the trainer's SyncHooks (train/sync_hooks.h) for N ranks of one process group --
// bucketed gradient all-reduce overlapped with the last micro-step's backward (distributed_grad_sync.h),
// optional ZeRO-1 ownership and the owners' parameter broadcast after each step (distributed_zero.h), and the
// scalar all-reduce and barrier the trainer uses for metrics and checkpoints.
#pragma once

#include <memory>
#include <optional>

#include "hylo/train/distributed.h"
#include "hylo/train/distributed_grad_sync.h"
#include "hylo/train/distributed_zero.h"
#include "hylo/train/sync_hooks.h"

namespace hylo::train {

struct DataParallelOptions {
  int64_t bucket_bytes = 25 << 20;  // DDP's default bucket size
  bool zero1 = true;                // shard optimizer state (each rank updates only the parameters it owns)
  // Make every rank start from rank 0's parameters at attach() (DDP does the same); a safety net against
  // ranks that loaded or initialised differently.
  bool broadcast_at_attach = true;
};

class DataParallel : public SyncHooks {
 public:
  DataParallel(std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {});
  ~DataParallel() override;

  int rank() const override { return group_->rank(); }
  int world() const override { return group_->world(); }

  void attach(const std::vector<NamedParam>& params) override;
  void detach() override;
  std::vector<bool> owned(const std::vector<NamedParam>& params) const override;

  void before_backward(int micro_step, bool last_micro_step) override;
  void after_backward() override;
  void after_step() override;

  void all_reduce_sum(at::Tensor& values) override;
  void barrier() override;

  // Owner rank of each attached parameter (all 0..world-1 with ZeRO-1; without it every rank owns all, and
  // this is empty).
  const std::vector<int>& owners() const { return owner_; }
  // Gradient all-reduce counters summed over every stage attached so far (issue 12 reports the overlap).
  GradSyncStats grad_stats() const;
  ProcessGroup& group() { return *group_; }

 private:
  std::shared_ptr<ProcessGroup> group_;
  DataParallelOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<int> owner_;
  std::unique_ptr<GradientBuckets> grads_;
  std::unique_ptr<OwnedParameterBroadcast> zero_;
  GradSyncStats detached_stats_;  // of stages already detached
  int64_t steps_ = 0;
};

// What a command needs to train as one rank of a job: the hooks to hand the trainer and the device this rank
// computes on (CUDA: cuda:LOCAL_RANK). hooks is null when the environment names no job of two or more ranks
// (then the command runs as one process on `requested`).
struct RankSetup {
  std::unique_ptr<DataParallel> hooks;
  at::Device device = at::Device(at::kCPU);
};
Result<RankSetup> data_parallel_from_environment(at::Device requested, DataParallelOptions options = {});

}  // namespace hylo::train
