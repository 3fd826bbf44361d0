// MemoryPlan arithmetic (CachePools::plan): bytes per page and per slot from the layer dims (MLA Rkv + Dr and GQA
// 2 * Hkv * Dh per token in the model dtype; GDN / Mamba2 conv state in the model dtype plus the recurrent state
// in state_dtype), the budget split (slots first, then whole pages), errors that name the numbers, the derived
// activation reserve, and the option checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <string>

#include "hylo/core/result.h"
#include "hylo/infer/engine/activation_reserve.h"
#include "pools_test_util.h"

namespace hylo::engine {
namespace {

using test::mixed_config;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The dims of the test layers (pools_test_util.h), spelled out once here so the expected sizes below read as
// formulas of the config.
struct Dims {
  int64_t gqa_kv_elems, mla_elems;          // per token
  int64_t gdn_conv, gdn_rec, m2_conv, m2_rec;  // per sequence (elements)
};

Dims dims_of(const ModelConfig& c) {
  const GqaSpec& g = c.layers[0].gqa;
  const MlaSpec& m = c.layers[1].mla;
  const GdnSpec& d = c.layers[2].gdn;
  const Mamba2Spec& s = c.layers[3].mamba2;
  return {2 * g.num_kv_heads * g.head_dim,
          m.kv_lora_rank + m.qk_rope_head_dim,
          (2 * d.num_heads * d.head_k_dim + d.num_heads * d.head_v_dim) * (d.conv_size - 1),
          d.num_heads * d.head_v_dim * d.head_k_dim,
          (s.d_inner + 2 * s.d_xb) * (s.conv_size - 1),
          s.n_heads * s.head_dim * s.d_state};
}

EngineOptions small_options() {
  EngineOptions o;
  o.page_size = 16;
  o.prefill_chunk = 32;
  o.max_sequences = 4;
  o.max_step_tokens = 64;
  o.prefix_snapshots = 2;
  o.memory_bytes = 1 << 20;
  return o;
}

TEST(MemoryPlan, BytesPerPageAndSlotFollowTheLayerDims) {
  const ModelConfig c = mixed_config();
  const Dims d = dims_of(c);
  for (at::ScalarType model_dtype : {at::kFloat, at::kBFloat16}) {
    LoadOptions lo;
    lo.dtype = model_dtype;
    auto model = CausalLM::random(c, 1, lo);
    const int64_t e = model_dtype == at::kFloat ? 4 : 2;
    for (at::ScalarType state_dtype : {at::kFloat, at::kBFloat16}) {
      EngineOptions o = small_options();
      o.state_dtype = state_dtype;
      const int64_t s = state_dtype == at::kFloat ? 4 : 2;
      const MemoryPlan p = CachePools::plan(*model, o);
      const std::string what = std::string(at::toString(model_dtype)) + " model, " + at::toString(state_dtype);
      EXPECT_EQ(p.bytes_per_token, e * (d.gqa_kv_elems + d.mla_elems)) << what;
      EXPECT_EQ(p.bytes_per_page, 16 * p.bytes_per_token) << what;
      EXPECT_EQ(p.bytes_per_slot, e * (d.gdn_conv + d.m2_conv) + s * (d.gdn_rec + d.m2_rec)) << what;
      // Budget split: all 6 slots first, then as many whole pages as fit.
      EXPECT_EQ(p.num_slots, 4 + 2) << what;
      EXPECT_EQ(p.budget_bytes, 1 << 20) << what;
      EXPECT_EQ(p.num_pages, ((1 << 20) - 6 * p.bytes_per_slot) / p.bytes_per_page) << what;
      EXPECT_EQ(p.pool_bytes, p.num_pages * p.bytes_per_page + 6 * p.bytes_per_slot) << what;
      EXPECT_LE(p.pool_bytes, p.budget_bytes) << what;
      EXPECT_GT(p.pool_bytes + p.bytes_per_page, p.budget_bytes) << what << ": a further page would have fit";
      EXPECT_EQ(p.max_tokens_per_sequence, p.num_pages * 16) << what;
    }
  }
}

// The per-token and per-sequence element counts agree with the config's own footprint (config/model_config.h),
// which the inspect and upcycle reports use.
TEST(MemoryPlan, AgreesWithLayerFootprint) {
  const ModelConfig c = mixed_config();
  auto model = CausalLM::random(c, 1);
  const MemoryPlan p = CachePools::plan(*model, small_options());  // fp32 model, fp32 state: 4 bytes each
  int64_t kv = 0, state = 0;
  for (const LayerSpec& l : c.layers) {
    kv += layer_footprint(c, l).kv_elems_per_token;
    state += layer_footprint(c, l).state_elems;
  }
  EXPECT_EQ(p.bytes_per_token, 4 * kv);
  EXPECT_EQ(p.bytes_per_slot, 4 * state);
}

TEST(MemoryPlan, ModelsWithOnlyOneKindOfCache) {
  EngineOptions o = small_options();
  auto recurrent = CausalLM::random(test::recurrent_config(), 1);
  MemoryPlan p = CachePools::plan(*recurrent, o);
  EXPECT_EQ(p.bytes_per_page, 0);
  EXPECT_EQ(p.num_pages, 0);
  EXPECT_EQ(p.max_tokens_per_sequence, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(p.pool_bytes, 6 * p.bytes_per_slot);
  EXPECT_NE(p.describe().find("unlimited"), std::string::npos) << p.describe();

  auto teacher = CausalLM::random(test::model_with({test::gqa_layer(64), test::gqa_layer(64)}), 1);
  p = CachePools::plan(*teacher, o);
  const GqaSpec& g = teacher->config().layers[0].gqa;
  EXPECT_EQ(p.bytes_per_slot, 0);
  EXPECT_EQ(p.bytes_per_token, 2 * 4 * 2 * g.num_kv_heads * g.head_dim);
  EXPECT_EQ(p.num_pages, (1 << 20) / p.bytes_per_page);
}

TEST(MemoryPlan, ErrorsNameTheNumbers) {
  auto model = CausalLM::random(mixed_config(), 1);
  EngineOptions o = small_options();
  const MemoryPlan full = CachePools::plan(*model, o);
  const int64_t slots = 6 * full.bytes_per_slot;

  // One byte short of slots + one page.
  o.memory_bytes = slots + full.bytes_per_page - 1;
  std::string e = error_of([&] { CachePools::plan(*model, o); });
  EXPECT_NE(e.find("holds no page of 16 tokens"), std::string::npos) << e;
  EXPECT_NE(e.find("needs " + std::to_string(full.bytes_per_page) + " bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("6 slots of " + std::to_string(full.bytes_per_slot) + " bytes"), std::string::npos) << e;
  EXPECT_NE(e.find(std::to_string(o.memory_bytes) + " bytes"), std::string::npos) << e;
  // Exactly slots + one page is enough.
  o.memory_bytes = slots + full.bytes_per_page;
  EXPECT_EQ(CachePools::plan(*model, o).num_pages, 1);

  o.memory_bytes = slots - 1;
  e = error_of([&] { CachePools::plan(*model, o); });
  EXPECT_NE(e.find("cannot hold 6 slots of " + std::to_string(full.bytes_per_slot) + " bytes"), std::string::npos)
      << e;
  EXPECT_NE(e.find("max_sequences 4 + prefix_snapshots 2"), std::string::npos) << e;

  o.memory_bytes = 0;  // a CPU model has no device size to take a fraction of
  e = error_of([&] { CachePools::plan(*model, o); });
  EXPECT_NE(e.find("memory_bytes must be given"), std::string::npos) << e;
  EXPECT_NE(e.find("cpu"), std::string::npos) << e;
}

TEST(MemoryPlan, DescribeNamesTheSizes) {
  auto model = CausalLM::random(mixed_config(), 1);
  const MemoryPlan p = CachePools::plan(*model, small_options());
  const std::string s = p.describe();
  for (const std::string& part :
       {std::to_string(p.num_pages) + " pages of 16 tokens", std::to_string(p.bytes_per_page) + " B/page",
        "6 state slots of " + std::to_string(p.bytes_per_slot) + " B", std::string("budget 1.0 MiB"),
        "max tokens per sequence " + std::to_string(p.max_tokens_per_sequence)})
    EXPECT_NE(s.find(part), std::string::npos) << "'" << part << "' missing from: " << s;
}

// reserve = T * (e * (4 D + 3 I + 2 W) + 8 V) with W the widest mixer projection (activation_reserve.h).
TEST(MemoryPlan, DerivedActivationReserve) {
  const ModelConfig c = mixed_config();
  const GqaSpec& g = c.layers[0].gqa;
  const MlaSpec& m = c.layers[1].mla;
  const GdnSpec& d = c.layers[2].gdn;
  const Mamba2Spec& s = c.layers[3].mamba2;
  const int64_t gqa = (g.num_heads + 2 * g.num_kv_heads) * g.head_dim;
  const int64_t mla = m.num_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.kv_lora_rank +
                      m.qk_rope_head_dim + m.num_heads * (m.qk_nope_head_dim + m.v_head_dim) +
                      m.num_heads * m.qk_rope_head_dim;
  const int64_t gdn = 2 * d.num_heads * d.head_k_dim + 2 * d.num_heads * d.head_v_dim + 2 * d.num_heads;
  const int64_t m2 = 2 * s.d_inner + 2 * s.d_xb + s.n_heads;
  EXPECT_EQ(mixer_projection_width(c.layers[0]), gqa);
  EXPECT_EQ(mixer_projection_width(c.layers[1]), mla);
  EXPECT_EQ(mixer_projection_width(c.layers[2]), gdn);
  EXPECT_EQ(mixer_projection_width(c.layers[3]), m2);
  const int64_t W = std::max({gqa, mla, gdn, m2});
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    const int64_t e = t == at::kFloat ? 4 : 2;
    const int64_t per_token = e * (4 * c.hidden_size + 3 * 64 + 2 * W) + 8 * c.vocab_size;
    EXPECT_EQ(derived_activation_reserve_bytes(c, t, 1), per_token);
    EXPECT_EQ(derived_activation_reserve_bytes(c, t, 2048), 2048 * per_token);
  }
}

TEST(EngineOptions, ValidateNamesTheField) {
  auto expect_field = [](const std::function<void(EngineOptions&)>& change, const std::string& field) {
    EngineOptions o;
    change(o);
    const std::string e = error_of([&] { o.validate(); });
    EXPECT_NE(e.find(field), std::string::npos) << "expected an error naming " << field << ", got '" << e << "'";
  };
  EXPECT_EQ(error_of([] { EngineOptions().validate(); }), "");
  expect_field([](EngineOptions& o) { o.page_size = 0; }, "page_size");
  expect_field([](EngineOptions& o) { o.memory_bytes = -1; }, "memory_bytes");
  expect_field([](EngineOptions& o) { o.gpu_memory_fraction = 0.0; }, "gpu_memory_fraction");
  expect_field([](EngineOptions& o) { o.gpu_memory_fraction = 1.5; }, "gpu_memory_fraction");
  expect_field([](EngineOptions& o) { o.activation_reserve_bytes = -5; }, "activation_reserve_bytes");
  expect_field([](EngineOptions& o) { o.max_sequences = 0; }, "max_sequences");
  expect_field([](EngineOptions& o) { o.max_step_tokens = 0; }, "max_step_tokens");
  expect_field([](EngineOptions& o) { o.max_step_tokens = 32; }, "max_step_tokens must be >= max_sequences (64");
  expect_field([](EngineOptions& o) { o.prefill_chunk = 63; }, "prefill_chunk must be >= page_size (64)");
  expect_field([](EngineOptions& o) { o.prefix_snapshots = -1; }, "prefix_snapshots");
  expect_field([](EngineOptions& o) { o.state_dtype = at::kHalf; }, "state_dtype");
  // plan() checks the options first.
  auto model = CausalLM::random(mixed_config(), 1);
  EngineOptions o = small_options();
  o.page_size = 0;
  EXPECT_NE(error_of([&] { CachePools::plan(*model, o); }).find("page_size"), std::string::npos);
}

TEST(EngineOptions, FinishReasonNames) {
  EXPECT_STREQ(finish_reason_name(FinishReason::kNone), "");
  EXPECT_STREQ(finish_reason_name(FinishReason::kEos), "eos");
  EXPECT_STREQ(finish_reason_name(FinishReason::kLength), "length");
  EXPECT_STREQ(finish_reason_name(FinishReason::kCancelled), "cancelled");
  EXPECT_STREQ(finish_reason_name(FinishReason::kError), "error");
}

}  // namespace
}  // namespace hylo::engine
