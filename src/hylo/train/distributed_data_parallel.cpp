// DataParallel: SyncHooks over a c10d process group. See distributed_data_parallel.h.
#include "hylo/train/distributed_data_parallel.h"

namespace hylo::train {

DataParallel::DataParallel(std::shared_ptr<ProcessGroup> group, DataParallelOptions options)
    : group_(std::move(group)), options_(options) {}

DataParallel::~DataParallel() { detach(); }

void DataParallel::attach(const std::vector<NamedParam>& params) {
  detach();
  std::vector<int64_t> numels;
  for (const auto& p : params) {
    if (!p.tensor.requires_grad() || !p.tensor.is_leaf()) {
      throw Error("data parallel: parameter '" + p.name + "' must be a leaf tensor with requires_grad");
    }
    params_.push_back(p.tensor);
    numels.push_back(p.tensor.numel());
  }
  if (options_.broadcast_at_attach && world() > 1) {
    std::vector<int> from_rank0(params_.size(), 0);
    OwnedParameterBroadcast(group_, params_, from_rank0, options_.bucket_bytes).run("initial parameter broadcast");
  }
  grads_ = std::make_unique<GradientBuckets>(group_, params_, options_.bucket_bytes);
  if (options_.zero1) {
    owner_ = assign_parameter_owners(numels, world());
    zero_ = std::make_unique<OwnedParameterBroadcast>(group_, params_, owner_, options_.bucket_bytes);
  }
}

GradSyncStats DataParallel::grad_stats() const {
  GradSyncStats s = detached_stats_;
  if (grads_) {
    s.buckets_launched_in_backward += grads_->stats().buckets_launched_in_backward;
    s.buckets_launched_in_finish += grads_->stats().buckets_launched_in_finish;
    s.exposed_wait_seconds += grads_->stats().exposed_wait_seconds;
  }
  return s;
}

void DataParallel::detach() {
  detached_stats_ = grad_stats();
  grads_.reset();
  zero_.reset();
  params_.clear();
  owner_.clear();
}

std::vector<bool> DataParallel::owned(const std::vector<NamedParam>& params) const {
  if (!options_.zero1) return std::vector<bool>(params.size(), true);
  std::vector<int> owner = owner_;
  if (owner.size() != params.size()) {  // asked before attach(): the same pure function of the shapes
    std::vector<int64_t> numels;
    for (const auto& p : params) numels.push_back(p.tensor.numel());
    owner = assign_parameter_owners(numels, world());
  }
  std::vector<bool> mine(params.size());
  for (size_t i = 0; i < params.size(); ++i) mine[i] = owner[i] == rank();
  return mine;
}

void DataParallel::before_backward(int micro_step, bool last_micro_step) {
  (void)micro_step;
  if (!grads_) throw Error("data parallel: before_backward() before attach()");
  grads_->arm(last_micro_step);
}

void DataParallel::after_backward() {
  if (grads_) grads_->finish();
}

void DataParallel::after_step() {
  ++steps_;
  if (zero_) zero_->run("step " + std::to_string(steps_) + " parameter update");
}

void DataParallel::all_reduce_sum(at::Tensor& values) {
  // NCCL reduces device tensors only; metrics are small CPU tensors.
  at::Tensor t = group_->device().is_cuda() ? values.to(group_->device()) : values;
  group_->all_reduce_sum(t, "all-reduce of training metrics");
  if (!t.is_same(values)) values.copy_(t);
}

void DataParallel::barrier() { group_->barrier("barrier"); }

Result<RankSetup> data_parallel_from_environment(at::Device requested, DataParallelOptions options) {
  HYLO_TRY(DistEnv env, dist_env_from_environment());
  RankSetup setup;
  setup.device = requested;
  if (env.world <= 1 && !group_of_one_requested()) return setup;
  HYLO_TRY(auto timeout, dist_timeout_from_environment());
  if (requested.is_cuda()) {
    if (requested.has_index() && requested.index() != env.local_rank) {
      return make_error("--device " + requested.str() + " conflicts with LOCAL_RANK=" + std::to_string(env.local_rank) +
                        ": with several ranks each uses cuda:LOCAL_RANK (pass --device cuda)");
    }
    setup.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  }
  HYLO_TRY(auto group, ProcessGroup::create(env, setup.device, timeout));
  setup.hooks = std::make_unique<DataParallel>(std::move(group), options);
  return setup;
}

}  // namespace hylo::train
