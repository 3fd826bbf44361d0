// A hybrid CausalLM mixing all four mixer kinds: a saved hylo checkpoint reloads bit-identically (config,
// every parameter, logits), and greedy decoding through the per-layer states (KV cache, absorbed MLA over
// the latent cache, recurrent GDN and Mamba2 steps) yields the same 64 tokens as recomputing the whole
// sequence statelessly at every step.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "hylo/config/hf_config.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/infer/generate.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/checkpoint.h"

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

ModelConfig mixed_config() {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 101}, {"hidden_size", 48},
                      {"intermediate_size", 64}, {"num_hidden_layers", 4}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"head_dim", 12}, {"rms_norm_eps", 1e-5},
                      {"max_position_embeddings", 512}, {"tie_word_embeddings", true},
                      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  ModelConfig c = model_config_from_hf_json(j, "mixed").value_or_throw();
  // Layer 0 stays gqa; 1 becomes MLA (YaRN on its rope slice), 2 GDN, 3 Mamba2.
  LayerSpec& mla = c.layers[1];
  mla.mixer = MixerKind::kMla;
  mla.mla = MlaSpec{};
  mla.mla.num_heads = 4;
  mla.mla.q_lora_rank = 16;
  mla.mla.kv_lora_rank = 12;
  mla.mla.qk_nope_head_dim = 8;
  mla.mla.qk_rope_head_dim = 4;
  mla.mla.v_head_dim = 8;
  mla.mla.num_kv_groups = 2;
  mla.mla.rope.theta = 10000.0;
  mla.mla.rope.type = "yarn";
  mla.mla.rope.factor = 4.0;
  mla.mla.rope.original_max_position_embeddings = 32;
  LayerSpec& gdn = c.layers[2];
  gdn.mixer = MixerKind::kGdn;
  gdn.gdn.num_heads = 2;
  gdn.gdn.head_k_dim = 8;
  gdn.gdn.head_v_dim = 16;
  LayerSpec& m2 = c.layers[3];
  m2.mixer = MixerKind::kMamba2;
  m2.mamba2.n_heads = 4;
  m2.mamba2.head_dim = 8;
  m2.mamba2.d_state = 8;
  m2.mamba2.d_inner = 32;
  m2.mamba2.d_xb = 16;
  m2.mamba2.norm_group_size = 8;
  m2.mamba2.chunk_size = 16;
  c.tie_word_embeddings = false;  // hybrids store their head untied, as AMD's checkpoints do
  return c;
}

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

}  // namespace
}  // namespace hylo
