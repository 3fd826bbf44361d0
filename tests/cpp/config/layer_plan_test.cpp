// Layer plans: every shipped plan parses and applies to its teacher's shape; the applied configs reproduce the
// parameter counts and KV ratios HYLO.md 2.1 publishes; bad plans fail before any work with messages that name
// the plan file and the field.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "hylo/config/hf_config.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/config/layer_plan.h"

namespace hylo {
namespace {

namespace fs = std::filesystem;

fs::path plans_dir() { return fs::path(HYLO_SOURCE_DIR) / "recipes" / "plans"; }

// The teachers' HF config.json values (the published configs of the three HyLo backbones and SmolLM2-135M).
ModelConfig teacher(const std::string& family) {
  nlohmann::json j;
  if (family == "llama3.2-1b" || family == "llama3.2-3b") {
    const bool big = family == "llama3.2-3b";
    j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 128256},
         {"hidden_size", big ? 3072 : 2048}, {"intermediate_size", 8192}, {"num_hidden_layers", big ? 28 : 16},
         {"num_attention_heads", big ? 24 : 32}, {"num_key_value_heads", 8}, {"head_dim", big ? 128 : 64},
         {"rms_norm_eps", 1e-5}, {"tie_word_embeddings", true}, {"max_position_embeddings", 131072},
         {"rope_theta", 500000.0}, {"hidden_act", "silu"},
         {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}};
  } else if (family == "qwen3-1.7b") {
    j = {{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", 151936},
         {"hidden_size", 2048}, {"intermediate_size", 6144}, {"num_hidden_layers", 28}, {"num_attention_heads", 16},
         {"num_key_value_heads", 8}, {"head_dim", 128}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true},
         {"max_position_embeddings", 40960}, {"rope_theta", 1000000.0}, {"hidden_act", "silu"}};
  } else {
    j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 49152},
         {"hidden_size", 576}, {"intermediate_size", 1536}, {"num_hidden_layers", 30}, {"num_attention_heads", 9},
         {"num_key_value_heads", 3}, {"rms_norm_eps", 1e-5}, {"tie_word_embeddings", true},
         {"max_position_embeddings", 8192}, {"rope_theta", 100000.0}, {"hidden_act", "silu"}};
  }
  auto c = model_config_from_hf_json(j, family + " config.json");
  if (!c.ok()) throw std::runtime_error(c.error());
  return std::move(c).value();
}

std::string family_of(const std::string& plan_file) {
  for (const char* f : {"llama3.2-1b", "llama3.2-3b", "qwen3-1.7b", "smollm2-135m"})
    if (plan_file.rfind(f, 0) == 0) return f;
  return "";
}

ModelConfig apply_file(const std::string& file) {
  auto plan = load_layer_plan(plans_dir() / file);
  EXPECT_TRUE(plan.ok()) << plan.error();
  auto cfg = apply_plan(teacher(family_of(file)), plan.value());
  EXPECT_TRUE(cfg.ok()) << cfg.error();
  return cfg.ok() ? cfg.value() : ModelConfig{};
}

TEST(LayerPlan, EveryShippedPlanParsesAndApplies) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(plans_dir())) {
    if (e.path().extension() != ".yaml") continue;
    const std::string file = e.path().filename().string();
    SCOPED_TRACE(file);
    const std::string fam = family_of(file);
    ASSERT_FALSE(fam.empty()) << "plan file name does not start with a known teacher family";
    ModelConfig c = apply_file(file);
    ASSERT_EQ(c.num_layers(), teacher(fam).num_layers());
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(c.backbone_attention.num_heads, teacher(fam).layers[0].gqa.num_heads);
    ++n;
  }
  EXPECT_GE(n, 14);
}

