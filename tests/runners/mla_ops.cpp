// hylo_testops ops for the MLA oracle tests (tests/oracles/test_mla_deepseek.py):
//
//   mla_rope_tables  inputs: positions [T] int64            -> cos, sin [T, Dr] (fp64, or dtype=fp32)
//   mla_mixer        inputs: x [B, T, D], positions [T] int64, and the mixer's parameters by their names
//                    without layer prefix ("mla.q_a_proj.weight", ...)  -> y [B, T, D] (or y.0, y.1, .. with
//                    `runs`), and the fp64 rope tables cos, sin [T, Dr] it used
//
// Parameters (key=value): hidden, heads, q_lora_rank, kv_lora_rank, nope, rope, v, groups, latent_norms (0/1),
// bias (0/1), rope_type (default|yarn), theta, factor, original_max_pos, beta_fast, beta_slow, mscale,
// mscale_all_dim, truncate (0/1), pair_order (deepseek|half), form (auto|decompressed|absorbed), and prefill:
// 0 runs one stateless forward; k > 0 prefills the first k tokens into a latent cache and then decodes the rest
// one token at a time (the absorbed form unless `form` says otherwise). runs=DTYPE:PREFILL:FORM;... does several
// such runs (weights and x cast to DTYPE) in one process.
#include <set>
#include <string>

#include "hylo/core/result.h"
#include "hylo/model/mixers/mla.h"
#include "hylo/ops/rope_yarn.h"
#include "hylo/ops/tensor_util.h"
#include "testops.h"

