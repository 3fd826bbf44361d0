#include "hylo/model/causal_lm.h"

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hylo/config/hf_config.h"
#include "hylo/config/hybrid_config.h"
#include "hylo/core/result.h"
#include "hylo/io/safetensors.h"
#include "hylo/model/load_weights.h"
#include "hylo/ops/rms_norm.h"
#include "hylo/ops/swiglu.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {

// One decoder block with HF names: input_layernorm, the mixer (self_attn.* for gqa), post_attention_layernorm,
// mlp.{gate,up,down}_proj.
struct CausalLM::Block {
  at::Tensor input_norm, post_norm;     // [D], [D]
  std::unique_ptr<Mixer> mixer;
  at::Tensor gate_w, up_w, down_w;      // [F, D], [F, D], [D, F]
  at::Tensor gate_b, up_b, down_b;      // [F], [F], [D] or undefined (Llama mlp_bias)
  ops::PackedLinear gate_up;            // packed [gate; up] for inference (ops/packed_linear.h)
};

int64_t ModelState::bytes() const {
  int64_t n = 0;
  for (const auto& l : layers)
    if (l) n += l->bytes();
  return n;
}

CausalLM::CausalLM(ModelConfig config, const at::TensorOptions& options)
    : config_(std::move(config)), options_(options) {
  const int64_t v = config_.vocab_size, d = config_.hidden_size;
  if (v <= 0 || d <= 0 || config_.layers.empty())
    throw Error("CausalLM: config needs vocab_size > 0, hidden_size > 0 and at least one layer");
  // cuDNN's SDPA builds a new execution plan for every new key length, i.e. at every decode step (measured on an
  // H200: 55-59 ms per call with a new length vs 0.07 ms with a fixed one); the flash and memory-efficient
  // kernels have no such cost, so SDPA must not pick cuDNN.
  if (options_.device().is_cuda()) at::globalContext().setSDPUseCuDNN(false);
  embed_tokens_ = at::empty({v, d}, options_);
  final_norm_ = at::empty({d}, options_);
  if (!config_.tie_word_embeddings) lm_head_ = at::empty({v, d}, options_);
  for (const auto& spec : config_.layers) {
    auto block = std::make_unique<Block>();
    const int64_t f = spec.intermediate_size;
    if (f <= 0) throw Error("CausalLM: layer intermediate_size must be > 0");
    block->input_norm = at::empty({d}, options_);
    block->post_norm = at::empty({d}, options_);
    block->mixer = make_mixer(config_, spec, options_);
    block->gate_w = at::empty({f, d}, options_);
    block->up_w = at::empty({f, d}, options_);
    block->down_w = at::empty({d, f}, options_);
    if (spec.mlp_bias) {
      block->gate_b = at::empty({f}, options_);
      block->up_b = at::empty({f}, options_);
      block->down_b = at::empty({d}, options_);
    }
    blocks_.push_back(std::move(block));
  }
}

CausalLM::~CausalLM() = default;

void CausalLM::visit_block_parameters(int64_t i, const ParamVisitor& visit) {
  Block& b = *blocks_.at(static_cast<size_t>(i));
  const std::string p = "model.layers." + std::to_string(i) + ".";
  visit(p + "input_layernorm.weight", b.input_norm);
  b.mixer->visit_parameters(p, visit);
  visit(p + "post_attention_layernorm.weight", b.post_norm);
  visit(p + "mlp.gate_proj.weight", b.gate_w);
  if (b.gate_b.defined()) visit(p + "mlp.gate_proj.bias", b.gate_b);
  visit(p + "mlp.up_proj.weight", b.up_w);
  if (b.up_b.defined()) visit(p + "mlp.up_proj.bias", b.up_b);
  visit(p + "mlp.down_proj.weight", b.down_w);
  if (b.down_b.defined()) visit(p + "mlp.down_proj.bias", b.down_b);
}

void CausalLM::visit_mixer_parameters(const ParamVisitor& visit) {
  for (size_t i = 0; i < blocks_.size(); ++i)
    blocks_[i]->mixer->visit_parameters("model.layers." + std::to_string(i) + ".", visit);
}

void CausalLM::visit_parameters(const ParamVisitor& visit) {
  visit("model.embed_tokens.weight", embed_tokens_);
  for (size_t i = 0; i < blocks_.size(); ++i) visit_block_parameters(static_cast<int64_t>(i), visit);
  visit("model.norm.weight", final_norm_);
  if (lm_head_.defined()) visit("lm_head.weight", lm_head_);
}

