// The upcycler end to end on small random teachers (Llama- and Qwen3-shaped): every student parameter comes
// from the teacher or an initialiser, the parameter count of config-only arithmetic equals the mixers' real
// shapes (also at the full HyLo sizes, on the meta device), plan errors come before any work, Stage-I models
// assemble by plan, and checkpoints are written atomically with their tokenizer.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "hylo/config/hf_config.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/core/file_util.h"
#include "hylo/io/safetensors.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/checkpoint.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/upcycle/upcycler.h"

namespace hylo {
namespace {
namespace fs = std::filesystem;

ModelConfig small_teacher(bool qwen3, int64_t vocab = 101) {
  nlohmann::json j = {{"architectures", {qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"}},
                      {"model_type", qwen3 ? "qwen3" : "llama"},
                      {"vocab_size", vocab},
                      {"hidden_size", 64},
                      {"intermediate_size", 96},
                      {"num_hidden_layers", 4},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"head_dim", 16},
                      {"rms_norm_eps", 1e-6},
                      {"tie_word_embeddings", true},
                      {"max_position_embeddings", 256},
                      {"rope_theta", 10000.0},
                      {"hidden_act", "silu"}};
  return model_config_from_hf_json(j, "small teacher").value_or_throw();
}

const char* kMlaDims =
    "mla: {q_lora_rank: 48, kv_lora_rank: 32, qk_nope_head_dim: 8, qk_rope_head_dim: 8, num_kv_groups: 2}\n";

LayerPlan plan_of(const std::string& text) { return parse_layer_plan(text, "test-plan.yaml").value_or_throw(); }

std::map<std::string, at::Tensor> params_of(CausalLM& m) {
  std::map<std::string, at::Tensor> out;
  m.visit_parameters([&](const std::string& n, at::Tensor& t) { out[n] = t; });
  return out;
}

int64_t numel_of(CausalLM& m) {
  int64_t n = 0;
  m.visit_parameters([&](const std::string&, at::Tensor& t) { n += t.numel(); });
  return n;
}

UpcycleOptions quiet() {
  UpcycleOptions o;
  o.calibration_tokens = 0;
  o.progress = false;
  return o;
}

class UpcycleSmall : public ::testing::TestWithParam<std::tuple<bool, std::string>> {};

TEST_P(UpcycleSmall, EveryParameterComesFromTheTeacherOrAnInitialiser) {
  const bool qwen3 = std::get<0>(GetParam());
  const std::string linear = std::get<1>(GetParam());
  auto teacher = CausalLM::random(small_teacher(qwen3), 1);
  std::string gdn = "gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 48}\n";
  LayerPlan plan = plan_of(std::string("mla_layers: [1, 3]\nlinear: ") + linear + "\n" + kMlaDims + gdn);
  UpcycleResult r = upcycle(*teacher, plan, quiet()).value_or_throw();
  CausalLM& s = *r.model;
  const ModelConfig& c = s.config();
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.layers[1].mixer, MixerKind::kMla);
  EXPECT_EQ(c.layers[0].mixer, linear == "gdn" ? MixerKind::kGdn : MixerKind::kMamba2);
  // The config arithmetic (model_config.cpp) equals the mixers' real parameter shapes.
  EXPECT_EQ(numel_of(s), parameter_count(c));
  EXPECT_EQ(r.report.params_student, parameter_count(c));

  auto tp = params_of(*teacher), sp = params_of(s);
  for (const auto& [name, t] : sp) {
    if (name.find(".mla.") != std::string::npos || name.find(".gdn.") != std::string::npos ||
        name.find(".mamba.") != std::string::npos)
      continue;
    const std::string src = name == "lm_head.weight" ? "model.embed_tokens.weight" : name;
    ASSERT_TRUE(tp.count(src)) << name;
    EXPECT_TRUE(at::equal(t, tp.at(src))) << name << " is not a verbatim copy";
  }
  // Spot checks of the mixers against the teacher (fp32 copies of fp64 inits of fp32 weights: exact).
  EXPECT_TRUE(at::equal(sp.at("model.layers.1.mla.out_proj.weight"), tp.at("model.layers.1.self_attn.o_proj.weight")));
  if (linear == "gdn") {
    // key dim 32 < H*Dh = 64: the leading 32 rows of W_q (Qwen3: with the q_norm gain folded into each row).
    at::Tensor wq = tp.at("model.layers.0.self_attn.q_proj.weight").to(at::kDouble);  // [64, 64]
    if (qwen3)
      wq = (wq.view({4, 16, 64}) * tp.at("model.layers.0.self_attn.q_norm.weight").to(at::kDouble).view({1, 16, 1}))
               .reshape({64, 64});
    at::Tensor got = sp.at("model.layers.0.gdn.q_proj.weight").to(at::kDouble);
    // The fp64 product rounded once to fp32: relative error <= 2^-24 per element.
    EXPECT_LE((got - wq.slice(0, 0, 32)).abs().max().item<double>(),
              std::ldexp(1.0, -24) * wq.slice(0, 0, 32).abs().max().item<double>());
  } else {
    at::Tensor in_proj = sp.at("model.layers.0.mamba.in_proj.weight");  // [z 64 | x 32 | B 32 | C 64 | dt 4]
    EXPECT_TRUE(at::equal(in_proj.slice(0, 64, 96), tp.at("model.layers.0.self_attn.v_proj.weight")));
  }
  EXPECT_EQ(r.report.notes.empty(), !qwen3);  // the qk-norm decision is reported for Qwen3
  ASSERT_EQ(r.report.layers.size(), 4u);
  EXPECT_EQ(r.report.layers[1].kv_rank, 32);
  EXPECT_EQ(r.report.kv_bytes_teacher, 4 * 2 * 2 * 16 * 2);
  EXPECT_EQ(r.report.kv_bytes_student, 2 * (32 + 8) * 2);

  // The hybrid runs.
  at::Tensor ids = at::arange(0, 12, at::kLong).remainder(101).view({1, 12});
  at::Tensor logits = s.forward(ids);
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Upcycle, UpcycleSmall,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(std::string("gdn"),
                                                                                 std::string("mamba2"))));

TEST(Upcycle, QwenGainsAreFoldedIntoTheFactoredQuery) {
  auto teacher = CausalLM::random(small_teacher(true), 2);
  // Full query rank (64), so W_qb W_qa reproduces the gain-scaled W_q.
  LayerPlan plan = plan_of(
      "mla_layers: [0]\nlinear: mamba2\n"
      "mla: {q_lora_rank: 64, kv_lora_rank: 64, qk_nope_head_dim: 8, qk_rope_head_dim: 8, num_kv_groups: 2}\n");
  UpcycleResult r = upcycle(*teacher, plan, quiet()).value_or_throw();
  auto tp = params_of(*teacher), sp = params_of(*r.model);
  at::Tensor wq = tp.at("model.layers.0.self_attn.q_proj.weight").to(at::kDouble).view({4, 16, 64});
  at::Tensor g = tp.at("model.layers.0.self_attn.q_norm.weight").to(at::kDouble).view({1, 16, 1});
  at::Tensor want = (wq * g).reshape({64, 64});
  at::Tensor got = at::matmul(sp.at("model.layers.0.mla.q_b_proj.weight").to(at::kDouble),
                              sp.at("model.layers.0.mla.q_a_proj.weight").to(at::kDouble));
  // fp32 storage of the two factors: relative error of order sqrt(n) * 2^-24 (n = 64 terms) ~ 5e-7.
  EXPECT_LT(relative_rms_error(got, want), 1e-5);
}

TEST(Upcycle, PlanErrorsComeBeforeAnyWork) {
  auto teacher = CausalLM::random(small_teacher(false), 3);
  LayerPlan bad = plan_of(std::string("mla_layers: [9]\nlinear: gdn\n") + kMlaDims);
  UpcycleOptions o = quiet();
  o.calibration_tokens = 16;
  o.calibration_text = "/no/such/calibration.txt";  // would fail later; the plan error must come first
  auto r = upcycle(*teacher, bad, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("test-plan.yaml: mla_layers[0]: index 9 out of range 0..3"), std::string::npos) << r.error();
}

TEST(Upcycle, HyloParameterCountsFromTheMixersRealShapes) {
  // Full-size configs, built on the meta device: the shapes the mixers allocate, without the memory.
  struct Row { const char* plan; const char* family; double billions; };
  const fs::path plans = fs::path(HYLO_SOURCE_DIR) / "recipes" / "plans";
  auto llama = [](bool big) {
    nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 128256},
                        {"hidden_size", big ? 3072 : 2048}, {"intermediate_size", 8192},
                        {"num_hidden_layers", big ? 28 : 16}, {"num_attention_heads", big ? 24 : 32},
                        {"num_key_value_heads", 8}, {"head_dim", big ? 128 : 64}, {"tie_word_embeddings", true},
                        {"rope_theta", 500000.0}, {"max_position_embeddings", 131072}, {"hidden_act", "silu"}};
    return model_config_from_hf_json(j, "llama").value_or_throw();
  };
  nlohmann::json qj = {{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", 151936},
                       {"hidden_size", 2048}, {"intermediate_size", 6144}, {"num_hidden_layers", 28},
                       {"num_attention_heads", 16}, {"num_key_value_heads", 8}, {"head_dim", 128},
                       {"tie_word_embeddings", true}, {"rope_theta", 1000000.0}, {"max_position_embeddings", 40960},
                       {"hidden_act", "silu"}};
  const ModelConfig qwen = model_config_from_hf_json(qj, "qwen3").value_or_throw();
  for (Row row : {Row{"llama3.2-1b-4mla12gdn.yaml", "1b", 1.674}, Row{"llama3.2-1b-8mla8gdn.yaml", "1b", 1.613},
                  Row{"llama3.2-3b-6mla22gdn.yaml", "3b", 4.268}, Row{"llama3.2-3b-14mla14gdn.yaml", "3b", 3.971},
                  Row{"qwen3-1.7b-7mla21gdn.yaml", "q", 2.284}, Row{"qwen3-1.7b-14mla14gdn.yaml", "q", 2.183},
                  Row{"qwen3-1.7b-14mla14m2.yaml", "q", 2.066}}) {
    SCOPED_TRACE(row.plan);
    const std::string fam = row.family;
    const ModelConfig teacher = fam == "q" ? qwen : llama(fam == "3b");
    const ModelConfig c = apply_plan(teacher, load_layer_plan(plans / row.plan).value_or_throw()).value_or_throw();
    CausalLM model(c, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
    const int64_t real = numel_of(model);
    EXPECT_EQ(real, parameter_count(c));
    EXPECT_NEAR(double(real) / 1e9, row.billions, 0.0005);
  }
}

TEST(Upcycle, StageOneModelsAssembleByPlan) {
  auto teacher = CausalLM::random(small_teacher(false), 4);
  const std::string gdn = "gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 48}\n";
  LayerPlan plan = plan_of(std::string("mla_layers: [0, 2]\nlinear: gdn\n") + kMlaDims + gdn);
  UpcycleOptions o = quiet();
  auto mla = upcycle(*teacher, stage1_plan(plan, false), o).value_or_throw().model;
  o.seed = 5;
  auto lin = upcycle(*teacher, stage1_plan(plan, true), o).value_or_throw().model;
  for (const auto& l : mla->config().layers) EXPECT_EQ(l.mixer, MixerKind::kMla);
  for (const auto& l : lin->config().layers) EXPECT_EQ(l.mixer, MixerKind::kGdn);
  // Make the two models' shared tensors differ, as after Stage-I training, so provenance is visible.
  mla->visit_parameters([](const std::string&, at::Tensor& t) { t.add_(1.0); });
  auto hybrid = assemble_hybrid(*mla, *lin, plan).value_or_throw();
  auto mp = params_of(*mla), lp = params_of(*lin), hp = params_of(*hybrid);
  for (const auto& [name, t] : hp) {
    bool from_mla = name.rfind("model.layers.0.", 0) == 0 || name.rfind("model.layers.2.", 0) == 0;
    EXPECT_TRUE(at::equal(t, (from_mla ? mp : lp).at(name))) << name;
  }
  EXPECT_EQ(hybrid->config().layers[2].mixer, MixerKind::kMla);
  EXPECT_EQ(hybrid->config().layers[3].mixer, MixerKind::kGdn);
  // Wrong ingredients: the plan asks for Mamba2 layers, the linear model has GDN.
  LayerPlan m2 = plan_of(std::string("mla_layers: [0, 2]\nlinear: mamba2\n") + kMlaDims);
  auto bad = assemble_hybrid(*mla, *lin, m2);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("the plan asks for mamba2 layers, the linear model has gdn"), std::string::npos)
      << bad.error();
  auto swapped = assemble_hybrid(*lin, *mla, plan);
  ASSERT_FALSE(swapped.ok());
  EXPECT_NE(swapped.error().find("should come from the MLA model"), std::string::npos) << swapped.error();
}

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("hylo-upcycle-test-" + tag + "-" + std::to_string(::getpid()));
  (void)remove_tree(p);
  fs::create_directories(p);
  return p;
}