namespace hylo::testops {
namespace {

RopeConfig rope_from(const Params& p) {
  RopeConfig r;
  r.type = param_str(p, "rope_type", "default");
  r.theta = param_double(p, "theta", 10000.0);
  r.factor = param_double(p, "factor", 1.0);
  r.original_max_position_embeddings = param_int(p, "original_max_pos", 0);
  r.beta_fast = param_double(p, "beta_fast", 32.0);
  r.beta_slow = param_double(p, "beta_slow", 1.0);
  r.mscale = param_double(p, "mscale", 1.0);
  r.mscale_all_dim = param_double(p, "mscale_all_dim", 0.0);
  r.truncate = param_int(p, "truncate", 1) != 0;
  return r;
}

ops::RopePairOrder order_from(const Params& p) {
  const std::string o = param_str(p, "pair_order", "deepseek");
  if (o == "deepseek") return ops::RopePairOrder::kDeepSeekPairs;
  if (o == "half") return ops::RopePairOrder::kHalfSplit;
  throw Error("mla ops: pair_order must be deepseek or half, got '" + o + "'");
}

TensorMap rope_tables(const TensorMap& in, const Params& p) {
  const at::Tensor& pos = input(in, "positions");
  at::ScalarType dtype = parse_scalar_type(param_str(p, "dtype", "fp64"));
  ops::RotaryTables t = ops::mla_rope_tables(rope_from(p), param_int(p, "rope", 0), pos, dtype, at::kCPU);
  return {{"cos", t.cos}, {"sin", t.sin}};
}

// One run of the mixer: in `dtype`, stateless (prefill == 0) or prefill + one-token decode steps, in `form`.
at::Tensor run_mixer(const ModelConfig& config, const LayerSpec& layer, const TensorMap& in, const Params& p,
                     at::ScalarType dtype, int64_t prefill, const std::string& form) {
  at::Tensor x = input(in, "x").to(dtype);       // [B, T, D]
  const at::Tensor& pos = input(in, "positions");  // [T]
  MlaMixer m(config, layer, at::TensorOptions().dtype(dtype));
  std::set<std::string> missing;
  m.visit_parameters("", [&](const std::string& name, at::Tensor& t) {
    auto it = in.find(name);
    if (it == in.end()) {
      missing.insert(name);
      return;
    }
    if (it->second.sizes() != t.sizes())
      throw Error("mla ops: input '" + name + "' has shape " + c10::str(it->second.sizes()) + ", the mixer expects " +
                  c10::str(t.sizes()));
    t.copy_(it->second);
  });
  if (!missing.empty()) throw Error("mla ops: missing parameter input '" + *missing.begin() + "'");
  m.set_rope_pair_order(order_from(p));
  if (form == "decompressed") m.set_form(MlaForm::kDecompressed);
  else if (form == "absorbed") m.set_form(MlaForm::kAbsorbed);
  else if (form != "auto") throw Error("mla ops: form must be auto, decompressed or absorbed, got '" + form + "'");

  const int64_t t = x.size(1);
  if (prefill <= 0) return m.forward(x, pos, nullptr);
  if (prefill > t) throw Error("mla ops: prefill " + std::to_string(prefill) + " exceeds T " + std::to_string(t));
  auto state = m.new_state(x.size(0), t, at::TensorOptions().dtype(dtype));
  std::vector<at::Tensor> outs{m.forward(x.narrow(1, 0, prefill), pos.narrow(0, 0, prefill), state.get())};
  for (int64_t i = prefill; i < t; ++i) outs.push_back(m.forward(x.narrow(1, i, 1), pos.narrow(0, i, 1), state.get()));
  return at::cat(outs, 1);
}

TensorMap mixer(const TensorMap& in, const Params& p) {
  const at::Tensor& x = input(in, "x");
  ModelConfig config;
  config.hidden_size = param_int(p, "hidden", x.size(2));
  LayerSpec layer;
  layer.mixer = MixerKind::kMla;
  MlaSpec& s = layer.mla;
  s.num_heads = param_int(p, "heads", 0);
  s.q_lora_rank = param_int(p, "q_lora_rank", 0);
  s.kv_lora_rank = param_int(p, "kv_lora_rank", 0);
  s.qk_nope_head_dim = param_int(p, "nope", 0);
  s.qk_rope_head_dim = param_int(p, "rope", 0);
  s.v_head_dim = param_int(p, "v", 0);
  s.num_kv_groups = param_int(p, "groups", s.num_heads);
  s.latent_norms = param_int(p, "latent_norms", 0) != 0;
  s.bias = param_int(p, "bias", 0) != 0;
  s.rope = rope_from(p);
  config.layers.push_back(layer);

  TensorMap out;
  ops::RotaryTables tables = ops::mla_rope_tables(s.rope, s.qk_rope_head_dim, input(in, "positions"), at::kDouble,
                                                  at::kCPU);
  out["cos"] = tables.cos;
  out["sin"] = tables.sin;
  // runs: ';'-separated DTYPE:PREFILL:FORM triples, each giving output "y.<index>" (one process, many runs:
  // loading libtorch dominates the oracle's time).
  const std::string runs = param_str(p, "runs", "");
  if (runs.empty()) {
    out["y"] = run_mixer(config, layer, in, p, x.scalar_type(), param_int(p, "prefill", 0),
                         param_str(p, "form", "auto"));
    return out;
  }
  size_t start = 0;
  for (int index = 0; start <= runs.size(); ++index) {
    size_t end = runs.find(';', start);
    if (end == std::string::npos) end = runs.size();
    const std::string run = runs.substr(start, end - start);
    const size_t c1 = run.find(':'), c2 = run.find(':', c1 == std::string::npos ? c1 : c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos)
      throw Error("mla ops: run '" + run + "' is not DTYPE:PREFILL:FORM");
    out["y." + std::to_string(index)] =
        run_mixer(config, layer, in, p, parse_scalar_type(run.substr(0, c1)),
                  std::stoll(run.substr(c1 + 1, c2 - c1 - 1)), run.substr(c2 + 1));
    start = end + 1;
  }
  return out;
}

const OpRegistrar reg_tables("mla_rope_tables", rope_tables);
const OpRegistrar reg_mixer("mla_mixer", mixer);

}  // namespace
}  // namespace hylo::testops