// Parameter counts of the released checkpoints (HYLO.md 2.1, untied head), to the published precision.
TEST(LayerPlan, ParameterCountsOfHyloTable) {
  struct Row { const char* file; double billions; };
  for (Row r : {Row{"llama3.2-1b-4mla12gdn.yaml", 1.674}, Row{"llama3.2-1b-8mla8gdn.yaml", 1.613},
                Row{"llama3.2-3b-6mla22gdn.yaml", 4.268}, Row{"llama3.2-3b-14mla14gdn.yaml", 3.971},
                Row{"qwen3-1.7b-7mla21gdn.yaml", 2.284}, Row{"qwen3-1.7b-14mla14gdn.yaml", 2.183},
                Row{"qwen3-1.7b-14mla14m2.yaml", 2.066}}) {
    SCOPED_TRACE(r.file);
    const double got = double(parameter_count(apply_file(r.file))) / 1e9;
    // Published to 3 decimals: the count must round to the published value.
    EXPECT_NEAR(got, r.billions, 0.0005) << got;
  }
}

// KV-cache ratios of HYLO.md 2.1 (3.9% / 7.8% / 2.0% / 4.7%) and SmolLM2's <= 10%.
TEST(LayerPlan, KvRatios) {
  struct Row { const char* file; double percent; };
  for (Row r : {Row{"llama3.2-1b-4mla12gdn.yaml", 3.9}, Row{"llama3.2-1b-8mla8m2.yaml", 7.8},
                Row{"llama3.2-3b-6mla22gdn.yaml", 2.0}, Row{"llama3.2-3b-14mla14m2.yaml", 4.7},
                Row{"qwen3-1.7b-7mla21gdn.yaml", 3.9}, Row{"qwen3-1.7b-14mla14gdn.yaml", 7.8}}) {
    SCOPED_TRACE(r.file);
    const ModelConfig c = apply_file(r.file);
    const double ratio = 100.0 * kv_bytes_per_token(c) / kv_bytes_per_token(teacher(family_of(r.file)));
    EXPECT_NEAR(ratio, r.percent, 0.05);
  }
  for (const char* f : {"smollm2-135m-6mla24gdn.yaml", "smollm2-135m-6mla24m2.yaml"}) {
    const ModelConfig c = apply_file(f);
    EXPECT_EQ(kv_bytes_per_token(teacher("smollm2-135m")), 23040);
    EXPECT_EQ(kv_bytes_per_token(c), 1920) << f;
  }
}

TEST(LayerPlan, MixerDimsFollowThePlanAndTheTeacher) {
  ModelConfig c = apply_file("qwen3-1.7b-7mla21m2.yaml");
  int mla = 0;
  for (int i = 0; i < c.num_layers(); ++i) {
    const auto& l = c.layers[i];
    if (l.mixer == MixerKind::kMla) {
      ++mla;
      EXPECT_EQ(i % 4, 1);
      EXPECT_EQ(l.mla.kv_lora_rank, 256);
      EXPECT_EQ(l.mla.cache_width(), 320);
      EXPECT_EQ(l.mla.rope.type, "yarn");
      EXPECT_EQ(l.mla.rope.theta, 1000000.0);
    } else {
      ASSERT_EQ(l.mixer, MixerKind::kMamba2);
      // HYLO.md 2.4 for Qwen: d_state 128, ngroups 16, d_inner 2048, d_xb 1024.
      EXPECT_EQ(l.mamba2.d_state, 128);
      EXPECT_EQ(l.mamba2.n_heads, 16);
      EXPECT_EQ(l.mamba2.d_inner, 2048);
      EXPECT_EQ(l.mamba2.d_xb, 1024);
    }
    EXPECT_EQ(l.intermediate_size, 6144);
  }
  EXPECT_EQ(mla, 7);
  EXPECT_EQ(c.backbone_intermediate_size, 6144);
}

const char* kSmolHead = "teacher: {num_layers: 30, hidden_size: 576, num_heads: 9, num_kv_heads: 3, head_dim: 64}\n";

Result<ModelConfig> apply_text(const std::string& text) {
  HYLO_TRY(LayerPlan plan, parse_layer_plan(text, "bad.yaml"));
  return apply_plan(teacher("smollm2-135m"), plan);
}

std::string error_of(const std::string& text) {
  auto r = apply_text(text);
  EXPECT_FALSE(r.ok()) << "plan was accepted:\n" << text;
  return r.ok() ? "" : r.error();
}

const std::string kMla = "mla: {kv_lora_rank: 128, qk_nope_head_dim: 32, qk_rope_head_dim: 32, num_kv_groups: 3}\n";
const std::string kGdn = "gdn: {num_heads: 3, head_k_dim: 128, head_v_dim: 256}\n";

