// ZeRO-1 ownership and the owners' broadcast of updated parameters. See distributed_zero.h.
#include "hylo/train/distributed_zero.h"

#include <algorithm>
#include <deque>
#include <numeric>

namespace hylo::train {

std::vector<int> assign_parameter_owners(const std::vector<int64_t>& numels, int world) {
  std::vector<size_t> order(numels.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(numels.size(), 0);
  for (size_t i : order) {
    int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += numels[i];
  }
  return owner;
}

OwnedParameterBroadcast::OwnedParameterBroadcast(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                                                 std::vector<int> owner, int64_t chunk_bytes)
    : group_(std::move(group)), params_(std::move(params)), owner_(std::move(owner)) {
  for (int r = 0; r < group_->world(); ++r) {
    Chunk cur{r, {}, 0};
    for (size_t i = 0; i < params_.size(); ++i) {
      if (owner_[i] != r) continue;
      const at::Tensor& p = params_[i];
      bool same_kind = cur.params.empty() || (params_[cur.params.front()].scalar_type() == p.scalar_type() &&
                                              params_[cur.params.front()].device() == p.device());
      int64_t bytes = cur.numel * static_cast<int64_t>(p.element_size());
      if (!cur.params.empty() && (!same_kind || bytes + p.numel() * p.element_size() > chunk_bytes)) {
        chunks_.push_back(std::move(cur));
        cur = Chunk{r, {}, 0};
      }
      cur.params.push_back(i);
      cur.numel += p.numel();
    }
    if (!cur.params.empty()) chunks_.push_back(std::move(cur));
  }
}

void OwnedParameterBroadcast::run(const std::string& what) {
  at::NoGradGuard no_grad;
  struct InFlight {
    size_t chunk;
    at::Tensor flat;  // [chunk numel]
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::deque<InFlight> in_flight;
  auto complete = [&](InFlight& f) {
    const Chunk& c = chunks_[f.chunk];
    group_->wait(f.work, what + " (broadcast of rank " + std::to_string(c.owner) + "'s parameters, chunk " +
                             std::to_string(f.chunk) + " of " + std::to_string(chunks_.size()) + ")");
    if (c.owner == group_->rank()) return;  // the owner's parameters are the source
    int64_t offset = 0;
    for (size_t i : c.params) {
      at::Tensor p = params_[i].detach();
      p.copy_(f.flat.narrow(0, offset, p.numel()).view(p.sizes()));
      offset += p.numel();
    }
  };
  for (size_t k = 0; k < chunks_.size(); ++k) {
    const Chunk& c = chunks_[k];
    const at::Tensor& first = params_[c.params.front()];
    at::Tensor flat = at::empty({c.numel}, first.options().requires_grad(false));
    if (c.owner == group_->rank()) {
      int64_t offset = 0;
      for (size_t i : c.params) {
        flat.narrow(0, offset, params_[i].numel()).copy_(params_[i].detach().reshape({-1}));
        offset += params_[i].numel();
      }
    }
    in_flight.push_back({k, flat, group_->broadcast_async(flat, c.owner)});
    if (in_flight.size() > 2) {
      complete(in_flight.front());
      in_flight.pop_front();
    }
  }
  while (!in_flight.empty()) {
    complete(in_flight.front());
    in_flight.pop_front();
  }
}

}  // namespace hylo::train