std::unique_ptr<ModelState> CausalLM::new_state(int64_t batch, int64_t max_tokens) const {
  if (batch <= 0 || max_tokens <= 0) throw Error("new_state: batch and max_tokens must be > 0");
  auto state = std::make_unique<ModelState>();
  state->max_tokens = max_tokens;
  for (const auto& b : blocks_) state->layers.push_back(b->mixer->new_state(batch, max_tokens, options_));
  return state;
}

at::Tensor CausalLM::forward_hidden(const at::Tensor& ids_in, ModelState* state) {
  if (ids_in.dim() != 2) throw Error("CausalLM::forward: ids must be [B, T], got " + shape_str(ids_in.sizes()));
  // Ids from users (prompts, text files, calibration text) arrive on the CPU. An id outside the vocabulary there
  // means the tokenizer does not belong to this model; say so instead of ATen's index error from the embedding.
  if (ids_in.device().is_cpu() && ids_in.numel() > 0) {
    const int64_t lo = ids_in.min().item<int64_t>(), hi = ids_in.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
      throw Error("CausalLM::forward: token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the model's vocabulary of " +
                  std::to_string(config_.vocab_size) + " (is the tokenizer the model's own?)");
  }
  at::Tensor ids = ids_in.to(options_.device(), at::kLong);  // [B, T]
  const int64_t t = ids.size(1);
  const int64_t start = state ? state->length : 0;
  if (state && start + t > state->max_tokens)
    throw Error("CausalLM::forward: the state holds " + std::to_string(state->max_tokens) + " tokens; " +
                std::to_string(start) + " used, " + std::to_string(t) + " more requested");
  if (state && state->layers.size() != blocks_.size())
    throw Error("CausalLM::forward: the state has " + std::to_string(state->layers.size()) + " layers, model " +
                std::to_string(blocks_.size()));
  at::Tensor positions = at::arange(start, start + t, at::TensorOptions().dtype(at::kLong).device(options_.device()));
  at::Tensor h = at::embedding(embed_tokens_, ids);  // [B, T, D]
  for (size_t i = 0; i < blocks_.size(); ++i) {
    MixerState* st = state ? state->layers[i].get() : nullptr;
    h = forward_block_with(static_cast<int64_t>(i), h,
                           [&](Mixer& m, const at::Tensor& x) { return m.forward(x, positions, st); });
  }
  if (state) state->length += t;
  return ops::rms_norm(h, final_norm_, config_.rms_norm_eps);  // [B, T, D]
}

at::Tensor CausalLM::embed(const at::Tensor& ids) const { return at::embedding(embed_tokens_, ids); }

CausalLM::BlockOutput CausalLM::forward_block(int64_t i, const at::Tensor& h, const at::Tensor& positions) {
  BlockOutput out;
  out.hidden = forward_block_with(
      i, h, [&](Mixer& m, const at::Tensor& x) { return m.forward(x, positions, nullptr); }, &out.mixer_out);
  return out;
}

at::Tensor CausalLM::forward_block_with(int64_t i, const at::Tensor& h, const MixFn& mix, at::Tensor* mixer_out) {
  Block& b = *blocks_.at(static_cast<size_t>(i));
  const double eps = config_.rms_norm_eps;
  at::Tensor m = mix(*b.mixer, ops::rms_norm(h, b.input_norm, eps));  // [.., D]
  ops::AddRmsNorm post = ops::add_rms_norm(h, m, b.post_norm, eps);  // r = h + m, x = rms_norm(r): one kernel on CUDA
  const at::Tensor& r = post.sum;                                     // [.., D]
  const at::Tensor& x = post.normed;                                  // [.., D]
  if (mixer_out) *mixer_out = m;
  return r + ops::swiglu_mlp(b.gate_up, x, b.gate_w, b.up_w, b.down_w, b.gate_b, b.up_b, b.down_b);
}

Mixer& CausalLM::mixer(int64_t i) { return *blocks_.at(static_cast<size_t>(i))->mixer; }

at::Tensor CausalLM::final_norm(const at::Tensor& h) const { return ops::rms_norm(h, final_norm_, config_.rms_norm_eps); }

at::Tensor CausalLM::lm_head(const at::Tensor& hidden) const {
  const at::Tensor& w = lm_head_.defined() ? lm_head_ : embed_tokens_;  // [V, D]
  return at::linear(hidden, w).to(at::kFloat);                          // [.., V]
}

at::Tensor CausalLM::forward(const at::Tensor& ids, ModelState* state) { return lm_head(forward_hidden(ids, state)); }