TEST(LayerPlan, RulesSelectLayers) {
  auto every = apply_text(std::string(kSmolHead) + "mla_rule: {every: 5, offset: 2}\nlinear: gdn\n" + kMla + kGdn);
  ASSERT_TRUE(every.ok()) << every.error();
  std::vector<int> got;
  for (int i = 0; i < 30; ++i)
    if (every->layers[i].mixer == MixerKind::kMla) got.push_back(i);
  EXPECT_EQ(got, (std::vector<int>{2, 7, 12, 17, 22, 27}));

  // Budget without a count: 32768 tokens x 160 values x 2 B = 10 MiB per MLA layer; 25 MiB holds 2 layers.
  auto budget = apply_text(std::string(kSmolHead) + "kv_budget: {context: 32768, bytes: 26214400}\nlinear: gdn\n" +
                           kMla + kGdn);
  ASSERT_TRUE(budget.ok()) << budget.error();
  EXPECT_EQ(kv_bytes_per_token(*budget), 2 * 160 * 2);
  EXPECT_EQ(budget->layers[7].mixer, MixerKind::kMla);   // (0.5) * 30 / 2 = 7.5 -> 7
  EXPECT_EQ(budget->layers[22].mixer, MixerKind::kMla);  // (1.5) * 30 / 2 = 22.5 -> 22

  // Budget with a count: the rank follows, rounded down to a multiple of 8: 26214400 / (32768*2*4) = 100 values
  // per layer -> 100 - 32 = 68 -> 64.
  auto rank = apply_text(std::string(kSmolHead) +
                         "kv_budget: {context: 32768, bytes: 26214400, num_mla_layers: 4}\nlinear: mamba2\n"
                         "mla: {qk_rope_head_dim: 32, num_kv_groups: 3}\n");
  ASSERT_TRUE(rank.ok()) << rank.error();
  int n = 0;
  for (const auto& l : rank->layers)
    if (l.mixer == MixerKind::kMla) {
      ++n;
      EXPECT_EQ(l.mla.kv_lora_rank, 64);
    }
  EXPECT_EQ(n, 4);
  EXPECT_LE(kv_bytes_per_token(*rank) * 32768, 26214400);
}

// Plan values at the edges of their types: no overflow, no undefined float->int conversion, a clear error or the
// clamped result (UBSan in the sanitizer build catches a regression here).
TEST(LayerPlan, ExtremeValuesAreClampedOrRejected) {
  const std::string head = kSmolHead;
  // A step larger than the depth selects only the offset; i + every would overflow int64.
  auto huge_every = apply_text(head + "mla_rule: {every: 9223372036854775807, offset: 2}\nlinear: gdn\n" + kMla + kGdn);
  ASSERT_TRUE(huge_every.ok()) << huge_every.error();
  std::vector<int> got;
  for (int i = 0; i < 30; ++i)
    if (huge_every->layers[i].mixer == MixerKind::kMla) got.push_back(i);
  EXPECT_EQ(got, (std::vector<int>{2}));

  // A budget whose layer count is far past int64 range: every layer fits, n is clamped to the depth.
  auto huge_bytes = apply_text(head + "kv_budget: {context: 1, bytes: 1.0e300}\nlinear: gdn\n" + kMla + kGdn);
  ASSERT_TRUE(huge_bytes.ok()) << huge_bytes.error();
  for (const auto& l : huge_bytes->layers) EXPECT_EQ(l.mixer, MixerKind::kMla);

  // The same with a fixed count: the rank is clamped to the largest one the teacher allows (2 * 3 * 64 = 384).
  auto huge_rank = apply_text(head + "kv_budget: {context: 1, bytes: 1.0e300, num_mla_layers: 4}\nlinear: mamba2\n"
                                     "mla: {qk_rope_head_dim: 32, num_kv_groups: 3}\n");
  ASSERT_TRUE(huge_rank.ok()) << huge_rank.error();
  for (const auto& l : huge_rank->layers)
    if (l.mixer == MixerKind::kMla) EXPECT_EQ(l.mla.kv_lora_rank, 384);

  auto err = [&](const std::string& body) {
    auto r = apply_text(head + body);
    return r.ok() ? std::string("(no error)") : r.error();
  };
  // kv_lora_rank 0 with rope 0 would make the latent width 0 and the quotient infinite.
  std::string e = err("kv_budget: {context: 32768, bytes: 26214400}\nlinear: gdn\n"
                      "mla: {kv_lora_rank: 0, qk_nope_head_dim: 64, qk_rope_head_dim: 0, num_kv_groups: 3}\n" + kGdn);
  EXPECT_NE(e.find("mla.kv_lora_rank: must be >= 1, got 0"), std::string::npos) << e;
  e = err("kv_budget: {context: 32768, bytes: .inf}\nlinear: gdn\n" + kMla + kGdn);
  EXPECT_NE(e.find("kv_budget.bytes: must be a finite number > 0"), std::string::npos) << e;
}

