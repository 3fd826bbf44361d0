// CausalLM: the model hylo runs -- embeddings, a list of decoder blocks (RMSNorm, token mixer, RMSNorm,
// SwiGLU MLP), final norm and LM head. A Transformer teacher is the case where every mixer is gqa; hybrids
// mix gqa / mla / gdn / mamba2 per ModelConfig.layers.
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hylo/config/model_config.h"
#include "hylo/model/mixer.h"

namespace hylo {

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::Device(at::kCPU);
};

// Per-sequence state of the whole model: one MixerState per layer plus the number of tokens consumed.
struct ModelState {
  std::vector<std::unique_ptr<MixerState>> layers;
  int64_t length = 0;  // tokens already processed (the position of the next token)
  int64_t max_tokens = 0;
  int64_t bytes() const;
};

class CausalLM {
 public:
  // MODEL is an HF directory (config.json + safetensors), a GGUF file, or a hylo checkpoint directory.
  static std::unique_ptr<CausalLM> load(const std::filesystem::path& model, const LoadOptions& options = {});
  // Parameters allocated with the config's shapes and deterministically random-initialised from `seed`.
  static std::unique_ptr<CausalLM> random(const ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const at::TensorOptions& options() const { return options_; }

  std::unique_ptr<ModelState> new_state(int64_t batch, int64_t max_tokens) const;

  // ids: [B, T] int64. With state == nullptr: a stateless forward from position 0. With a state: continues
  // at state->length and advances it. Returns the final hidden states [B, T, D] (after the final norm).
  at::Tensor forward_hidden(const at::Tensor& ids, ModelState* state = nullptr);
  // Logits [B, T, V] in fp32.
  at::Tensor forward(const at::Tensor& ids, ModelState* state = nullptr);
  at::Tensor lm_head(const at::Tensor& hidden) const;  // [.., D] -> [.., V] fp32

  // Every parameter with its checkpoint name (tied heads are visited once, as the embedding).
  void visit_parameters(const ParamVisitor& visit);

  // Block-level access for training (train/): per-layer teacher forcing (Enhanced ILD), activation checkpointing
  // per block and the logit-free KL. forward_hidden is exactly embed -> forward_block for each block -> final_norm.
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  at::Tensor embed(const at::Tensor& ids) const;  // ids [B, T] int64 on the model's device -> [B, T, D]
  struct BlockOutput {
    at::Tensor hidden;     // [B, T, D] the block's output (input + mixer out + MLP out)
    at::Tensor mixer_out;  // [B, T, D] the token mixer's output before the residual add
  };
  // Stateless forward of block i on its input h [B, T, D]; positions [T] int64.
  BlockOutput forward_block(int64_t i, const at::Tensor& h, const at::Tensor& positions);
  at::Tensor final_norm(const at::Tensor& h) const;  // [B, T, D] -> [B, T, D]
  const at::Tensor& head_weight() const { return lm_head_.defined() ? lm_head_ : embed_tokens_; }  // [V, D]
  // The parameters of block i / of the token mixers only, with the names visit_parameters gives them.
  void visit_block_parameters(int64_t i, const ParamVisitor& visit);

  // Block i with the token mixing supplied by the caller (the engine runs mixers over its own caches): input norm,
  // mix(mixer, x) with x [.., D] the normalised input, residual add, post norm, MLP, residual add. forward_hidden
  // and forward_block are this with the mixer's own forward.
  using MixFn = std::function<at::Tensor(Mixer& mixer, const at::Tensor& x)>;
  at::Tensor forward_block_with(int64_t i, const at::Tensor& h, const MixFn& mix, at::Tensor* mixer_out = nullptr);
  Mixer& mixer(int64_t i);
  void visit_mixer_parameters(const ParamVisitor& visit);

  // Where the tokenizer for this model lives (the model directory or the GGUF file).
  const std::filesystem::path& source() const { return source_; }

  CausalLM(ModelConfig config, const at::TensorOptions& options);
  ~CausalLM();

  struct Block;

 private:
  ModelConfig config_;
  at::TensorOptions options_;
  std::filesystem::path source_;
  at::Tensor embed_tokens_, final_norm_, lm_head_;  // lm_head_ undefined when tied
  std::vector<std::unique_ptr<Block>> blocks_;
};

}  // namespace hylo
