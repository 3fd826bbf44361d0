#include "hylo/train/activation_checkpoint.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "hylo/core/result.h"
#include "hylo/train/precision.h"

namespace hylo::train {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct BlockHolder : torch::CustomClassHolder {
  BlockFn fn;
  at::ScalarType autocast_dtype = at::kFloat;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::intrusive_ptr<BlockHolder> holder) {
    at::Tensor y;
    {
      c10::NoGradGuard no_grad;  // nothing of the block's graph is kept
      y = holder->fn(x);
    }
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = c10::IValue::make_capsule(holder);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto holder = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      c10::AutoGradMode grad_on(true);
      AutocastScope autocast(x.device().type(), holder->autocast_dtype);  // the backward thread has its own state
      y = holder->fn(x);
    }
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed_block(const BlockFn& fn, const at::Tensor& x) {
  if (!x.requires_grad()) throw Error("checkpointed_block: the block input must require grad");
  auto holder = c10::make_intrusive<BlockHolder>();
  holder->fn = fn;
  holder->autocast_dtype = current_autocast_dtype(x.device().type());
  return CheckpointFunction::apply(x, holder);
}

}  // namespace hylo::train