std::string data_dir() {
  const char* d = std::getenv("HYLO_DATA");
  return d ? d : "";
}

TEST(Checkpoint, WritesConfigWeightsAndTokenizerAtomically) {
  if (data_dir().empty()) GTEST_SKIP() << "HYLO_DATA not set (source scripts/env.sh)";
  const fs::path tok_dir = fs::path(data_dir()) / "tokenizers" / "gpt2";
  auto teacher = CausalLM::random(small_teacher(false), 6);
  LayerPlan plan = plan_of(std::string("mla_layers: [1]\nlinear: mamba2\n") + kMlaDims);
  auto student = upcycle(*teacher, plan, quiet()).value_or_throw().model;
  const fs::path root = temp_dir("ckpt");
  const fs::path dir = root / "hybrid";
  save_checkpoint(*student, dir, tok_dir).value_or_throw();
  EXPECT_TRUE(fs::exists(dir / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir / "tokenizer_config.json"));
  auto ck = io::SafetensorsCheckpoint::open(dir).value_or_throw();
  int n = 0;
  student->visit_parameters([&](const std::string& name, at::Tensor& t) {
    ++n;
    EXPECT_TRUE(at::equal(tensor_from_view(ck.view(name).value_or_throw()), t)) << name;
  });
  EXPECT_EQ(static_cast<size_t>(n), ck.names().size());
  auto cfg = load_model_dir_config(dir, [&](const std::string& name) -> std::optional<std::vector<int64_t>> {
    const io::TensorInfo* info = ck.find(name);
    if (!info) return std::nullopt;
    return info->shape;
  });
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  ASSERT_EQ(cfg->num_layers(), 4);
  EXPECT_EQ(cfg->layers[1].mixer, MixerKind::kMla);
  EXPECT_EQ(cfg->layers[1].mla.kv_lora_rank, 32);
  EXPECT_EQ(cfg->layers[2].mixer, MixerKind::kMamba2);
  EXPECT_FALSE(cfg->tie_word_embeddings);
  // The model loads back from the checkpoint and computes the same logits.
  auto loaded = CausalLM::load(dir);
  at::Tensor ids = at::arange(0, 10, at::kLong).view({1, 10});
  EXPECT_TRUE(at::equal(loaded->forward(ids), student->forward(ids)));

  // A failing save (no tokenizer at the source) leaves the previous checkpoint untouched and no staging behind.
  const auto before = fs::file_size(dir / "model.safetensors");
  auto failed = save_checkpoint(*teacher, dir, root / "no-tokenizer-here");
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().find("no-tokenizer-here"), std::string::npos) << failed.error();
  EXPECT_EQ(fs::file_size(dir / "model.safetensors"), before);
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1) << "a staging directory was left behind";
  // A failing first save leaves nothing at all.
  ASSERT_FALSE(save_checkpoint(*teacher, root / "fresh", root / "no-tokenizer-here").ok());
  EXPECT_FALSE(fs::exists(root / "fresh"));
  (void)remove_tree(root);
}

