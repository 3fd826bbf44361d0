// Gradient buckets: planning, the hooks that start all-reduces during backward, and finish(). See
// distributed_grad_sync.h.
#include "hylo/train/distributed_grad_sync.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cstdlib>
#include <string>

namespace hylo::train {

std::vector<std::vector<size_t>> plan_gradient_buckets(const std::vector<at::Tensor>& params, int64_t bucket_bytes) {
  std::vector<std::vector<size_t>> buckets;
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const at::Tensor& p = params[k];
    int64_t b = p.numel() * static_cast<int64_t>(p.element_size());
    bool same_kind = !buckets.empty() && !buckets.back().empty() &&
                     params[buckets.back().front()].scalar_type() == p.scalar_type() &&
                     params[buckets.back().front()].device() == p.device();
    if (buckets.empty() || !same_kind || (bytes > 0 && bytes + b > bucket_bytes)) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(k);
    bytes += b;
  }
  return buckets;
}

// Calls back into GradientBuckets once autograd has accumulated the parameter's gradient for this backward.
struct GradReadyHook : torch::autograd::PostAccumulateGradHook {
  GradReadyHook(GradientBuckets* owner, size_t index) : owner(owner), index(index) {}
  void operator()(const torch::autograd::Variable& /*param*/) override { owner->mark_ready(index); }
  GradientBuckets* owner;
  size_t index;
};

GradientBuckets::GradientBuckets(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                                 int64_t bucket_bytes)
    : group_(std::move(group)), params_(std::move(params)) {
  buckets_ = plan_gradient_buckets(params_, bucket_bytes);
  bucket_of_.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    int64_t numel = 0;
    for (size_t i : buckets_[b]) {
      bucket_of_[i] = b;
      numel += params_[i].numel();
    }
    const at::Tensor& first = params_[buckets_[b].front()];
    // [numel of bucket b + one "has a gradient" flag per parameter]
    flat_.push_back(at::empty({numel + static_cast<int64_t>(buckets_[b].size())}, first.options().requires_grad(false)));
  }
  work_.resize(buckets_.size());
  pending_.assign(buckets_.size(), 0);
  param_ready_.assign(params_.size(), false);
  const char* timing = std::getenv("HYLO_DIST_SYNC_TIMING");
  sync_timing_ = timing != nullptr && std::string(timing) == "1";
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::autograd::impl::set_post_acc_grad_hooks(params_[i], std::make_unique<GradReadyHook>(this, i));
  }
}

GradientBuckets::~GradientBuckets() {
  for (auto& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradientBuckets::arm(bool sync) {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = sync;
  if (!sync) return;
  next_launch_ = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending_[b] = static_cast<int64_t>(buckets_[b].size());
    work_[b].reset();
  }
  std::fill(param_ready_.begin(), param_ready_.end(), false);
}

void GradientBuckets::mark_ready(size_t param_index) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || param_ready_[param_index]) return;
  param_ready_[param_index] = true;
  --pending_[bucket_of_[param_index]];
  while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) {
    launch(next_launch_++);
    ++stats_.buckets_launched_in_backward;
  }
}

void GradientBuckets::launch(size_t b) {
  at::NoGradGuard no_grad;
  at::Tensor& flat = flat_[b];
  const int64_t n = static_cast<int64_t>(buckets_[b].size());
  at::Tensor flags = flat.narrow(0, flat.numel() - n, n);
  int64_t offset = 0, k = 0;
  for (size_t i : buckets_[b]) {
    const at::Tensor& p = params_[i];
    at::Tensor slice = flat.narrow(0, offset, p.numel());
    bool has = p.grad().defined();
    if (has) {
      slice.copy_(p.grad().reshape({-1}));
    } else {
      slice.zero_();
    }
    flags[k++].fill_(has ? 1 : 0);
    offset += p.numel();
  }
  work_[b] = group_->all_reduce_sum_async(flat);
}

void GradientBuckets::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  while (next_launch_ < buckets_.size()) {
    launch(next_launch_++);
    ++stats_.buckets_launched_in_finish;
  }
  auto t0 = std::chrono::steady_clock::now();
  for (size_t b = 0; b < buckets_.size(); ++b) {
    group_->wait(work_[b], "all-reduce of gradient bucket " + std::to_string(b) + " of " +
                               std::to_string(buckets_.size()));
    work_[b].reset();
  }
  // On CUDA the waits above only order streams; with HYLO_DIST_SYNC_TIMING=1 the host also waits for the
  // reduced values (a one-element copy), so exposed_wait_seconds is the real exposed time (costs a sync).
  if (sync_timing_ && !flat_.empty() && flat_.back().is_cuda()) (void)flat_.back().narrow(0, 0, 1).cpu();
  stats_.exposed_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  at::NoGradGuard no_grad;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t n = static_cast<int64_t>(buckets_[b].size());
    at::Tensor flags = flat_[b].narrow(0, flat_[b].numel() - n, n).to(at::kCPU);  // ranks that had a gradient
    int64_t offset = 0, k = 0;
    for (size_t i : buckets_[b]) {
      at::Tensor& p = params_[i];
      at::Tensor slice = flat_[b].narrow(0, offset, p.numel()).view(p.sizes());
      if (flags[k++].item<double>() == 0) {
        // No rank had a gradient: leave it undefined, as one process would (AdamW skips such parameters).
        p.mutable_grad() = at::Tensor();
      } else if (p.grad().defined()) {
        p.mutable_grad().copy_(slice);
      } else {
        p.mutable_grad() = slice.clone();
      }
      offset += p.numel();
    }
  }
  armed_ = false;
}

}  // namespace hylo::train
