// hylo_testops ops for the Gated DeltaNet oracle tests (tests/oracles/test_gdn_fla.py):
//   gdn_rule  : forms of the gated delta rule (forms=naive,chunk,recurrent; chunk_size) with scale Dk^-1/2 and
//               their backward for given upstream gradients. Inputs q, k, v, g, beta, [h0 [B,H,Dv,Dk]], do, dht.
//               Outputs <form>.o, <form>.ht and <form>.grad.<input> for every input.
//   gdn_layer : the kGdn mixer, stateless forward and backward. Inputs x [B,T,D], dy [B,T,D] and the layer's
//               parameters under FLA's names (q_proj.weight, ..., o_proj.weight). Params norm_eps, chunk_size.
//               Outputs y and grad.x, grad.<parameter> for every parameter; with prefill=P also y_decode, the
//               outputs of a stateful P-token prefill followed by one-token decode steps.
// Everything runs in the dtype of the inputs.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/model/mixer.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "hylo/ops/gated_delta.h"
#include "testops.h"

namespace hylo::testops {
namespace {

// One form with its backward; outputs named "<form>.o", "<form>.grad.q", ...
void run_rule_form(const TensorMap& in, const std::string& form, int64_t chunk, TensorMap& out) {
  at::Tensor q = input(in, "q").clone().requires_grad_();        // [B, T, H, Dk]
  at::Tensor k = input(in, "k").clone().requires_grad_();        // [B, T, H, Dk]
  at::Tensor v = input(in, "v").clone().requires_grad_();        // [B, T, H, Dv]
  at::Tensor g = input(in, "g").clone().requires_grad_();        // [B, T, H]
  at::Tensor beta = input(in, "beta").clone().requires_grad_();  // [B, T, H]
  at::Tensor h0 = in.count("h0") ? input(in, "h0").clone().requires_grad_() : at::Tensor();  // [B, H, Dv, Dk]
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  GatedDeltaOutput r;
  if (form == "naive") r = gated_delta_naive(q, k, v, g, beta, scale, h0);
  else if (form == "chunk") r = gated_delta_chunk(q, k, v, g, beta, scale, h0, chunk);
  else if (form == "recurrent") r = gated_delta_recurrent(q, k, v, g, beta, scale, h0);
  else throw Error("gdn_rule: a form must be naive, chunk or recurrent, got '" + form + "'");
  ((r.o * input(in, "do")).sum() + (r.final_state * input(in, "dht")).sum()).backward();
  const std::string p = form + ".";
  out[p + "o"] = r.o;
  out[p + "ht"] = r.final_state;
  out[p + "grad.q"] = q.grad();
  out[p + "grad.k"] = k.grad();
  out[p + "grad.v"] = v.grad();
  out[p + "grad.g"] = g.grad();
  out[p + "grad.beta"] = beta.grad();
  if (h0.defined()) out[p + "grad.h0"] = h0.grad();
}

// forms: a comma-separated list (one process start for several forms).
TensorMap gdn_rule(const TensorMap& in, const Params& p) {
  const std::string forms = param_str(p, "forms", "chunk");
  const int64_t chunk = param_int(p, "chunk_size", 64);
  TensorMap out;
  size_t start = 0;
  while (start <= forms.size()) {
    const size_t comma = forms.find(',', start);
    const size_t end = comma == std::string::npos ? forms.size() : comma;
    run_rule_form(in, forms.substr(start, end - start), chunk, out);
    start = end + 1;
  }
  return out;
}

TensorMap gdn_layer(const TensorMap& in, const Params& p) {
  at::Tensor x = input(in, "x").clone().requires_grad_();  // [B, T, D]
  const at::Tensor& a_log = input(in, "A_log");            // [H]
  const at::Tensor& q_w = input(in, "q_proj.weight");      // [H*Dk, D]
  const at::Tensor& norm_w = input(in, "o_norm.weight");   // [Dv]
  ModelConfig config;
  config.hidden_size = x.size(2);
  LayerSpec layer;
  layer.mixer = MixerKind::kGdn;
  layer.gdn.num_heads = a_log.size(0);
  layer.gdn.head_k_dim = q_w.size(0) / a_log.size(0);
  layer.gdn.head_v_dim = norm_w.size(0);
  layer.gdn.conv_size = input(in, "q_conv1d.weight").size(2);
  layer.gdn.norm_eps = param_double(p, "norm_eps", 1e-5);
  config.layers.push_back(layer);
  std::unique_ptr<Mixer> mixer = make_mixer(config, layer, x.options());
  dynamic_cast<GatedDeltaNetMixer&>(*mixer).set_chunk_size(param_int(p, "chunk_size", 64));
  const std::string prefix = "gdn.";
  std::map<std::string, at::Tensor> params;
  mixer->visit_parameters("", [&](const std::string& name, at::Tensor& t) {
    const std::string fla_name = name.substr(prefix.size());
    const at::Tensor& src = input(in, fla_name);
    if (!src.sizes().equals(t.sizes()))
      throw Error("gdn_layer: parameter '" + fla_name + "' has shape " + c10::str(src.sizes()) + ", the mixer expects " +
                  c10::str(t.sizes()));
    t = src.to(x.scalar_type()).clone().requires_grad_();
    params[fla_name] = t;
  });
  at::Tensor y = mixer->forward(x, at::arange(x.size(1), at::kLong), nullptr);  // [B, T, D]
  (y * input(in, "dy")).sum().backward();
  TensorMap out = {{"y", y}, {"grad.x", x.grad()}};
  for (auto& [name, t] : params) out["grad." + name] = t.grad();
  // prefill=P: also the inference path, a P-token prefill with a state and then one-token decode steps.
  const int64_t prefill = param_int(p, "prefill", 0);
  if (prefill > 0) {
    const int64_t T = x.size(1);
    if (prefill > T) throw Error("gdn_layer: prefill=" + std::to_string(prefill) + " exceeds T=" + std::to_string(T));
    at::Tensor xd = x.detach();
    std::unique_ptr<MixerState> st = mixer->new_state(x.size(0), T, x.options());
    std::vector<at::Tensor> ys = {mixer->forward(xd.narrow(1, 0, prefill), at::arange(prefill, at::kLong), st.get())};
    for (int64_t t = prefill; t < T; ++t)
      ys.push_back(mixer->forward(xd.narrow(1, t, 1), at::arange(t, t + 1, at::kLong), st.get()));
    out["y_decode"] = at::cat(ys, 1).detach();
  }
  return out;
}

const OpRegistrar reg_rule("gdn_rule", gdn_rule);
const OpRegistrar reg_layer("gdn_layer", gdn_layer);

}  // namespace
}  // namespace hylo::testops