TEST(LayerPlan, Stage1PlansArePureModels) {
  auto plan = load_layer_plan(plans_dir() / "smollm2-135m-6mla24gdn.yaml");
  ASSERT_TRUE(plan.ok()) << plan.error();
  auto mla = apply_plan(teacher("smollm2-135m"), stage1_plan(*plan, false));
  auto lin = apply_plan(teacher("smollm2-135m"), stage1_plan(*plan, true));
  ASSERT_TRUE(mla.ok()) << mla.error();
  ASSERT_TRUE(lin.ok()) << lin.error();
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(mla->layers[i].mixer, MixerKind::kMla);
    EXPECT_EQ(lin->layers[i].mixer, MixerKind::kGdn);
  }
}

TEST(LayerPlan, EnergyRank) {
  // sigma^2 = 16, 9, 4, 1 ... : 16/30 = 0.53, 25/30 = 0.83, 29/30 = 0.97, 30/30.
  std::vector<double> s = {4, 3, 2, 1};
  EXPECT_EQ(energy_rank(s, 0.5), 4);  // r = 1 rounded up to 8, capped at 4 values
  std::vector<double> many(40, 0.0);
  for (int i = 0; i < 40; ++i) many[i] = 40 - i;
  double total = 0;
  for (double v : many) total += v * v;
  double cum = 0;
  int r = 0;
  while (cum < 0.9 * total) cum += many[r] * many[r], ++r;
  EXPECT_EQ(energy_rank(many, 0.9), (r + 7) / 8 * 8);
  EXPECT_EQ(energy_rank(many, 1.0), 40);
}

