// GGUF as a model: the llama.cpp <-> HF name table, ModelConfig from GGUF metadata (llama, qwen2, qwen3), and
// the q/k un-permutation: an HF matrix permuted the way convert_hf_to_gguf.py does it must come back exactly.
#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>

#include "hylo/config/gguf_config.h"
#include "hylo/io/gguf.h"
#include "hylo/io/gguf_names.h"
#include "io_test_util.h"

namespace hylo::io {
namespace {

using testing::Bytes;
using testing::GgufBuilder;
namespace fs = std::filesystem;

TEST(GgufNames, TableBothWays) {
  const std::pair<const char*, const char*> pairs[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
      {"blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight"},
      {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"},
      {"blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"},
      {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"},
      {"blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.3.attn_q_norm.weight", "model.layers.3.self_attn.q_norm.weight"},
      {"blk.3.attn_k_norm.weight", "model.layers.3.self_attn.k_norm.weight"},
      {"blk.7.ffn_gate.weight", "model.layers.7.mlp.gate_proj.weight"},
      {"blk.7.ffn_up.weight", "model.layers.7.mlp.up_proj.weight"},
      {"blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"},
  };
  for (auto [g, h] : pairs) {
    EXPECT_EQ(gguf_to_hf_name(g).value_or("<none>"), h);
    EXPECT_EQ(hf_to_gguf_name(h).value_or("<none>"), g);
  }
  for (const char* bad : {"rope_freqs.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.1.attn_q",
                          "blk..attn_q.weight", "blk.1.attn_qq.weight", "token_embd", ""})
    EXPECT_FALSE(gguf_to_hf_name(bad).has_value()) << bad;
  EXPECT_FALSE(hf_to_gguf_name("model.layers.1.self_attn.rotary_emb.inv_freq").has_value());
}

// A tiny llama-style GGUF with F32 tensors; q/k hold the HF matrices permuted as llama.cpp stores them.
struct Tiny {
  int64_t hidden = 16, heads = 4, kv = 2, head_dim = 6, ffn = 24, layers = 2, vocab = 11;
};

// convert_hf_to_gguf.py LlamaModel.permute: rows reshaped (n_head, 2, hd/2) and swapped to (n_head, hd/2, 2).
std::vector<float> llama_permute(const std::vector<float>& w, int64_t n_head, int64_t rows, int64_t cols) {
  std::vector<float> out(w.size());
  const int64_t half = rows / n_head / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t d = 0; d < half; ++d)
        for (int64_t c = 0; c < cols; ++c)
          out[((h * half + d) * 2 + t) * cols + c] = w[((h * 2 + t) * half + d) * cols + c];
  return out;
}

std::vector<float> iota_f(int64_t n, float start) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

GgufBuilder tiny_model(const std::string& arch, const Tiny& t, bool permute, bool qwen_extras) {
  GgufBuilder g;
  const std::string p = arch + ".";
  g.kv_str("general.architecture", arch);
  g.kv_u32(p + "block_count", static_cast<uint32_t>(t.layers));
  g.kv_u32(p + "context_length", 4096);
  g.kv_u32(p + "embedding_length", static_cast<uint32_t>(t.hidden));
  g.kv_u32(p + "feed_forward_length", static_cast<uint32_t>(t.ffn));
  g.kv_u32(p + "attention.head_count", static_cast<uint32_t>(t.heads));
  g.kv_u32(p + "attention.head_count_kv", static_cast<uint32_t>(t.kv));
  g.kv_u32(p + "attention.key_length", static_cast<uint32_t>(t.head_dim));
  g.kv_u32(p + "rope.dimension_count", static_cast<uint32_t>(t.head_dim));
  g.kv_f32(p + "rope.freq_base", 500000.0f);
  g.kv_f32(p + "attention.layer_norm_rms_epsilon", 1e-5f);
  g.kv_u32("tokenizer.ggml.bos_token_id", 1);
  g.kv_u32("tokenizer.ggml.eos_token_id", 2);
  g.kv_u32("tokenizer.ggml.eot_token_id", 3);
  const auto u = [](int64_t x) { return static_cast<uint64_t>(x); };
  g.tensor("token_embd.weight", {u(t.hidden), u(t.vocab)}, 0, testing::f32_bytes(iota_f(t.hidden * t.vocab, 0)));
  for (int64_t l = 0; l < t.layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const int64_t q_rows = t.heads * t.head_dim, k_rows = t.kv * t.head_dim;
    auto q = iota_f(q_rows * t.hidden, 1000.0f * static_cast<float>(l));
    auto k = iota_f(k_rows * t.hidden, 5000.0f + 1000.0f * static_cast<float>(l));
    if (permute) {
      q = llama_permute(q, t.heads, q_rows, t.hidden);
      k = llama_permute(k, t.kv, k_rows, t.hidden);
    }
    g.tensor(b + "attn_q.weight", {u(t.hidden), u(q_rows)}, 0, testing::f32_bytes(q));
    g.tensor(b + "attn_k.weight", {u(t.hidden), u(k_rows)}, 0, testing::f32_bytes(k));
    g.tensor(b + "attn_v.weight", {u(t.hidden), u(k_rows)}, 0, testing::f32_bytes(iota_f(k_rows * t.hidden, 0)));
    g.tensor(b + "attn_output.weight", {u(q_rows), u(t.hidden)}, 0, testing::f32_bytes(iota_f(q_rows * t.hidden, 0)));
    if (qwen_extras) {
      auto qb = iota_f(q_rows, 0.5f);
      g.tensor(b + "attn_q.bias", {u(q_rows)}, 0, testing::f32_bytes(qb));
      g.tensor(b + "attn_q_norm.weight", {u(t.head_dim)}, 0, testing::f32_bytes(iota_f(t.head_dim, 1)));
      g.tensor(b + "attn_k_norm.weight", {u(t.head_dim)}, 0, testing::f32_bytes(iota_f(t.head_dim, 1)));
    }
  }
  return g;
}

TEST(GgufConfig, LlamaFromMetadataAndTensors) {
  auto dir = testing::temp_dir();
  Tiny t;
  testing::write_bytes(dir / "tiny.gguf", tiny_model("llama", t, true, false).build());
  auto f = GgufFile::open(dir / "tiny.gguf");
  ASSERT_TRUE(f.ok()) << f.error();
  auto c = model_config_from_gguf(*f);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, t.hidden);
  EXPECT_EQ(c->vocab_size, t.vocab);
  EXPECT_EQ(c->num_layers(), t.layers);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->rope.type, "default");
  EXPECT_EQ(c->rms_norm_eps, static_cast<double>(1e-5f));
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id.value_or(-1), 1);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2, 3}));
  for (const auto& l : c->layers) {
    EXPECT_EQ(l.mixer, MixerKind::kGqa);
    EXPECT_EQ(l.gqa.num_heads, t.heads);
    EXPECT_EQ(l.gqa.num_kv_heads, t.kv);
    EXPECT_EQ(l.gqa.head_dim, t.head_dim);
    EXPECT_FALSE(l.gqa.qkv_bias);
    EXPECT_FALSE(l.gqa.qk_norm);
    EXPECT_EQ(l.intermediate_size, t.ffn);
  }
}

