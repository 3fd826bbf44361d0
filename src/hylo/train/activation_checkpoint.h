// Activation checkpointing per block: the forward keeps only the block's input; the backward reruns the block
// under grad mode (and under the autocast setting the forward had) and backpropagates through the rerun. This is
// the reentrant form of torch.utils.checkpoint: the parameters' gradients accumulate into their .grad during the
// inner backward, so it serves Tensor::backward() (what the trainer calls), not torch::autograd::grad.
// The block must be deterministic (our blocks are: no dropout).
#pragma once

#include <ATen/ATen.h>

#include <functional>

namespace hylo::train {

using BlockFn = std::function<at::Tensor(const at::Tensor&)>;

// y = fn(x) with x [B, T, D]. x must require grad (callers make the first block's input require grad when the
// embedding is frozen), otherwise nothing upstream would call the backward.
at::Tensor checkpointed_block(const BlockFn& fn, const at::Tensor& x);

}  // namespace hylo::train