TEST(Checkpoint, GgufTokenizerTravelsAsTokenizerGguf) {
  const char* gguf = std::getenv("HYLO_TEACHER_GGUF");
  if (!gguf || !fs::exists(gguf)) GTEST_SKIP() << "HYLO_TEACHER_GGUF not available";
  auto teacher = CausalLM::random(small_teacher(false), 7);
  const fs::path root = temp_dir("gguf");
  save_checkpoint(*teacher, root / "m", gguf).value_or_throw();
  const fs::path tp = root / "m" / "tokenizer.gguf";
  ASSERT_TRUE(fs::exists(tp));
  EXPECT_FALSE(fs::exists(root / "m" / "tokenizer.json"));
  EXPECT_LT(fs::file_size(tp), fs::file_size(gguf) / 10);  // the vocabulary only, no weights
  // A checkpoint directory holding only tokenizer.gguf is itself a tokenizer source (as --assemble passes it).
  save_checkpoint(*teacher, root / "m2", root / "m").value_or_throw();
  ASSERT_TRUE(fs::exists(root / "m2" / "tokenizer.gguf"));
  auto a = tok::Tokenizer::from_path(gguf).value_or_throw();
  const std::string text = "Call me Ishmael. Some years ago -- never mind how long precisely -- 1234 <|im_start|>";
  for (const fs::path& p : {root / "m", root / "m2"}) {
    auto b = tok::Tokenizer::from_path(p).value_or_throw();
    EXPECT_EQ(a.encode(text), b.encode(text)) << p;
    EXPECT_EQ(a.vocab_size(), b.vocab_size()) << p;
    EXPECT_EQ(a.has_chat_template(), b.has_chat_template()) << p;
  }
  (void)remove_tree(root);
}

