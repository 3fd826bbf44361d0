// HF config.json import: the four supported families with their defaults, both RoPE spellings, and clear
// errors for what is not supported.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "hylo/config/hf_config.h"

namespace hylo {
namespace {

using nlohmann::json;

json llama_base() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 311, "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
    "hidden_act": "silu", "rms_norm_eps": 1e-5, "max_position_embeddings": 128, "bos_token_id": 1,
    "eos_token_id": [2, 3], "tie_word_embeddings": true, "rope_theta": 500000.0
  })");
}

ModelConfig ok(const json& j) {
  auto r = model_config_from_hf_json(j, "test/config.json");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error());
  return r.ok() ? r.value() : ModelConfig{};
}

std::string err(const json& j) {
  auto r = model_config_from_hf_json(j, "test/config.json");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.error();
}

TEST(HfConfig, LlamaDefaultsAndLegacyRope) {
  ModelConfig c = ok(llama_base());
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 311);
  ASSERT_EQ(c.num_layers(), 2);
  EXPECT_EQ(c.layers[0].gqa.num_heads, 8);
  EXPECT_EQ(c.layers[0].gqa.num_kv_heads, 2);
  EXPECT_EQ(c.layers[0].gqa.head_dim, 8);  // hidden / heads
  EXPECT_FALSE(c.layers[0].gqa.qkv_bias);
  EXPECT_FALSE(c.layers[0].gqa.qk_norm);
  EXPECT_EQ(c.layers[1].intermediate_size, 96);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 3}));
}

TEST(HfConfig, Llama3RopeInBothSpellings) {
  json legacy = llama_base();
  legacy["rope_scaling"] = json::parse(R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 32})");
  json v5 = llama_base();
  v5.erase("rope_theta");
  v5["rope_parameters"] = json::parse(R"({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32})");
  for (const json& j : {legacy, v5}) {
    ModelConfig c = ok(j);
    EXPECT_EQ(c.rope.type, "llama3");
    EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
    EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
    EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 32);
  }
}

TEST(HfConfig, YarnDefaultsFollowTransformers) {
  json j = llama_base();
  j["rope_parameters"] = json::parse(R"({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
      "beta_fast": null, "original_max_position_embeddings": 32})");
  ModelConfig c = ok(j);
  EXPECT_EQ(c.rope.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope.beta_slow, 1.0);
  EXPECT_TRUE(c.rope.truncate);
  EXPECT_FALSE(c.rope.attention_factor.has_value());
  // No factor: max_position_embeddings / original.
  j["rope_parameters"].erase("factor");
  EXPECT_DOUBLE_EQ(ok(j).rope.factor, 128.0 / 32.0);
}

TEST(HfConfig, Qwen2BiasAndSlidingLayers) {
  json j = llama_base();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["model_type"] = "qwen2";
  j["num_hidden_layers"] = 4;
  j["use_sliding_window"] = true;
  j["sliding_window"] = 16;
  j["max_window_layers"] = 2;
  ModelConfig c = ok(j);
  EXPECT_TRUE(c.layers[0].gqa.qkv_bias);
  EXPECT_FALSE(c.layers[0].gqa.o_bias);
  EXPECT_FALSE(c.layers[1].gqa.sliding_window.has_value());
  EXPECT_EQ(c.layers[2].gqa.sliding_window, 16);
  EXPECT_EQ(c.layers[3].gqa.sliding_window, 16);
  j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "sliding_attention"};
  c = ok(j);
  EXPECT_EQ(c.layers[0].gqa.sliding_window, 16);
  EXPECT_FALSE(c.layers[1].gqa.sliding_window.has_value());
  j["use_sliding_window"] = false;
  c = ok(j);
  for (const auto& l : c.layers) EXPECT_FALSE(l.gqa.sliding_window.has_value());
}

TEST(HfConfig, Qwen3DefaultHeadDimAndQkNorm) {
  json j = llama_base();
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["model_type"] = "qwen3";
  j["attention_bias"] = true;
  ModelConfig c = ok(j);
  EXPECT_EQ(c.layers[0].gqa.head_dim, 128);  // Qwen3Config's default, not hidden/heads
  EXPECT_TRUE(c.layers[0].gqa.qk_norm);
  EXPECT_TRUE(c.layers[0].gqa.qkv_bias);
  EXPECT_TRUE(c.layers[0].gqa.o_bias);
  j["head_dim"] = 24;
  EXPECT_EQ(ok(j).layers[0].gqa.head_dim, 24);
}