TEST(GgufConfig, QwenBiasesAndNormsComeFromTensors) {
  auto dir = testing::temp_dir();
  Tiny t;
  testing::write_bytes(dir / "q3.gguf", tiny_model("qwen3", t, false, true).build());
  auto f = GgufFile::open(dir / "q3.gguf");
  ASSERT_TRUE(f.ok()) << f.error();
  auto c = model_config_from_gguf(*f);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->architecture, "Qwen3ForCausalLM");
  EXPECT_TRUE(c->layers[0].gqa.qk_norm);
  EXPECT_TRUE(c->layers[0].gqa.qkv_bias);
  // qwen GGUFs are not permuted: q comes back as stored.
  std::vector<int64_t> shape;
  auto q = load_gguf_tensor_hf_layout(*f, "blk.1.attn_q.weight", *c, &shape);
  ASSERT_TRUE(q.ok()) << q.error();
  EXPECT_EQ(shape, (std::vector<int64_t>{t.heads * t.head_dim, t.hidden}));
  EXPECT_EQ(*q, iota_f(t.heads * t.head_dim * t.hidden, 1000.0f));
}

TEST(GgufConfig, LlamaQkUnpermutation) {
  auto dir = testing::temp_dir();
  Tiny t;
  testing::write_bytes(dir / "tiny.gguf", tiny_model("llama", t, true, true).build());
  auto f = GgufFile::open(dir / "tiny.gguf");
  ASSERT_TRUE(f.ok()) << f.error();
  auto c = model_config_from_gguf(*f);
  ASSERT_TRUE(c.ok()) << c.error();
  for (int64_t l = 0; l < t.layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    std::vector<int64_t> shape;
    auto q = load_gguf_tensor_hf_layout(*f, b + "attn_q.weight", *c, &shape);
    ASSERT_TRUE(q.ok()) << q.error();
    EXPECT_EQ(shape, (std::vector<int64_t>{t.heads * t.head_dim, t.hidden}));
    EXPECT_EQ(*q, iota_f(t.heads * t.head_dim * t.hidden, 1000.0f * static_cast<float>(l)));
    auto k = load_gguf_tensor_hf_layout(*f, b + "attn_k.weight", *c, &shape);
    ASSERT_TRUE(k.ok()) << k.error();
    EXPECT_EQ(*k, iota_f(t.kv * t.head_dim * t.hidden, 5000.0f + 1000.0f * static_cast<float>(l)));
    // The stored tensor really is permuted (the un-permutation is not the identity here).
    EXPECT_NE(f->dequantize(b + "attn_q.weight").value(), *q);
    // v and biases of other projections are untouched; the q bias is un-permuted like its rows.
    auto v = load_gguf_tensor_hf_layout(*f, b + "attn_v.weight", *c, nullptr);
    EXPECT_EQ(*v, f->dequantize(b + "attn_v.weight").value());
    auto qb = load_gguf_tensor_hf_layout(*f, b + "attn_q.bias", *c, nullptr);
    ASSERT_TRUE(qb.ok());
    auto stored = f->dequantize(b + "attn_q.bias").value();
    EXPECT_EQ(llama_permute(*qb, t.heads, t.heads * t.head_dim, 1), stored);
  }
  EXPECT_FALSE(load_gguf_tensor_hf_layout(*f, "missing.weight", *c, nullptr).ok());
}