TEST(Upcycle, KlAfterInitOnCalibrationText) {
  if (data_dir().empty()) GTEST_SKIP() << "HYLO_DATA not set (source scripts/env.sh)";
  const fs::path tok = fs::path(data_dir()) / "tokenizers" / "gpt2";
  auto teacher = CausalLM::random(small_teacher(false, 50257), 8);
  UpcycleOptions o = quiet();
  o.calibration_tokens = 48;
  o.calibration_text = fs::path(data_dir()) / "text" / "moby-dick.txt";
  o.tokenizer = tok;
  LayerPlan plan = plan_of(std::string("mla_layers: [1]\nlinear: gdn\n") + kMlaDims +
                           "gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 48}\n");
  UpcycleResult r = upcycle(*teacher, plan, o).value_or_throw();
  ASSERT_TRUE(r.report.kl.has_value());
  EXPECT_EQ(r.report.kl_tokens, 48);
  EXPECT_GT(*r.report.kl, 0.0);
  EXPECT_TRUE(std::isfinite(*r.report.kl));
  // The KL is the mean over tokens of KL(p_t || p_s): zero against itself.
  at::Tensor ids = calibration_ids(fs::path(data_dir()) / "text" / "moby-dick.txt", tok, 48).value_or_throw();
  EXPECT_NEAR(logit_kl(*teacher, *teacher, ids), 0.0, 1e-6);
  EXPECT_NEAR(logit_kl(*teacher, *r.model, ids), *r.report.kl, 1e-9);
  // The report renders both ways.
  EXPECT_NE(r.report.table().find("KV cache per token"), std::string::npos);
  EXPECT_EQ(r.report.to_json()["layers"].size(), 4u);
}

}  // namespace
}  // namespace hylo

