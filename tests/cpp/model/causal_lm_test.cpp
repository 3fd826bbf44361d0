// CausalLM with gqa mixers: state handling (prefill in pieces, prefill + decode, sliding window through the
// cache) equals one stateless forward; bf16 stays within a derived bound of fp64; loading an HF directory
// round-trips and rejects missing, mis-shaped and unexpected tensors and hybrid checkpoints, naming them.
// Parity with transformers itself is tests/oracles/test_transformer_parity.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "hylo/config/hf_config.h"
#include "hylo/io/safetensors.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/attention.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny_config(std::optional<int64_t> window = std::nullopt, bool qwen3 = false) {
  nlohmann::json j = {
      {"architectures", {qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"}},
      {"vocab_size", 97}, {"hidden_size", 48}, {"intermediate_size", 80}, {"num_hidden_layers", 2},
      {"num_attention_heads", 6}, {"num_key_value_heads", 2}, {"head_dim", 10}, {"rms_norm_eps", 1e-5},
      {"max_position_embeddings", 256}, {"tie_word_embeddings", false}, {"attention_bias", true},
      {"rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 10000.0}, {"factor", 4.0},
                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 16}}}};
  if (window) {
    j["architectures"] = {"MistralForCausalLM"};
    j.erase("attention_bias");
    j["sliding_window"] = *window;
  }
  ModelConfig c = model_config_from_hf_json(j, "tiny").value_or_throw();
  return c;
}

at::Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randint(vocab, {b, t}, gen, at::TensorOptions().dtype(at::kLong));
}

// Stateless forward in fp64 as the reference for the stateful and bf16 paths.
struct Fixture {
  ModelConfig config;
  std::unique_ptr<CausalLM> model;
};

Fixture make(at::ScalarType dtype, std::optional<int64_t> window = std::nullopt, bool qwen3 = false) {
  Fixture f;
  f.config = tiny_config(window, qwen3);
  LoadOptions o;
  o.dtype = dtype;
  f.model = CausalLM::random(f.config, /*seed=*/7, o);
  return f;
}

// The error of fp32 math on this model: |fp32 - fp64| relative; stateful fp32 paths may differ from the
// stateless fp32 forward by a small multiple of it (different reduction lengths, same math).
double fp32_error(Fixture& f64, Fixture& f32, const at::Tensor& ids) {
  return relative_rms_error(f32.model->forward(ids), f64.model->forward(ids));
}

TEST(CausalLM, RandomIsDeterministicAndShaped) {
  auto a = make(at::kFloat), b = make(at::kFloat);
  at::Tensor ids = random_ids(2, 9, 97, 1);
  at::Tensor la = a.model->forward(ids), lb = b.model->forward(ids);
  EXPECT_EQ(la.sizes(), (std::vector<int64_t>{2, 9, 97}));
  EXPECT_EQ(la.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(la, lb));
  int64_t n = 0;
  a.model->visit_parameters([&](const std::string&, at::Tensor& t) { n += t.numel(); });
  EXPECT_EQ(n, parameter_count(a.config));
}

TEST(CausalLM, PrefillInPiecesAndDecodeEqualOneForward) {
  for (std::optional<int64_t> window : {std::optional<int64_t>{}, std::optional<int64_t>{5}}) {
    for (bool qwen3 : {false, true}) {
      if (window && qwen3) continue;
      auto f64 = make(at::kDouble, window, qwen3), f32 = make(at::kFloat, window, qwen3);
      const int64_t t = 23;
      at::Tensor ids = random_ids(2, t, 97, 3);
      at::Tensor full = f32.model->forward(ids);  // [2, T, V]
      const double bound = 4 * fp32_error(f64, f32, ids) + 1e-6;
      // Prefill pieces 1, 7, 8 then single-token decode steps.
      auto state = f32.model->new_state(2, t);
      std::vector<at::Tensor> outs;
      int64_t pos = 0;
      for (int64_t len : {1, 7, 8}) {
        outs.push_back(f32.model->forward(ids.narrow(1, pos, len), state.get()));
        pos += len;
      }
      while (pos < t) outs.push_back(f32.model->forward(ids.narrow(1, pos++, 1), state.get()));
      EXPECT_EQ(state->length, t);
      at::Tensor stepped = at::cat(outs, 1);
      const double err = relative_rms_error(stepped, full);
      EXPECT_LE(err, bound) << "window " << (window ? *window : 0) << " qwen3 " << qwen3;
      // The state's memory is the KV cache: 2 (k, v) x B x Hkv x T x Dh x layers x 4 bytes.
      EXPECT_EQ(state->bytes(), 2 * 2 * 2 * t * 10 * 2 * 4);
    }
  }
}

