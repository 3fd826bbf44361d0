// Bucketed gradient all-reduce overlapped with backward, as PyTorch's DDP does it: parameters are grouped
// into buckets of about `bucket_bytes`, in REVERSE parameter order (backward produces the last layers'
// gradients first); a post-accumulate-grad hook on each parameter marks it ready, and once every parameter of
// a bucket is ready the bucket's gradients are copied into one flat buffer and an asynchronous SUM all-reduce
// starts while backward goes on. finish() starts what is left, waits for all and writes the sums back into
// param.grad().
//
// Buckets are started strictly in bucket order (bucket i only after 0..i-1), so every rank issues the same
// collectives in the same order, which c10d requires. A parameter without a gradient on this rank contributes
// zeros (another rank may have one); each bucket also sums one "has a gradient" flag per parameter, so a
// parameter that no rank gave a gradient keeps an undefined grad(), exactly as in one process.
//
// Gradient accumulation: arm(false) for the micro-steps before the last (hooks do nothing, gradients just
// accumulate locally), arm(true) for the last one. The reduction is a SUM: the trainer's loss is already
// normalised by the GLOBAL number of target tokens (train/sync_hooks.h), so the sum is the global gradient.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "hylo/train/distributed.h"

namespace hylo::train {

// Which parameters share a bucket: indices into the parameter list, each bucket in the order its parameters
// are laid out in the flat buffer. Every bucket holds one dtype and device; a bucket closes when adding the
// next parameter would pass `bucket_bytes` (a parameter larger than that gets a bucket of its own).
std::vector<std::vector<size_t>> plan_gradient_buckets(const std::vector<at::Tensor>& params, int64_t bucket_bytes);

struct GradSyncStats {
  int64_t buckets_launched_in_backward = 0;  // started from hooks, i.e. overlapped with backward
  int64_t buckets_launched_in_finish = 0;    // started only in finish()
  // Time finish() spent waiting for all-reduces (not overlapped). Gloo: real. NCCL: only with
  // HYLO_DIST_SYNC_TIMING=1 (otherwise the waits are stream-ordered and the host does not block).
  double exposed_wait_seconds = 0;
};

class GradientBuckets {
 public:
  // Registers a post-accumulate-grad hook on every parameter (leaf tensors with requires_grad).
  GradientBuckets(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params, int64_t bucket_bytes);
  // Removes the hooks.
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Before each backward: whether this backward is the last micro-step of the optimizer step (then its
  // hooks start all-reduces).
  void arm(bool sync);
  // After the last micro-step's backward: every param.grad() holds the sum over ranks. No-op when not armed.
  void finish();

  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }
  const GradSyncStats& stats() const { return stats_; }

 private:
  friend struct GradReadyHook;
  void mark_ready(size_t param_index);  // from the autograd thread
  void launch(size_t bucket);           // with mutex_ held

  std::shared_ptr<ProcessGroup> group_;
  std::vector<at::Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<size_t> bucket_of_;          // per parameter
  std::vector<at::Tensor> flat_;           // per bucket: [numel of its params] in the params' dtype
  std::vector<c10::intrusive_ptr<c10d::Work>> work_;  // per bucket, while in flight
  std::vector<int64_t> pending_;           // per bucket: parameters not yet ready
  std::vector<bool> param_ready_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  bool sync_timing_ = false;  // HYLO_DIST_SYNC_TIMING=1: make exposed_wait_seconds real on CUDA
  std::mutex mutex_;
  GradSyncStats stats_;
};

}  // namespace hylo::train
