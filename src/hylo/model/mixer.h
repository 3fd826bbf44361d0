// The token-mixer interface every layer kind implements (gqa, mla, gdn, mamba2), so that models are a plain
// list of blocks built from ModelConfig.layers. A mixer sees the normalised hidden states of its block and
// returns its output before the residual add (the "mixer output" that Enhanced-ILD aligns).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "hylo/config/model_config.h"

namespace hylo {

// Visits every parameter with its full checkpoint name ("model.layers.3.self_attn.q_proj.weight"). The
// reference is the module's own member, so loaders may assign and optimisers may collect it.
using ParamVisitor = std::function<void(const std::string& name, at::Tensor& tensor)>;

// Per-sequence inference state of one layer: the KV cache (gqa), the latent cache (mla), or the conv +
// recurrent state (gdn, mamba2). States are created by the mixer that uses them.
class MixerState {
 public:
  virtual ~MixerState() = default;
  virtual int64_t bytes() const = 0;  // memory held now
};

// Writes a new value into a state tensor. A decode loop without autograd writes in place (so a caller may hand
// in views of a larger state pool); a differentiable call rebinds the tensor to keep the graph.
inline void store_state(at::Tensor& dst, const at::Tensor& src) {
  if (dst.defined() && !src.requires_grad() && !dst.requires_grad() && dst.sizes() == src.sizes())
    dst.copy_(src);
  else
    dst = src;
}

class Mixer {
 public:
  virtual ~Mixer() = default;
  virtual MixerKind kind() const = 0;

  // x: [B, T, D]; positions: [T] int64, the absolute positions of these T tokens.
  // state == nullptr: a stateless forward over a whole sequence (training, reference).
  // state != nullptr: continue from the state (prefill chunk or decode step) and update it in place.
  // Returns [B, T, D].
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) = 0;

  // A fresh state for `batch` sequences of at most `max_tokens` tokens.
  virtual std::unique_ptr<MixerState> new_state(int64_t batch, int64_t max_tokens,
                                                const at::TensorOptions& options) const = 0;

  // `prefix` is the layer's prefix, e.g. "model.layers.3."; names follow the source checkpoint format
  // (self_attn.* for gqa, mla.* / gdn.* / mamba.* for the hybrid mixers as in AMD's released layout).
  virtual void visit_parameters(const std::string& prefix, const ParamVisitor& visit) = 0;
};

// Builds the mixer of `layer` with uninitialised parameters of the right shapes (filled by a loader or an
// initialiser). Each mixer kind registers itself in its own file.
using MixerFactory = std::function<std::unique_ptr<Mixer>(const ModelConfig&, const LayerSpec&,
                                                         const at::TensorOptions&)>;
void register_mixer(MixerKind kind, MixerFactory factory);
std::unique_ptr<Mixer> make_mixer(const ModelConfig& config, const LayerSpec& layer,
                                  const at::TensorOptions& options);

}  // namespace hylo