std::unique_ptr<CausalLM> CausalLM::random(const ModelConfig& config, uint64_t seed, const LoadOptions& options) {
  auto model = std::make_unique<CausalLM>(config, at::TensorOptions().dtype(options.dtype).device(options.device));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  // Visit order is fixed, so the draw for each tensor is a function of (config, seed) alone. Norm weights
  // are drawn around 1 (not exactly 1) so that a mis-applied norm weight shows up in parity tests.
  model->visit_parameters([&](const std::string& name, at::Tensor& t) {
    const bool is_norm = name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0;
    at::Tensor r = at::randn(t.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
    r = is_norm ? 1.0 + 0.1 * r : 0.02 * r;
    t.copy_(r);
  });
  return model;
}

namespace detail {

void load_weights(CausalLM& model, const WeightSource& source) {
  std::set<std::string> expected;
  const auto& opts = model.options();
  model.visit_parameters([&](const std::string& name, at::Tensor& param) {
    expected.insert(name);
    auto shape = source.shape_of(name);
    if (!shape)
      throw Error(source.description + ": tensor '" + name + "' (expected shape " + shape_str(param.sizes()) +
                  ") is missing");
    if (at::IntArrayRef(*shape) != param.sizes())
      throw Error(source.description + ": tensor '" + name + "' has shape " + shape_str(*shape) + ", expected " +
                  shape_str(param.sizes()));
    at::Tensor t = source.load(name);
    if (!at::isFloatingType(t.scalar_type()))
      throw Error(source.description + ": tensor '" + name + "' has non-floating dtype " +
                  std::string(c10::toString(t.scalar_type())));
    param = t.to(opts.device(), opts.dtype().toScalarType()).contiguous();
  });
  std::vector<std::string> unexpected;
  for (const auto& name : source.names)
    if (!expected.count(name) && !(source.ignorable && source.ignorable(name))) unexpected.push_back(name);
  if (!unexpected.empty()) {
    std::string list;
    for (size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", " : "") + ("'" + unexpected[i] + "'");
    if (unexpected.size() > 5) list += ", ... (" + std::to_string(unexpected.size()) + " in all)";
    throw Error(source.description + ": unexpected tensors for " + model.config().architecture + " with " +
                std::to_string(model.config().num_layers()) + " layers: " + list);
  }
}

}  // namespace detail

namespace {

std::unique_ptr<CausalLM> load_hf_directory(const std::filesystem::path& dir, const LoadOptions& options) {
  // The tensor shapes are needed before the config is complete: AMD hybrids publish no GDN dims.
  auto ckpt = io::SafetensorsCheckpoint::open(dir).value_or_throw();
  auto shape_of = [&](const std::string& name) -> std::optional<std::vector<int64_t>> {
    const io::TensorInfo* info = ckpt.find(name);
    if (!info) return std::nullopt;
    return info->shape;
  };
  // A plain HF Transformer, a hylo hybrid (config.json with a `hybrid` block) or an AMD HyLo/Zebra hybrid
  // (hybrid_config.json beside config.json).
  ModelConfig config = load_model_dir_config(dir, shape_of).value_or_throw();
  auto model =
      std::make_unique<CausalLM>(config, at::TensorOptions().dtype(options.dtype).device(options.device));
  detail::WeightSource src;
  src.description = dir.string();
  src.names = ckpt.names();
  src.shape_of = shape_of;
  src.load = [&](const std::string& name) { return tensor_from_view(ckpt.view(name).value_or_throw()); };
  const bool tied = config.tie_word_embeddings;
  src.ignorable = [tied](const std::string& name) {
    // Old checkpoints store the rotary tables; tied ones sometimes also store the (identical) head.
    return name.ends_with("rotary_emb.inv_freq") || (tied && name == "lm_head.weight");
  };
  detail::load_weights(*model, src);
  return model;
}

}  // namespace

std::unique_ptr<CausalLM> CausalLM::load(const std::filesystem::path& path, const LoadOptions& options) {
  std::error_code ec;
  std::unique_ptr<CausalLM> model;
  if (std::filesystem::is_directory(path, ec)) {
    if (!std::filesystem::exists(path / "config.json", ec))
      throw Error(path.string() + ": a model directory needs config.json (an HF checkpoint directory)");
    model = load_hf_directory(path, options);
  } else if (std::filesystem::is_regular_file(path, ec)) {
    if (path.extension() != ".gguf")
      throw Error(path.string() + ": a model file must be a .gguf file (or pass an HF model directory)");
    model = detail::load_gguf_model(path, options);
  } else {
    throw Error(path.string() + ": no such model directory or GGUF file");
  }
  model->source_ = path;
  return model;
}

}  // namespace hylo
