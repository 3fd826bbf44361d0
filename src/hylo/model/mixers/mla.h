// The MLA token mixer (MixerKind::kMla) of HyLo / Zebra-Llama hybrids, with AMD's released parameter names
// under "mla." (HYLO.md 2.2): q_a_proj, q_b_proj (or q_proj when q_lora_rank == 0), kv_a_proj_with_mqa,
// kv_b_proj, out_proj, and q_a_layernorm / kv_a_layernorm when the spec has latent norms (DeepSeek variant).
//
// Its state is the latent cache: [B, max_tokens, r_kv + rope] holding [c_kv ; rope(k_pe)] per token (the rope
// part stored already rotated, in the DeepSeek pair layout), plus the number of tokens filled. A stateless forward
// and a prefill (T > 1) use the decompressed form, attending over cache + new tokens; a decode step (T == 1 with
// a state) uses the absorbed form. set_form() forces either form, for tests and benchmarks.
//
// forward() is project() -> attention over the latent cache -> project_out(). The engine (infer/engine/
// engine_layer_mla.cpp) calls the same project() / project_out() around its own paged cache, so the two share
// every projection, norm and rotation instead of keeping copies of them.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "hylo/model/mixer.h"
#include "hylo/ops/packed_linear.h"
#include "hylo/ops/rope_yarn.h"

namespace hylo {

enum class MlaForm { kAuto, kDecompressed, kAbsorbed };

class MlaState : public MixerState {
 public:
  MlaState(at::Tensor cache, int64_t kv_lora_rank) : cache_(std::move(cache)), kv_lora_rank_(kv_lora_rank) {}
  int64_t bytes() const override { return static_cast<int64_t>(cache_.nbytes()); }
  int64_t length() const { return length_; }
  int64_t capacity() const { return cache_.size(1); }
  const at::Tensor& cache() const { return cache_; }  // [B, S, Rkv+Dr]
  // Appends entry [B, T, Rkv+Dr] at position length() and returns the filled prefix [B, length()+T, Rkv+Dr].
  at::Tensor append(const at::Tensor& entry);

 private:
  at::Tensor cache_;  // [B, S, Rkv+Dr] latent c_kv then rotated k_pe
  int64_t kv_lora_rank_ = 0;
  int64_t length_ = 0;
};

// The new tokens' queries and cache entries (MlaMixer::project).
struct MlaProjection {
  at::Tensor q_nope;  // [B, T, H, Dn]
  at::Tensor q_pe;    // [B, T, H, Dr] rotated
  at::Tensor entry;   // [B, T, Rkv+Dr] what the latent cache stores per token: c_kv (normed) then rotated k_pe
};

class MlaMixer : public Mixer {
 public:
  MlaMixer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& options);

  MixerKind kind() const override { return MixerKind::kMla; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& positions, MixerState* state) override;
  std::unique_ptr<MixerState> new_state(int64_t batch, int64_t max_tokens,
                                        const at::TensorOptions& options) const override;
  void visit_parameters(const std::string& prefix, const ParamVisitor& visit) override;

  void set_form(MlaForm form) { form_ = form; }
  void set_rope_pair_order(ops::RopePairOrder order) { pair_order_ = order; }
  const MlaSpec& spec() const { return spec_; }

  // x: [B, T, D]; positions: [T] int64 absolute positions of the T tokens (RoPE). Queries and cache entries in
  // x's dtype.
  MlaProjection project(const at::Tensor& x, const at::Tensor& positions) const;
  // o: [B, T, H, Dv] attention output -> [B, T, D] (out_proj).
  at::Tensor project_out(const at::Tensor& o) const;
  const at::Tensor& kv_b_weight() const { return kv_b_w_; }  // [G*(Dn+Dv), Rkv], for the attention ops
  double softmax_scale() const { return softmax_scale_; }
  int64_t hidden_size() const { return kv_a_w_.size(1); }

 private:
  MlaSpec spec_;
  MlaForm form_ = MlaForm::kAuto;
  ops::RopePairOrder pair_order_ = ops::RopePairOrder::kDeepSeekPairs;
  double softmax_scale_ = 0.0;
  at::Tensor rope_inv_freq_;                // [Dr/2] fp64 on the mixer's device (not a parameter)
  double rope_scale_ = 1.0;                 // mla_rope_cos_sin_scale
  // Parameters (undefined where the variant has none).
  at::Tensor q_proj_w_, q_proj_b_;          // [H*(Dn+Dr), D], [H*(Dn+Dr)]     (q_lora_rank == 0)
  at::Tensor q_a_w_, q_a_b_;                // [Rq, D], [Rq]
  at::Tensor q_a_norm_w_;                   // [Rq]                        (latent_norms)
  at::Tensor q_b_w_;                        // [H*(Dn+Dr), Rq]
  at::Tensor kv_a_w_, kv_a_b_;              // [Rkv+Dr, D], [Rkv+Dr]
  at::Tensor kv_a_norm_w_;                  // [Rkv]                          (latent_norms)
  at::Tensor kv_b_w_;                       // [G*(Dn+Dv), Rkv]
  at::Tensor out_w_, out_b_;                // [D, H*Dv], [D]
  // The two projections of x, [q_a (or q_proj) ; kv_a_proj_with_mqa], packed for one GEMM in inference
  // (ops/packed_linear.h); mutable: a cache of the parameters, rebuilt when they change, project() stays const.
  mutable ops::PackedLinear x_proj_;
};

}  // namespace hylo
