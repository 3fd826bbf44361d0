// Shared pieces of the engine pool tests: small models with every mixer kind, realistic random recurrent mixers,
// and a miniature scheduler that drives recurrent engine layers through packed steps (batched decode tokens beside
// prefill chunks of arbitrary lengths) the way the engine's runner does.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/infer/engine/step_batch.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "hylo/model/mixers/mamba2.h"

namespace hylo::engine::test {

// Tiny tensors: intra-op threads only cost on the shared machine.
inline const bool kSingleThreaded = (at::set_num_threads(1), true);

inline LayerSpec gqa_layer(int64_t intermediate) {
  LayerSpec l;
  l.mixer = MixerKind::kGqa;
  l.gqa.num_heads = 4;
  l.gqa.num_kv_heads = 2;
  l.gqa.head_dim = 12;
  l.intermediate_size = intermediate;
  return l;
}

inline LayerSpec mla_layer(int64_t intermediate) {
  LayerSpec l;
  l.mixer = MixerKind::kMla;
  MlaSpec& m = l.mla;
  m.num_heads = 4;
  m.q_lora_rank = 16;
  m.kv_lora_rank = 12;
  m.qk_nope_head_dim = 8;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 8;
  m.num_kv_groups = 2;
  l.intermediate_size = intermediate;
  return l;
}

inline LayerSpec gdn_layer(int64_t intermediate) {
  LayerSpec l;
  l.mixer = MixerKind::kGdn;
  l.gdn.num_heads = 2;
  l.gdn.head_k_dim = 8;
  l.gdn.head_v_dim = 16;
  l.gdn.conv_size = 4;
  l.intermediate_size = intermediate;
  return l;
}

inline LayerSpec mamba2_layer(int64_t intermediate) {
  LayerSpec l;
  l.mixer = MixerKind::kMamba2;
  Mamba2Spec& m = l.mamba2;
  m.n_heads = 4;
  m.head_dim = 8;
  m.d_state = 8;
  m.d_inner = 32;
  m.d_xb = 16;
  m.conv_size = 4;
  m.norm_group_size = 8;
  m.chunk_size = 8;  // several SSD chunks inside one prefill chunk
  l.intermediate_size = intermediate;
  return l;
}

inline ModelConfig model_with(std::vector<LayerSpec> layers, int64_t hidden = 48) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 101;
  c.hidden_size = hidden;
  c.max_position_embeddings = 512;
  c.backbone_attention = layers.front().gqa;
  c.backbone_intermediate_size = layers.front().intermediate_size;
  c.layers = std::move(layers);
  return c;
}

// All four kinds: gqa, mla, gdn, mamba2.
inline ModelConfig mixed_config() {
  return model_with({gqa_layer(64), mla_layer(64), gdn_layer(64), mamba2_layer(64)});
}

// A recurrent-only model: layer 0 GDN, layer 1 Mamba2, hidden 16.
inline ModelConfig recurrent_config() { return model_with({gdn_layer(24), mamba2_layer(24)}, 16); }

// The mixers with the parameter magnitudes of initialised layers (CausalLM::random draws 0.02 * N(0, 1) for every
// weight, which leaves the recurrences nearly linear): FLA's initialisation for GDN with a perturbed norm weight,
// and Mamba2's ranges (A_log = log U(1, 16), dt in [1e-3, 0.1], D and the norm weight around 1).
inline void randomize_recurrent_mixers(CausalLM& model, uint64_t seed) {
  at::manual_seed(seed);
  for (int64_t i = 0; i < model.num_blocks(); ++i) {
    Mixer& m = model.mixer(i);
    if (auto* gdn = dynamic_cast<GatedDeltaNetMixer*>(&m)) {
      at::Generator gen = at::detail::createCPUGenerator(seed + static_cast<uint64_t>(i));
      gdn->init_random(gen);
      gdn->set_chunk_size(4);  // several chunk-form chunks inside one prefill chunk
      gdn->visit_parameters("", [&](const std::string& name, at::Tensor& t) {
        if (name == "gdn.o_norm.weight") t.copy_(1.0 + 0.1 * at::randn(t.sizes(), t.options()));
      });
    } else if (dynamic_cast<Mamba2Mixer*>(&m)) {
      m.visit_parameters("", [](const std::string& name, at::Tensor& p) {
        const auto o = p.options();
        at::Tensor v;
        if (name == "mamba.A_log") {
          v = at::log(at::rand(p.sizes(), o) * 15 + 1);
        } else if (name == "mamba.dt_bias") {
          at::Tensor dt = at::exp(at::rand(p.sizes(), o) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
          v = dt + at::log(-at::expm1(-dt));
        } else if (name == "mamba.D" || name == "mamba.norm.weight") {
          v = 1 + 0.3 * at::randn(p.sizes(), o);
        } else if (name == "mamba.conv1d.weight" || name == "mamba.conv1d.bias") {
          v = (at::rand(p.sizes(), o) * 2 - 1) * 0.5;
        } else {
          v = at::randn(p.sizes(), o) / std::sqrt(static_cast<double>(p.size(1)));
        }
        p.copy_(v);
      });
    }
  }
}

inline double max_rel_error(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.to(at::kDouble);
  const double scale = r.abs().max().item<double>();
  const double err = (a.to(at::kDouble) - r).abs().max().item<double>();
  return scale > 0 ? err / scale : err;
}

inline double unit_roundoff(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::ldexp(1.0, -53);
    case at::kFloat: return std::ldexp(1.0, -24);
    case at::kBFloat16: return std::ldexp(1.0, -8);
    default: return 0.0;
  }
}

