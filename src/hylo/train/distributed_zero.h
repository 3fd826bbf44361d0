// ZeRO-1: optimizer state sharded across ranks. Each parameter is owned by exactly one rank, which alone
// keeps its AdamW moments and updates it; after the optimizer step the owners broadcast their updated
// parameters so every rank again holds the whole model. Gradients stay whole on every rank (the all-reduce of
// distributed_grad_sync.h), so the global gradient-norm clip sees the same numbers everywhere.
//
// Ownership is by whole parameter, balanced by element count (longest-processing-time greedy): a pure
// function of the shapes and the world size, so every rank computes the same map without communicating, and a
// run resumed with another number of ranks simply recomputes it (optimizer state is saved per parameter by
// name, so any rank can load the state of any parameter).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "hylo/train/distributed.h"

namespace hylo::train {

// owner[i] in [0, world) for each parameter: parameters in decreasing numel (ties: lower index first) go to
// the rank with the fewest elements so far (ties: lower rank).
std::vector<int> assign_parameter_owners(const std::vector<int64_t>& numels, int world);

class OwnedParameterBroadcast {
 public:
  // Plans chunks of at most ~`chunk_bytes` per (owner, dtype) in parameter order.
  OwnedParameterBroadcast(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                          std::vector<int> owner, int64_t chunk_bytes);
  // Every rank: each parameter takes its owner's value. At most two chunks are in flight at once, so the
  // extra memory is two chunks, not a copy of the model.
  void run(const std::string& what);

 private:
  std::shared_ptr<ProcessGroup> group_;
  std::vector<at::Tensor> params_;
  std::vector<int> owner_;
  struct Chunk {
    int owner;
    std::vector<size_t> params;
    int64_t numel;
  };
  std::vector<Chunk> chunks_;
};

}  // namespace hylo::train