#include "hylo/upcycle/smart_select.h"

namespace hylo {
namespace {

TEST(Smart, ScoresEverySingleSwapAndTakesTheTopK) {
  auto teacher = CausalLM::random(small_teacher(false), 9);
  const std::string gdn = "gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 48}\n";
  LayerPlan plan = plan_of(std::string("mla_layers: [0]\nlinear: gdn\n") + kMlaDims + gdn);
  auto mla = upcycle(*teacher, stage1_plan(plan, false), quiet()).value_or_throw().model;
  auto lin = upcycle(*teacher, stage1_plan(plan, true), quiet()).value_or_throw().model;
  at::Tensor ids = at::arange(0, 24, at::kLong).mul(37).remainder(101).view({1, 24});  // [1, T]
  int calls = 0;
  SmartResult r = smart_select(*teacher, *mla, *lin, ids, 2, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 4);
  ASSERT_EQ(r.scores.size(), 4u);
  EXPECT_NEAR(r.kl_linear, logit_kl(*teacher, *lin, ids), 1e-12);
  // Each score is the KL of the hybrid with that single layer swapped (assembled with copies here).
  for (const auto& s : r.scores) {
    LayerPlan one = plan;
    one.mla_layers = {s.layer};
    auto h = assemble_hybrid(*mla, *lin, one).value_or_throw();
    EXPECT_NEAR(s.kl, logit_kl(*teacher, *h, ids), 1e-9 * std::max(1.0, s.kl));
    EXPECT_NEAR(s.gain, r.kl_linear - s.kl, 1e-12);
  }
  // The selection is the two largest gains.
  std::vector<SmartScore> sorted = r.scores;
  std::sort(sorted.begin(), sorted.end(), [](const SmartScore& a, const SmartScore& b) { return a.gain > b.gain; });
  std::vector<int64_t> want = {sorted[0].layer, sorted[1].layer};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(r.selected, want);
  EXPECT_THROW(smart_select(*teacher, *mla, *lin, ids, 5), Error);
}

}  // namespace
}  // namespace hylo

