// hylo_testops ops for the Mamba2 SSD oracle test (tests/oracles/test_mamba2_ssd.py):
//
//   ssd_chunk      inputs: x [B,T,H,P], dt [B,T,H], A [H], B [B,T,G,N], C [B,T,Gc,N], and optionally D [H],
//                  initial_state [B,H,P,N]; with wy [B,T,H,P] and ws [B,H,P,N] also the gradients of
//                  sum(y*wy) + sum(final_state*ws) with respect to every input given (grad_<name>).
//                  Parameter: chunk_size (default 256).       -> y, final_state[, grad_*]
//   ssd_naive      the same inputs and outputs, token by token
//   ssd_recurrent  one token: x [B,H,P], dt [B,H], A, B [B,G,N], C [B,Gc,N], optionally D and state
//                  -> y [B,H,P], final_state (the updated state)
// The computation runs in the dtype of x (fp32 compute for bf16/fp16, as the ops document).
#include <string>
#include <vector>

#include "hylo/ops/ssd.h"
#include "testops.h"

namespace hylo::testops {
namespace {

at::Tensor optional_input(const TensorMap& in, const std::string& name) {
  auto it = in.find(name);
  return it == in.end() ? at::Tensor() : it->second;
}

enum class Form { kChunk, kNaive, kRecurrent };

TensorMap run_ssd(const TensorMap& in, const Params& p, Form form) {
  const std::vector<std::string> names = {"x", "dt", "A", "B", "C", "D",
                                          form == Form::kRecurrent ? "state" : "initial_state"};
  const bool want_grads = in.count("wy") > 0;
  std::vector<at::Tensor> args;  // leaves in the order of `names`; undefined where absent
  for (const auto& n : names) {
    at::Tensor t = n == "D" || n == "initial_state" || n == "state" ? optional_input(in, n) : input(in, n);
    if (t.defined() && want_grads) t = t.detach().clone().set_requires_grad(true);
    args.push_back(t);
  }
  SsdOutput out;
  switch (form) {
    case Form::kChunk:
      out = ssd_chunk(args[0], args[1], args[2], args[3], args[4], args[5], args[6], param_int(p, "chunk_size", 256));
      break;
    case Form::kNaive:
      out = ssd_naive(args[0], args[1], args[2], args[3], args[4], args[5], args[6]);
      break;
    case Form::kRecurrent:
      out = ssd_recurrent(args[0], args[1], args[2], args[3], args[4], args[5], args[6]);
      break;
  }
  TensorMap res = {{"y", out.y.detach()}, {"final_state", out.final_state.detach()}};
  if (want_grads) {
    const at::Tensor& wy = input(in, "wy");
    at::Tensor loss = (out.y.to(wy.scalar_type()) * wy).sum();
    if (in.count("ws")) loss = loss + (out.final_state.to(wy.scalar_type()) * in.at("ws")).sum();
    loss.backward();
    for (size_t i = 0; i < names.size(); ++i)
      if (args[i].defined()) res["grad_" + names[i]] = args[i].grad();
  }
  return res;
}

const OpRegistrar reg_chunk("ssd_chunk", [](const TensorMap& in, const Params& p) {
  return run_ssd(in, p, Form::kChunk);
});
const OpRegistrar reg_naive("ssd_naive", [](const TensorMap& in, const Params& p) {
  return run_ssd(in, p, Form::kNaive);
});
const OpRegistrar reg_recurrent("ssd_recurrent", [](const TensorMap& in, const Params& p) {
  return run_ssd(in, p, Form::kRecurrent);
});

}  // namespace
}  // namespace hylo::testops
