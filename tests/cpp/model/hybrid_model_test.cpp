// A hybrid CausalLM mixing all four mixer kinds: a saved hylo checkpoint reloads bit-identically (config,
// every parameter, logits), and greedy decoding through the per-layer states (KV cache, absorbed MLA over
// the latent cache, recurrent GDN and Mamba2 steps) yields the same 64 tokens as recomputing the whole
// sequence statelessly at every step. AMD's released layout (backbone config.json + hybrid_config.json, GDN
// dims only in the tensor shapes, a separate lm_head although the backbone ties) imports to the same model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "hylo/config/hf_config.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/infer/generate.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/checkpoint.h"
#include "shared/tiny_models.h"

namespace hylo {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("hylo-hybrid-test-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

fs::path tokenizer_json() { return fs::path(HYLO_SOURCE_DIR) / "tests/data/tokenizer/tiny_bytelevel.json"; }

TEST(HybridModel, SaveReloadIsBitIdentical) {
  ModelConfig config = mixed_config();
  LoadOptions o;
  auto model = CausalLM::random(config, /*seed=*/11, o);
  TempDir tmp;
  const fs::path dir = tmp.path / "ckpt";
  fs::copy_file(tokenizer_json(), tmp.path / "tokenizer.json");
  save_checkpoint(*model, dir, tmp.path / "tokenizer.json").value_or_throw();
  ASSERT_TRUE(fs::exists(dir / "config.json"));
  ASSERT_TRUE(fs::exists(dir / "model.safetensors"));

  auto reloaded = CausalLM::load(dir, o);
  ASSERT_EQ(reloaded->config().num_layers(), 4);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ(reloaded->config().layers[i].mixer, config.layers[i].mixer) << "layer " << i;
  EXPECT_EQ(hybrid_block_to_json(reloaded->config()), hybrid_block_to_json(config));

  std::map<std::string, at::Tensor> before;
  model->visit_parameters([&](const std::string& n, at::Tensor& t) { before[n] = t; });
  size_t seen = 0;
  reloaded->visit_parameters([&](const std::string& n, at::Tensor& t) {
    ++seen;
    ASSERT_TRUE(before.count(n)) << n;
    EXPECT_TRUE(at::equal(before[n], t)) << n << " differs after reload";
  });
  EXPECT_EQ(seen, before.size());

  at::Tensor ids = at::arange(1, 40, at::kLong).remainder(config.vocab_size).unsqueeze(0);  // [1, 39]
  EXPECT_TRUE(at::equal(model->forward(ids), reloaded->forward(ids)));
}

TEST(HybridModel, StatefulGreedyDecodeEqualsFullRecomputation) {
  ModelConfig config = mixed_config();
  LoadOptions o;
  o.dtype = at::kDouble;  // fp64: argmax ties between the two paths cannot arise from rounding
  auto model = CausalLM::random(config, /*seed=*/5, o);
  const std::vector<int64_t> prompt = {3, 17, 42, 8, 99, 23, 5};

  GenerateOptions g;
  g.max_new_tokens = 64;
  g.use_default_eos = false;
  g.sampling.temperature = 0.0;
  GenerateResult stateful = generate(*model, nullptr, prompt, g);
  ASSERT_EQ(stateful.ids.size(), 64u);

  std::vector<int64_t> seq = prompt;
  std::vector<int64_t> recomputed;
  for (int step = 0; step < 64; ++step) {
    at::Tensor ids = at::tensor(seq, at::kLong).unsqueeze(0);  // [1, T]
    at::Tensor logits = model->forward(ids);                  // [1, T, V], no state: whole sequence
    int64_t next = logits[0][-1].argmax().item<int64_t>();
    recomputed.push_back(next);
    seq.push_back(next);
  }
  EXPECT_EQ(stateful.ids, recomputed);
}

// The backbone's HF config.json as AMD ships it beside hybrid_config.json (tied embeddings, as Llama-3.2 has).
nlohmann::json amd_backbone_json() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 101}, {"hidden_size", 48},
          {"intermediate_size", 64}, {"num_hidden_layers", 4}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"head_dim", 12}, {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 512},
          {"tie_word_embeddings", true}, {"rope_theta", 10000.0}, {"hidden_act", "silu"}};
}