TEST(CausalLM, StateOverflowIsAnError) {
  auto f = make(at::kFloat);
  auto state = f.model->new_state(1, 4);
  (void)f.model->forward(random_ids(1, 3, 97, 1), state.get());
  try {
    (void)f.model->forward(random_ids(1, 2, 97, 2), state.get());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 4 tokens"), std::string::npos) << e.what();
  }
}

TEST(CausalLM, Bf16WithinDerivedBoundOfFp64) {
  auto f64 = make(at::kDouble), bf = make(at::kBFloat16);
  at::Tensor ids = random_ids(1, 31, 97, 5);
  at::Tensor ref = f64.model->forward(ids);
  // Parameters are the same draws rounded to bf16. Derived bound: `unit` is what storing the exact logits in
  // bf16 alone costs; the bf16 network rounds weights, activations and every op output (about a dozen
  // roundings in series per layer, 2 layers), so a small multiple of that unit, not more.
  const double unit = relative_rms_error(ref.to(at::kBFloat16), ref);
  const double err = relative_rms_error(bf.model->forward(ids), ref);
  std::printf("bf16 logits rel RMS vs fp64 %.3e (bf16 storage of the logits alone: %.3e)\n", err, unit);
  EXPECT_LE(err, 8 * unit);
  EXPECT_GT(err, unit);
}

TEST(Attention, ReferenceMatchesExplicitLoopsWithOffsetAndWindow) {
  at::Generator gen = at::detail::createCPUGenerator(11);
  auto o = at::TensorOptions().dtype(at::kDouble);
  const int64_t b = 1, hq = 4, hkv = 2, t = 3, s = 9, d = 4, offset = 6, window = 4;
  at::Tensor q = at::randn({b, hq, t, d}, gen, o), k = at::randn({b, hkv, s, d}, gen, o),
             v = at::randn({b, hkv, s, d}, gen, o);
  at::Tensor got = ops::causal_attention_reference(q, k, v, 0.5, offset, window);
  at::Tensor want = at::zeros_like(q);
  for (int64_t h = 0; h < hq; ++h) {
    const int64_t g = h / (hq / hkv);
    for (int64_t i = 0; i < t; ++i) {
      const int64_t p = offset + i;
      std::vector<double> w;
      double mx = -1e300;
      for (int64_t j = 0; j < s; ++j) {
        const bool on = j <= p && j > p - window;
        double sc = on ? (q[0][h][i] * k[0][g][j]).sum().item<double>() * 0.5 : -1e300;
        w.push_back(sc);
        if (on) mx = std::max(mx, sc);
      }
      double z = 0;
      for (int64_t j = 0; j < s; ++j) z += (w[j] > -1e299) ? std::exp(w[j] - mx) : 0.0;
      for (int64_t j = 0; j < s; ++j)
        if (w[j] > -1e299) want[0][h][i] += v[0][g][j] * (std::exp(w[j] - mx) / z);
    }
  }
  // The reference computes in fp32 (cast back to fp64 here), so fp32 roundoff is the scale of the error.
  EXPECT_LE(relative_rms_error(got, want), 1e-6);
}

// On the GPU machine: the CUDA path (at::scaled_dot_product_attention, causal or with an explicit mask for
// cached steps and windows; everything on the device) equals the CPU reference within fp32 roundoff, in one
// go and in prefill + decode; bf16 on CUDA stays within the bf16 bound used above.
TEST(CausalLM, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device on this machine";
  for (std::optional<int64_t> window : {std::optional<int64_t>{}, std::optional<int64_t>{5}}) {
    auto f64 = make(at::kDouble, window), cpu = make(at::kFloat, window);
    LoadOptions o;
    o.device = at::Device(at::kCUDA);
    auto gpu = CausalLM::random(tiny_config(window), /*seed=*/7, o);
    const int64_t t = 19;
    at::Tensor ids = random_ids(2, t, 97, 4);
    const double bound = 4 * fp32_error(f64, cpu, ids) + 1e-6;
    at::Tensor ref = cpu.model->forward(ids);
    at::Tensor full = gpu->forward(ids);
    EXPECT_TRUE(full.is_cuda());
    EXPECT_LE(relative_rms_error(full, ref), bound);
    auto state = gpu->new_state(2, t);
    std::vector<at::Tensor> outs{gpu->forward(ids.narrow(1, 0, 11), state.get())};
    for (int64_t p = 11; p < t; ++p) outs.push_back(gpu->forward(ids.narrow(1, p, 1), state.get()));
    EXPECT_LE(relative_rms_error(at::cat(outs, 1), ref), bound);
    o.dtype = at::kBFloat16;
    auto gpu_bf = CausalLM::random(tiny_config(window), 7, o);
    at::Tensor ref64 = f64.model->forward(ids);
    const double unit = relative_rms_error(ref64.to(at::kBFloat16), ref64);
    EXPECT_LE(relative_rms_error(gpu_bf->forward(ids), ref64), 8 * unit);
  }
}