TEST(HfConfig, MistralWindowOnEveryLayer) {
  json j = llama_base();
  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["sliding_window"] = 7;
  j["eos_token_id"] = 2;
  ModelConfig c = ok(j);
  for (const auto& l : c.layers) EXPECT_EQ(l.gqa.sliding_window, 7);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
}

TEST(HfConfig, RoundTripThroughJson) {
  json j = llama_base();
  j["rope_parameters"] = json::parse(R"({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
      "original_max_position_embeddings": 32, "attention_factor": 1.25})");
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  j["head_dim"] = 12;
  ModelConfig a = ok(j);
  ModelConfig b = ok(hf_config_to_json(a));
  EXPECT_EQ(b.architecture, a.architecture);
  EXPECT_EQ(b.layers.size(), a.layers.size());
  EXPECT_EQ(b.layers[0].gqa.head_dim, 12);
  EXPECT_TRUE(b.layers[0].gqa.qkv_bias && b.layers[0].gqa.o_bias && b.layers[0].mlp_bias);
  EXPECT_EQ(b.rope.type, "yarn");
  EXPECT_EQ(b.rope.attention_factor, 1.25);
  EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
  EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
}

TEST(HfConfig, ErrorsNameFileFieldAndSupported) {
  json j = llama_base();
  j["architectures"] = {"GPT2LMHeadModel"};
  std::string e = err(j);
  EXPECT_NE(e.find("test/config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("GPT2LMHeadModel"), std::string::npos) << e;
  EXPECT_NE(e.find("Qwen3ForCausalLM"), std::string::npos) << e;

  j = llama_base();
  j["rope_scaling"] = json::parse(R"({"type": "dynamic", "factor": 2.0})");
  e = err(j);
  EXPECT_NE(e.find("rope_scaling.type"), std::string::npos) << e;
  EXPECT_NE(e.find("dynamic"), std::string::npos) << e;
  EXPECT_NE(e.find("llama3, yarn"), std::string::npos) << e;

  j = llama_base();
  j["hidden_act"] = "gelu";
  e = err(j);
  EXPECT_NE(e.find("'hidden_act'"), std::string::npos) << e;
  EXPECT_NE(e.find("silu"), std::string::npos) << e;

  j = llama_base();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(err(j).find("num_key_value_heads"), std::string::npos);

  j = llama_base();
  j["vocab_size"] = "many";
  EXPECT_NE(err(j).find("'vocab_size' must be an integer"), std::string::npos);

  j = llama_base();
  j.erase("hidden_size");
  EXPECT_NE(err(j).find("'hidden_size' is required"), std::string::npos);

  j = llama_base();
  j["rope_parameters"] = json::parse(R"({"rope_type": "linear"})");
  EXPECT_NE(err(j).find("'rope_parameters.factor' is required"), std::string::npos);

  j = llama_base();
  j["rope_parameters"] = json::parse(R"({"rope_type": "default", "partial_rotary_factor": 0.5})");
  EXPECT_NE(err(j).find("partial_rotary_factor"), std::string::npos);

  j = llama_base();
  j["model_type"] = "qwen2";
  EXPECT_NE(err(j).find("'model_type'"), std::string::npos);

  EXPECT_NE(err(json::array()).find("JSON object"), std::string::npos);
}

TEST(HfConfig, LoadHfConfigNamesMissingFile) {
  auto r = load_hf_config("/nonexistent/dir");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("/nonexistent/dir/config.json"), std::string::npos) << r.error();
}

// config.json is parsed strictly: a duplicate key (which nlohmann alone resolves silently to the last value) and
// a syntax error (with its position) are errors that name the file.
TEST(HfConfig, LoadHfConfigIsStrictJson) {
  const auto dir = std::filesystem::temp_directory_path() / ("hylo_hf_strict_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& text) {
    std::ofstream(dir / "config.json", std::ios::binary | std::ios::trunc) << text;
  };
  write("{\"model_type\": \"llama\", \"hidden_size\": 64, \"hidden_size\": 128}");
  auto dup = load_hf_config(dir);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().find((dir / "config.json").string()), std::string::npos) << dup.error();
  EXPECT_NE(dup.error().find("duplicate key \"hidden_size\""), std::string::npos) << dup.error();
  write("{\"model_type\": \"llama\",\n \"hidden_size\": }");
  auto bad = load_hf_config(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("invalid JSON"), std::string::npos) << bad.error();
  EXPECT_NE(bad.error().find("line 2"), std::string::npos) << bad.error();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hylo