TEST(LayerPlan, BadPlansFailWithClearMessages) {
  const std::string head = kSmolHead;
  auto has = [](const std::string& msg, std::initializer_list<const char*> parts) {
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  };
  has(error_of(head + "mla_layers: [2, 30]\nlinear: gdn\n" + kMla + kGdn),
      {"bad.yaml", "mla_layers[1]", "index 30 out of range 0..29"});
  has(error_of(head + "mla_layers: [-1]\nlinear: gdn\n" + kMla + kGdn), {"mla_layers[0]", "out of range"});
  has(error_of(head + "mla_layers: [4, 4]\nlinear: gdn\n" + kMla + kGdn), {"mla_layers[1]", "duplicate index 4"});
  has(error_of(head + "mla_layers: [4]\nlinear: retnet\n" + kMla + kGdn),
      {"bad.yaml", "linear", "unknown linear mixer 'retnet'", "gdn or mamba2"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\n"
                      "mla: {kv_lora_rank: 512, qk_nope_head_dim: 32, qk_rope_head_dim: 32, num_kv_groups: 3}\n" + kGdn),
      {"mla.kv_lora_rank", "512 is larger than the 384 x 576", "at most 384"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\n"
                      "mla: {q_lora_rank: 600, kv_lora_rank: 128, num_kv_groups: 3}\n" + kGdn),
      {"mla.q_lora_rank", "600 is larger than the 576 x 576 query matrix"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\n"
                      "mla: {kv_lora_rank: 128, num_kv_groups: 2}\n" + kGdn),
      {"mla.num_kv_groups", "2 does not divide the 9 query heads"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\n"
                      "mla: {kv_lora_rank: 128, num_kv_groups: 9, qk_nope_head_dim: 48, qk_rope_head_dim: 32}\n" + kGdn),
      {"mla.qk_nope_head_dim + qk_rope_head_dim", "exceeds the teacher head_dim 64"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\nmla: {kv_lora_rank: 128, qk_rope_head_dim: 31}\n" + kGdn),
      {"mla.qk_rope_head_dim", "even"});
  has(error_of(head + "mla_layers: [4]\nlinear: mamba2\n" + kMla + "mamba2: {d_state: 32}\n"),
      {"mamba2.d_state", "teacher head_dim 64"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\n" + kMla + "gdn: {num_heads: 3, head_k_dim: 128}\n"),
      {"gdn.head_v_dim", "missing key"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\nmla: {qk_rope_head_dim: 32}\n" + kGdn),
      {"mla.kv_lora_rank", "missing key"});
  has(error_of(head + "mla_layers: [4]\n" + kMla + kGdn), {"linear", "missing key"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\nmla: {kv_lora_rank: 128, kv_rank: 3}\n" + kGdn),
      {"mla.kv_rank", "unknown key"});
  has(error_of(head + "mla_layers: [4]\nmla_rule: {every: 2}\nlinear: gdn\n" + kMla + kGdn), {"exactly one of"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\nmla: {kv_lora_rank: 128, kv_energy: 1.5}\n" + kGdn),
      {"give kv_lora_rank or kv_energy, not both"});
  has(error_of("teacher: {num_layers: 16}\nmla_layers: [4]\nlinear: gdn\n" + kMla + kGdn),
      {"teacher.num_layers", "plan is for a teacher with 16, this teacher has 30"});
  has(error_of(head + "mla_layers: [4\nlinear: gdn\n"), {"bad.yaml", "not valid YAML"});
  has(error_of(head + "mla_layers: [4]\nlinear: gdn\nmla: {kv_lora_rank: 128, rope: {type: llama3}}\n" + kGdn),
      {"mla.rope.type", "unsupported 'llama3'"});
  has(error_of(head + "kv_budget: {context: 1000000, bytes: 1000}\nlinear: gdn\n" + kMla + kGdn),
      {"kv_budget", "hold no MLA layer"});
  // A file that does not exist.
  auto missing = load_layer_plan(plans_dir() / "no-such-plan.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("no-such-plan.yaml"), std::string::npos);
}

}  // namespace
}  // namespace hylo

namespace hylo {
namespace {

// layer_plan_to_yaml writes what parse_layer_plan reads back to the same hybrid.
TEST(LayerPlan, YamlRoundTrip) {
  for (const auto& e : fs::directory_iterator(plans_dir())) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().filename().string());
    auto plan = load_layer_plan(e.path()).value_or_throw();
    const std::string text = layer_plan_to_yaml(plan, {"round trip"});
    EXPECT_EQ(text.rfind("# round trip", 0), 0u) << text;
    auto again = parse_layer_plan(text, "round-trip.yaml");
    ASSERT_TRUE(again.ok()) << again.error() << "\n" << text;
    const ModelConfig t = teacher(family_of(e.path().filename().string()));
    EXPECT_EQ(checkpoint_config_to_json(apply_plan(t, plan).value_or_throw()).dump(),
              checkpoint_config_to_json(apply_plan(t, *again).value_or_throw()).dump());
  }
  // The rules and a budget survive too.
  for (const std::string body : {"mla_rule: {every: 5, offset: 2}\n", "kv_budget: {context: 32768, bytes: 26214400}\n"}) {
    auto plan = parse_layer_plan(std::string(kSmolHead) + body + "linear: gdn\n" + kMla + kGdn, "p.yaml").value_or_throw();
    auto again = parse_layer_plan(layer_plan_to_yaml(plan), "q.yaml").value_or_throw();
    EXPECT_EQ(checkpoint_config_to_json(apply_plan(teacher("smollm2-135m"), plan).value_or_throw()).dump(),
              checkpoint_config_to_json(apply_plan(teacher("smollm2-135m"), again).value_or_throw()).dump());
  }
}

}  // namespace
}  // namespace hylo