// ---- loading ----------------------------------------------------------------------------------------------

// POSIX calls rather than std::filesystem::remove_all, whose symbol libtorch.so also exports (and whose
// copy crashes when it wins symbol resolution).
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    std::string tmpl = "/tmp/hylo_causal_lm_test_" + name + "_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw Error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    for (const char* f : {"model.safetensors", "config.json"}) ::unlink((path / f).c_str());
    ::rmdir(path.c_str());
  }
};

// Writes `model` as an HF directory; `edit` may change the tensor list before writing.
void save_hf(CausalLM& model, const fs::path& dir,
             const std::function<void(std::map<std::string, at::Tensor>&)>& edit = {},
             const std::function<void(nlohmann::json&)>& edit_config = {}) {
  std::map<std::string, at::Tensor> tensors;
  model.visit_parameters([&](const std::string& n, at::Tensor& t) { tensors[n] = t.to(at::kFloat).contiguous(); });
  if (edit) edit(tensors);
  std::vector<io::TensorToWrite> w;
  for (auto& [n, t] : tensors) {
    io::TensorToWrite x;
    x.name = n;
    x.dtype = io::DType::kF32;
    x.shape = t.sizes().vec();
    x.bytes = {static_cast<const std::byte*>(t.data_ptr()), t.nbytes()};
    w.push_back(x);
  }
  io::write_safetensors(dir / "model.safetensors", w).value_or_throw();
  nlohmann::json cj = hf_config_to_json(model.config());
  if (edit_config) edit_config(cj);
  std::ofstream(dir / "config.json") << cj.dump(2);
}

std::string load_error(const fs::path& dir) {
  try {
    (void)CausalLM::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CausalLMLoad, HfDirectoryRoundTripsInFp32AndBf16) {
  auto f = make(at::kFloat);
  TempDir tmp("roundtrip");
  save_hf(*f.model, tmp.path);
  auto loaded = CausalLM::load(tmp.path);
  EXPECT_EQ(loaded->source(), tmp.path);
  at::Tensor ids = random_ids(1, 12, 97, 9);
  EXPECT_TRUE(at::equal(loaded->forward(ids), f.model->forward(ids)));
  LoadOptions bf;
  bf.dtype = at::kBFloat16;
  auto loaded_bf = CausalLM::load(tmp.path, bf);
  loaded_bf->visit_parameters([](const std::string& n, at::Tensor& t) { EXPECT_EQ(t.scalar_type(), at::kBFloat16) << n; });
}

TEST(CausalLMLoad, ErrorsNameTheTensor) {
  auto f = make(at::kFloat);
  TempDir tmp("errors");
  const std::string q = "model.layers.1.self_attn.q_proj.weight";

  save_hf(*f.model, tmp.path, [&](auto& t) { t.erase(q); });
  std::string e = load_error(tmp.path);
  EXPECT_NE(e.find(q), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  EXPECT_NE(e.find("[60, 48]"), std::string::npos) << e;

  save_hf(*f.model, tmp.path, [&](auto& t) { t[q] = at::zeros({60, 47}); });
  e = load_error(tmp.path);
  EXPECT_NE(e.find("has shape [60, 47], expected [60, 48]"), std::string::npos) << e;

  save_hf(*f.model, tmp.path, [&](auto& t) { t["model.layers.2.mlp.gate_proj.weight"] = at::zeros({2}); });
  e = load_error(tmp.path);
  EXPECT_NE(e.find("unexpected"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.2.mlp.gate_proj.weight"), std::string::npos) << e;

  // Known-ignorable: rotary inv_freq buffers of old checkpoints.
  save_hf(*f.model, tmp.path, [&](auto& t) { t["model.layers.0.self_attn.rotary_emb.inv_freq"] = at::zeros({5}); });
  EXPECT_EQ(load_error(tmp.path), "");

  // A config.json with a malformed `hybrid` block is read as a hylo hybrid checkpoint and rejected by name.
  save_hf(*f.model, tmp.path, {}, [](nlohmann::json& c) { c["hybrid"] = nlohmann::json::object(); });
  e = load_error(tmp.path);
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("hybrid"), std::string::npos) << e;

  EXPECT_NE(load_error(tmp.path / "nope").find("no such model"), std::string::npos);
}

}  // namespace
}  // namespace hylo
