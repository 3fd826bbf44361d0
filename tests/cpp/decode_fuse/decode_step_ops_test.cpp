// Counts what one decode step of the SmolLM2 6MLA24GDN hybrid (bench/configs/smollm2-135m.json with
// recipes/plans/smollm2-135m-6mla24gdn.yaml, random bf16 weights, batch 1) dispatches on the CPU path, with the
// packed projections on and off: GEMMs (aten::mm / addmm / bmm / baddbmm, one GPU kernel each) and leaf ATen ops
// (ops that call no other op and are not views or allocations: each is at least one kernel on a GPU). The packed
// path must drop exactly the merged projections: per block the MLP's gate/up (1), per GDN layer q, k, v, a, b, g
// (5), per MLA layer q_a/kv_a (1). (The CUDA-only fusions -- add+RMSNorm, SiLU*up, the fused GDN step -- are not on
// this path; docs/engine.md counts them.)
#include <gtest/gtest.h>

#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>

#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hylo/config/hf_config.h"
#include "hylo/config/layer_plan.h"
#include "hylo/core/result.h"
#include "hylo/core/file_util.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/packed_linear.h"

namespace hylo {
namespace {

struct Counts {
  int64_t gemms = 0, leaves = 0;
};

thread_local std::vector<bool> t_has_child;  // per open op: whether it called another op
thread_local Counts t_counts;

bool is_view_or_alloc(const std::string& n) {
  static const std::set<std::string> kNoKernel = {
      "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::narrow", "aten::slice", "aten::select",
      "aten::as_strided", "aten::unsqueeze", "aten::squeeze", "aten::t", "aten::transpose", "aten::permute",
      "aten::expand", "aten::detach", "aten::alias", "aten::empty", "aten::empty_strided", "aten::empty_like",
      "aten::split_with_sizes", "aten::split", "aten::unbind", "aten::_unsafe_view", "aten::resize_",
      "aten::lift_fresh", "aten::to", "aten::contiguous", "aten::result_type", "aten::view_as", "aten::chunk",
      "aten::expand_as", "aten::flatten", "aten::movedim", "aten::numpy_T", "aten::is_nonzero"};
  return kNoKernel.count(n) > 0;
}

Counts count_decode_step(CausalLM& model, bool packing) {
  const bool was = ops::PackedLinear::enabled();
  ops::PackedLinear::set_enabled(packing);
  c10::InferenceMode inference;
  auto state = model.new_state(1, 8);
  model.forward(at::tensor({1, 2, 3}, at::kLong).view({1, 3}), state.get());
  t_counts = {};
  t_has_child.clear();
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction&) -> std::unique_ptr<at::ObserverContext> {
            if (!t_has_child.empty()) t_has_child.back() = true;
            t_has_child.push_back(false);
            return nullptr;
          },
          [](const at::RecordFunction& fn, at::ObserverContext*) {
            const bool had_child = t_has_child.back();
            t_has_child.pop_back();
            const std::string name = fn.name();
            if (name == "aten::mm" || name == "aten::addmm" || name == "aten::bmm" || name == "aten::baddbmm")
              ++t_counts.gemms;
            if (!had_child && !is_view_or_alloc(name)) ++t_counts.leaves;
          })
          .scopes({at::RecordScope::FUNCTION}));
  model.forward(at::full({1, 1}, 4, at::kLong), state.get());
  at::removeCallback(handle);
  ops::PackedLinear::set_enabled(was);
  return t_counts;
}

TEST(DecodeStepOps, SmolLm2HybridDropsTheMergedProjections) {
  const std::string root = HYLO_SOURCE_DIR;
  auto text = read_text_file(root + "/bench/configs/smollm2-135m.json");
  ASSERT_TRUE(text.ok()) << text.error();
  ModelConfig teacher = model_config_from_hf_json(nlohmann::json::parse(*text), "smollm2-135m").value_or_throw();
  LayerPlan plan = load_layer_plan(root + "/recipes/plans/smollm2-135m-6mla24gdn.yaml").value_or_throw();
  ModelConfig config = apply_plan(teacher, plan).value_or_throw();
  int64_t gdn = 0, mla = 0;
  for (const auto& l : config.layers) gdn += l.mixer == MixerKind::kGdn, mla += l.mixer == MixerKind::kMla;
  ASSERT_EQ(gdn, 24);
  ASSERT_EQ(mla, 6);
  LoadOptions o;
  o.dtype = at::kBFloat16;
  auto model = CausalLM::random(config, /*seed=*/1, o);
  const Counts separate = count_decode_step(*model, false), packed = count_decode_step(*model, true);
  std::cout << "SmolLM2 6MLA24GDN decode step, CPU path: GEMMs " << separate.gemms << " -> " << packed.gemms
            << ", leaf ATen ops " << separate.leaves << " -> " << packed.leaves << "\n";
  const int64_t merged = config.num_layers() * 1 + gdn * 5 + mla * 1;  // 30 + 120 + 6 = 156
  EXPECT_EQ(separate.gemms - packed.gemms, merged);
  EXPECT_LT(packed.leaves, separate.leaves);
}

}  // namespace
}  // namespace hylo