TEST(GgufConfig, Errors) {
  auto dir = testing::temp_dir();
  Tiny t;
  auto expect_config_error = [&](GgufBuilder g, std::initializer_list<std::string> needles) {
    fs::path p = dir / "e.gguf";
    testing::write_bytes(p, g.build());
    auto f = GgufFile::open(p);
    ASSERT_TRUE(f.ok()) << f.error();
    auto c = model_config_from_gguf(*f);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().find(p.string()), std::string::npos) << c.error();
    for (const auto& n : needles) EXPECT_NE(c.error().find(n), std::string::npos) << c.error();
  };
  {
    auto g = tiny_model("llama", t, true, false);
    g.kvs[0].second.clear();
    testing::put<uint32_t>(g.kvs[0].second, testing::kString);
    testing::put_str(g.kvs[0].second, "mamba");
    expect_config_error(g, {"mamba", "llama, qwen2, qwen3"});
  }
  {
    auto g = tiny_model("llama", t, true, false);
    g.kvs.erase(g.kvs.begin() + 1);  // llama.block_count
    expect_config_error(g, {"llama.block_count", "missing"});
  }
  {
    auto g = tiny_model("llama", t, true, false);
    g.kv_str("llama.rope.scaling.type", "dynamic");
    expect_config_error(g, {"dynamic"});
  }
  {
    auto g = tiny_model("llama", t, true, false);
    g.kvs[8].second.clear();  // rope.dimension_count
    testing::put<uint32_t>(g.kvs[8].second, testing::kU32);
    testing::put<uint32_t>(g.kvs[8].second, 4);
    expect_config_error(g, {"partial rotary"});
  }
  {
    auto g = tiny_model("llama", t, true, false);
    g.tensor("rope_freqs.weight", {3}, 0, testing::f32_bytes({1, 2, 3}));
    expect_config_error(g, {"rope_freqs.weight"});
  }
  {
    auto g = tiny_model("llama", t, true, false);
    g.kvs[5].second.clear();  // head_count = 3, kv = 2
    testing::put<uint32_t>(g.kvs[5].second, testing::kU32);
    testing::put<uint32_t>(g.kvs[5].second, 3);
    expect_config_error(g, {"multiple"});
  }
  // YaRN keys are read.
  auto g = tiny_model("qwen2", t, false, false);
  g.kv_str("qwen2.rope.scaling.type", "yarn");
  g.kv_f32("qwen2.rope.scaling.factor", 4.0f);
  g.kv_u32("qwen2.rope.scaling.original_context_length", 32768);
  testing::write_bytes(dir / "y.gguf", g.build());
  auto f = GgufFile::open(dir / "y.gguf");
  ASSERT_TRUE(f.ok());
  auto c = model_config_from_gguf(*f);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->rope.type, "yarn");
  EXPECT_EQ(c->rope.factor, 4.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 32768);
}

TEST(GgufConfig, Teacher) {
  const char* path = std::getenv("HYLO_TEACHER_GGUF");
  if (path == nullptr || !fs::exists(path)) GTEST_SKIP() << "HYLO_TEACHER_GGUF not set";
  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.ok()) << f.error();
  auto c = model_config_from_gguf(*f);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->num_layers(), 30);
  EXPECT_EQ(c->hidden_size, 576);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->layers[0].gqa.num_heads, 9);
  EXPECT_EQ(c->layers[0].gqa.num_kv_heads, 3);
  EXPECT_EQ(c->layers[0].gqa.head_dim, 64);
  EXPECT_EQ(c->layers[0].intermediate_size, 1536);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->rope.theta, 100000.0);
  EXPECT_EQ(c->bos_token_id.value_or(-1), 1);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2}));
}

}  // namespace
}  // namespace hylo::io