// hybrid_config.json with the keys of Zebra-Llama's HybridConfig (MLA dims, Mamba2 d_inner/d_xb/ssm_cfg).
nlohmann::json amd_hybrid_json() {
  return {{"hidden_size", 48}, {"intermediate_size", 64}, {"hidden_act", "silu"}, {"n_layer", 4},
          {"mla_layers", {1, 3}}, {"rms_norm_eps", 1e-5}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
          {"kv_lora_rank", 12}, {"q_lora_rank", 16}, {"use_lora_layer_norm", false}, {"use_full_kv_head", false},
          {"layer_rank_list", {{"3", {{"q_rank", 24}, {"kv_rank", 8}}}}}, {"qk_rope_head_dim", 4},
          {"v_head_dim", 8}, {"qk_nope_head_dim", 8}, {"max_position_embeddings", 512}, {"rope_theta", 10000.0},
          {"rope_scaling", {{"factor", 4.0}, {"original_max_position_embeddings", 32}, {"rope_type", "yarn"}}},
          {"attention_bias", false}, {"d_model", 48},
          {"ssm_cfg", {{"expand", 1}, {"ngroups", 4}, {"d_state", 12}, {"repeat_kv_before_conv", false}}},
          {"d_inner", 48}, {"d_xb", 24}};
}

// The same model in our own terms: MLA at 1 and 3 (layer 3 with its own ranks), `linear` elsewhere, with
// the dims the importer must infer.
ModelConfig amd_equivalent_config(MixerKind linear) {
  ModelConfig c = model_config_from_hf_json(amd_backbone_json(), "amd").value_or_throw();
  c.tie_word_embeddings = false;
  for (int64_t i = 0; i < 4; ++i) {
    LayerSpec& l = c.layers[i];
    if (i == 1 || i == 3) {
      l.mixer = MixerKind::kMla;
      l.mla = i == 3 ? tiny_mla(/*q_rank=*/24, /*kv_rank=*/8) : tiny_mla(/*q_rank=*/16, /*kv_rank=*/12);
    } else if (linear == MixerKind::kGdn) {
      l.mixer = MixerKind::kGdn;
      l.gdn = GdnSpec{};
      l.gdn.num_heads = 3;
      l.gdn.head_k_dim = 8;
      l.gdn.head_v_dim = 16;
      l.gdn.norm_eps = 1e-5;
    } else {
      l.mixer = MixerKind::kMamba2;
      l.mamba2 = Mamba2Spec{};
      l.mamba2.n_heads = 4;
      l.mamba2.head_dim = 12;
      l.mamba2.d_state = 12;
      l.mamba2.d_inner = 48;
      l.mamba2.d_xb = 24;
      l.mamba2.norm_group_size = 12;
      l.mamba2.norm_eps = 1e-5;
    }
  }
  return c;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2);
}

class AmdLayout : public ::testing::TestWithParam<MixerKind> {};

TEST_P(AmdLayout, ImportsToTheSameModel) {
  const ModelConfig config = amd_equivalent_config(GetParam());
  LoadOptions o;
  auto model = CausalLM::random(config, /*seed=*/21, o);
  TempDir tmp;
  const fs::path dir = tmp.path / "amd";
  fs::copy_file(tokenizer_json(), tmp.path / "tokenizer.json");
  save_checkpoint(*model, dir, tmp.path / "tokenizer.json").value_or_throw();
  // Our tensor names are AMD's (model.layers.{i}.mla.*, .gdn.*, .mamba.*, lm_head.weight); only the config differs.
  write_json(dir / "config.json", amd_backbone_json());
  write_json(dir / "hybrid_config.json", amd_hybrid_json());

  auto imported = CausalLM::load(dir, o);
  EXPECT_EQ(hybrid_block_to_json(imported->config()), hybrid_block_to_json(config));
  EXPECT_FALSE(imported->config().tie_word_embeddings);
  at::Tensor ids = at::arange(2, 30, at::kLong).unsqueeze(0);  // [1, 28]
  EXPECT_TRUE(at::equal(model->forward(ids), imported->forward(ids)));
}

INSTANTIATE_TEST_SUITE_P(HybridModel, AmdLayout, ::testing::Values(MixerKind::kGdn, MixerKind::kMamba2),
                         [](const auto& info) { return std::string(mixer_kind_name(info.param)); });

TEST(HybridModel, AmdLayoutErrorsNameTheFileAndLayer) {
  nlohmann::json hybrid = amd_hybrid_json();
  hybrid["mla_layers"] = {1, 7};
  auto none = [](const std::string&) -> std::optional<std::vector<int64_t>> { return std::nullopt; };
  auto r = import_amd_hybrid_config(amd_backbone_json(), hybrid, none, "/ckpt");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("/ckpt/hybrid_config.json"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("7"), std::string::npos) << r.error();
  // Layer 0 is neither MLA nor backed by gdn.* / mamba.* tensors.
  auto r2 = import_amd_hybrid_config(amd_backbone_json(), amd_hybrid_json(), none, "/ckpt");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().find("layer 0"), std::string::npos) << r2.error();
}

}  // namespace
}  // namespace hylo