namespace hylo {
namespace {

TEST(Upcycle, DynamicKvRankPerLayer) {
  auto teacher = CausalLM::random(small_teacher(false), 10);
  LayerPlan plan = plan_of(
      "mla_layers: [0, 1, 2]\nlinear: gdn\n"
      "mla: {q_lora_rank: 48, kv_energy: 0.8, qk_nope_head_dim: 8, qk_rope_head_dim: 8, num_kv_groups: 2}\n"
      "gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 48}\n");
  UpcycleResult r = upcycle(*teacher, plan, quiet()).value_or_throw();
  auto tp = params_of(*teacher);
  for (int64_t i = 0; i < 3; ++i) {
    // The rank each layer got is X-EcoMLA's energy rank of that layer's own stacked [W_k; W_v] spectrum.
    at::Tensor wk = tp.at("model.layers." + std::to_string(i) + ".self_attn.k_proj.weight").to(at::kDouble);
    at::Tensor wv = tp.at("model.layers." + std::to_string(i) + ".self_attn.v_proj.weight").to(at::kDouble);
    at::Tensor s = at::linalg_svdvals(at::cat({wk, wv}, 0));  // G = Hkv: no repeat
    std::vector<double> sv(s.data_ptr<double>(), s.data_ptr<double>() + s.size(0));
    const int64_t want = energy_rank(sv, 0.8);
    EXPECT_EQ(r.model->config().layers[i].mla.kv_lora_rank, want) << "layer " << i;
    EXPECT_EQ(r.report.layers[i].kv_rank, want);
    EXPECT_LE(*r.report.layers[i].kv_tail, 0.2 + 1e-12);
  }
  EXPECT_EQ(numel_of(*r.model), parameter_count(r.model->config()));
}

}  // namespace
}  // namespace hylo
