// hylo_testops ops for the Mamba2 SSD oracle test (tests/oracles/test_mamba2_ssd.py):
//
//   ssd_chunk      inputs: x [B,T,H,P], dt [B,T,H], A [H], B [B,T,G,N], C [B,T,Gc,N], and optionally D [H],
//                  initial_state [B,H,P,N]; with wy [B,T,H,P] and ws [B,H,P,N] also the gradients of
//                  sum(y*wy) + sum(final_state*ws) with respect to every input given (grad_<name>).
//                  Parameter: chunk_size (default 256).       -> y, final_state[, grad_*]
//   ssd_naive      the same inputs and outputs, token by token
//   ssd_recurrent  one token: x [B,H,P], dt [B,H], A, B [B,G,N], C [B,Gc,N], optionally D and state
//                  -> y [B,H,P], final_state (the updated state)
//   mamba2_mixer   inputs: x [B, T, D] and the mixer's parameters by their names without layer prefix
//                  ("mamba.in_proj.weight", ...). Parameters: heads, d_state, d_xb, conv (4), chunk (256),
//                  norm_group (0 = d_inner/heads), repeat_before_conv (0/1), eps (1e-5), and prefill: 0 runs
//                  one stateless forward; k > 0 prefills the first k tokens into a state and decodes the rest
//                  one token at a time.                      -> y [B, T, D]
// The computation runs in the dtype of x (fp32 compute for bf16/fp16, as the ops document).
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/model/mixer.h"
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

TensorMap run_mixer(const TensorMap& in, const Params& p) {
  const at::Tensor& x = input(in, "x");  // [B, T, D]
  ModelConfig config;
  config.hidden_size = x.size(2);
  LayerSpec layer;
  layer.mixer = MixerKind::kMamba2;
  Mamba2Spec& m = layer.mamba2;
  m.n_heads = param_int(p, "heads", 0);
  m.d_state = param_int(p, "d_state", 0);
  m.head_dim = m.d_state;
  m.d_inner = m.n_heads * m.d_state;
  m.d_xb = param_int(p, "d_xb", 0);
  m.conv_size = param_int(p, "conv", 4);
  m.chunk_size = param_int(p, "chunk", 256);
  m.norm_group_size = param_int(p, "norm_group", 0);
  m.repeat_kv_before_conv = param_int(p, "repeat_before_conv", 0) != 0;
  m.norm_eps = param_double(p, "eps", 1e-5);
  config.layers.push_back(layer);
  auto opts = x.options();
  auto mixer = make_mixer(config, layer, opts);
  mixer->visit_parameters("", [&](const std::string& name, at::Tensor& t) {
    const at::Tensor& v = input(in, name);
    if (v.numel() != t.numel()) throw Error("mamba2_mixer: input '" + name + "' has the wrong number of elements");
    t = v.reshape(t.sizes()).to(opts);
  });
  const int64_t T = x.size(1), prefill = param_int(p, "prefill", 0);
  if (prefill <= 0) return {{"y", mixer->forward(x, at::arange(T), nullptr)}};
  if (prefill > T) throw Error("mamba2_mixer: prefill exceeds the sequence length");
  auto state = mixer->new_state(x.size(0), T, opts);
  std::vector<at::Tensor> ys{mixer->forward(x.narrow(1, 0, prefill), at::arange(prefill), state.get())};
  for (int64_t t = prefill; t < T; ++t) ys.push_back(mixer->forward(x.narrow(1, t, 1), at::arange(t, t + 1), state.get()));
  return {{"y", at::cat(ys, 1)}};
}

const OpRegistrar reg_mixer("mamba2_mixer", run_mixer);

}  // namespace
}  // namespace hylo::testops