// One sequence the miniature scheduler runs: x [1, L, D] mixer inputs; tokens [0, prompt) arrive as prefill chunks
// of random lengths, the rest one decode token per step.
struct SimSequence {
  at::Tensor x;
  int64_t prompt = 0;
  int64_t slot = -1;
  int64_t first_position = 0;  // absolute position of x's first token (a continuation after a restored snapshot)
  int64_t done = 0;           // tokens run so far
  int64_t state_writes = 0;   // steps that wrote this sequence's slot (bf16 pools round the state at each)
  std::vector<std::vector<at::Tensor>> outputs;  // per layer, the [1, count, D] outputs in order
};

struct SimOptions {
  uint64_t seed = 1;
  int64_t max_chunk = 9;
  bool decode_rows_last = false;  // pack the prefill rows first (the layers must follow the offsets, not the order)
};

// Runs every sequence to its end through `layers` (all fed the same step input), building each step's StepBatch
// as the runner does: decode entries first in seqs, then prefill chunks of a random subset of the prompting
// sequences. Returns the number of steps.
inline int64_t simulate(std::vector<EngineLayer*> layers, std::vector<SimSequence>& seqs, const SimOptions& o) {
  std::mt19937_64 rng(o.seed);
  for (auto& s : seqs) s.outputs.assign(layers.size(), {});
  int64_t steps = 0;
  while (true) {
    std::vector<size_t> decode, prefill;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const SimSequence& s = seqs[i];
      if (s.done >= s.x.size(1)) continue;
      if (s.done >= s.prompt) {
        decode.push_back(i);
      } else if (rng() % 10 < 7) {
        prefill.push_back(i);
      }
    }
    if (decode.empty() && prefill.empty()) {
      bool left = false;
      for (const auto& s : seqs) left = left || s.done < s.x.size(1);
      if (!left) break;
      continue;  // the random subset was empty: draw again
    }
    std::shuffle(decode.begin(), decode.end(), rng);
    std::shuffle(prefill.begin(), prefill.end(), rng);
    StepBatch b;
    std::vector<size_t> who;
    for (size_t i : decode) {
      SeqChunk c;
      c.count = 1;
      c.start = seqs[i].first_position + seqs[i].done;
      c.slot = seqs[i].slot;
      b.seqs.push_back(c);
      who.push_back(i);
    }
    for (size_t i : prefill) {
      SeqChunk c;
      const int64_t left = seqs[i].prompt - seqs[i].done;
      c.count = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(std::min(left, o.max_chunk)));
      c.start = seqs[i].first_position + seqs[i].done;
      c.slot = seqs[i].slot;
      b.seqs.push_back(c);
      who.push_back(i);
    }
    b.num_decode = static_cast<int64_t>(decode.size());
    // Packed order: decode rows then prefill rows (or the reverse with decode_rows_last).
    int64_t offset = 0;
    const size_t S = b.seqs.size(), nd = decode.size();
    std::vector<size_t> pack_order;
    for (size_t k = 0; k < S; ++k) pack_order.push_back(k);
    if (o.decode_rows_last) std::rotate(pack_order.begin(), pack_order.begin() + static_cast<long>(nd), pack_order.end());
    for (size_t k : pack_order) {
      b.seqs[k].offset = offset;
      offset += b.seqs[k].count;
    }
    b.num_tokens = offset;
    std::vector<int64_t> positions(static_cast<size_t>(offset)), slots;
    for (size_t k = 0; k < S; ++k) {
      const SeqChunk& c = b.seqs[k];
      for (int64_t j = 0; j < c.count; ++j) positions[static_cast<size_t>(c.offset + j)] = c.start + j;
      slots.push_back(c.slot);
    }
    std::vector<at::Tensor> packed;
    for (size_t k : pack_order) packed.push_back(seqs[who[k]].x.narrow(1, seqs[who[k]].done, b.seqs[k].count));
    at::Tensor x = at::cat(packed, 1);  // [1, N, D]
    b.positions = at::tensor(positions, at::kLong);
    b.slots = at::tensor(slots, at::kLong);
    for (size_t l = 0; l < layers.size(); ++l) {
      at::Tensor y = layers[l]->forward(x, b);  // [1, N, D]
      for (size_t k = 0; k < S; ++k) seqs[who[k]].outputs[l].push_back(y.narrow(1, b.seqs[k].offset, b.seqs[k].count));
    }
    for (size_t k = 0; k < S; ++k) {
      seqs[who[k]].done += b.seqs[k].count;
      seqs[who[k]].state_writes += 1;
    }
    ++steps;
  }
  return steps;
}

inline at::Tensor output_of(const SimSequence& s, size_t layer) { return at::cat(s.outputs[layer], 1); }

}  // namespace hylo::engine::test
