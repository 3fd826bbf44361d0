// KD training step: tokens/s and peak GPU memory of one optimizer step (student forward with per-block activation
// checkpointing under bf16 autocast, teacher forward without autograd, logit-free KL, backward, AdamW) for a
// student/teacher pair of given shapes with random weights, and the peak memory of the KL alone, logit-free
// versus the naive full-logit form (the baseline, measured in the same run).
//
//   train_step --pair smollm2|llama1b-8b --seq T [--batch B] [--steps N] [--device cuda] [--kl-only] [--plan PLAN.yaml]
//              [--phases]
// --batch: sequences per step (one micro-batch of B x T tokens; default 1).
// --phases: before the measured steps, one KD forward/backward written out phase by phase (a mirror of
// train::kd_forward_backward) printing the allocator's peak per phase, to show what dominates the step's peak.
// smollm2:    student SmolLM2-135M -> 6MLA24GDN (recipes/plans/smollm2-135m-6mla24gdn.yaml), teacher SmolLM2-135M.
// llama1b-8b: student Llama-3.2-1B -> 4MLA12GDN (recipes/plans/llama3.2-1b-4mla12gdn.yaml), teacher Llama-3.1-8B.
// Weights are random (CausalLM::random): the figures depend on shapes only. Prints one table row per measurement.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#ifdef HYLO_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "hylo/config/hf_config.h"
#include "hylo/config/layer_plan.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/train/activation_checkpoint.h"
#include "hylo/train/adamw.h"
#include "hylo/train/losses.h"
#include "hylo/train/precision.h"
#include "hylo/train/kl_from_hidden.h"
#include "hylo/train/trainer.h"

using namespace hylo;

namespace {

ModelConfig llama_like(int64_t vocab, int64_t d, int64_t inter, int64_t layers, int64_t heads, int64_t kv,
                       int64_t head_dim, bool tied, double theta) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", vocab}, {"hidden_size", d},
                      {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
                      {"num_key_value_heads", kv}, {"head_dim", head_dim}, {"rms_norm_eps", 1e-5},
                      {"max_position_embeddings", 131072}, {"tie_word_embeddings", tied},
                      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", theta}}}};
  return model_config_from_hf_json(j, "bench").value_or_throw();
}

double peak_bytes(at::Device dev) {
#ifdef HYLO_HAVE_CUDA
  if (dev.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev.index() < 0 ? 0 : dev.index());
    return static_cast<double>(stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
  }
#endif
  (void)dev;
  return 0;
}
void reset_peak(at::Device dev) {
#ifdef HYLO_HAVE_CUDA
  if (dev.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(dev.index() < 0 ? 0 : dev.index());
#endif
  (void)dev;
}
void sync(at::Device dev) {
#ifdef HYLO_HAVE_CUDA
  if (dev.is_cuda()) c10::cuda::device_synchronize();
#endif
  (void)dev;
}
double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

}  // namespace

int main(int argc, char** argv) {
  std::string pair = "smollm2", device = "cuda", plan_path;
  int64_t seq = 2048, steps = 3, batch = 1;
  bool kl_only = false, ild = false, phases = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--pair") pair = next();
    else if (a == "--seq") seq = std::stoll(next());
    else if (a == "--steps") steps = std::stoll(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--device") device = next();
    else if (a == "--plan") plan_path = next();
    else if (a == "--kl-only") kl_only = true;
    else if (a == "--ild") ild = true;  // an ILD step (student and teacher of the backbone's shape per layer)
    else if (a == "--phases") phases = true;  // per-phase peak memory of one KD step (diagnostic)
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (batch < 1 || seq < 1 || steps < 1) {
    std::fprintf(stderr, "--batch, --seq and --steps must be >= 1\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a pipe as they are printed (a killed run keeps them)
  const at::Device dev = parse_device(device);
  const std::string src = HYLO_SOURCE_DIR;
  ModelConfig teacher_cfg, backbone;
  if (pair == "smollm2") {
    backbone = llama_like(49152, 576, 1536, 30, 9, 3, 64, true, 100000.0);
    teacher_cfg = backbone;
    if (plan_path.empty()) plan_path = src + "/recipes/plans/smollm2-135m-6mla24gdn.yaml";
  } else if (pair == "llama1b-8b") {
    backbone = llama_like(128256, 2048, 8192, 16, 32, 8, 64, true, 500000.0);
    teacher_cfg = llama_like(128256, 4096, 14336, 32, 32, 8, 128, false, 500000.0);
    if (plan_path.empty()) plan_path = src + "/recipes/plans/llama3.2-1b-4mla12gdn.yaml";
  } else {
    std::fprintf(stderr, "--pair must be smollm2 or llama1b-8b\n");
    return 2;
  }
  if (ild) teacher_cfg = backbone;  // ILD: the backbone teaches, layer by layer
  LayerPlan plan = load_layer_plan(plan_path).value_or_throw();
  ModelConfig student_cfg = apply_plan(backbone, plan).value_or_throw();
  student_cfg.tie_word_embeddings = false;  // hylo hybrids store an untied head (HYLO.md 2.1)

  std::printf("pair %s, T %lld, device %s\n", pair.c_str(), static_cast<long long>(seq), device.c_str());
  if (kl_only) {
    // The KL alone at the student's width and the teacher's: h [T, D] bf16 activations, heads as in training.
    at::Generator g = at::detail::createCPUGenerator(0);
    auto mk = [&](std::vector<int64_t> shape, at::ScalarType dt) {
      return (at::randn(shape, g) * 0.5).to(dev, dt);
    };
    const int64_t v = student_cfg.vocab_size, ds = student_cfg.hidden_size, dt_ = teacher_cfg.hidden_size;
    at::Tensor w_s = mk({v, ds}, at::kFloat).set_requires_grad(true), w_t = mk({v, dt_}, at::kBFloat16);
    at::Tensor h_t = mk({seq, dt_}, at::kBFloat16), weights = at::full({seq}, 1.0 / seq, at::TensorOptions().device(dev));
    std::printf("| KL form | T | peak GiB (KL fwd+bwd, beyond inputs) | seconds |\n|---|---|---|---|\n");
    for (int naive = 0; naive < 2; ++naive) {
      at::Tensor h_s = mk({seq, ds}, at::kBFloat16).set_requires_grad(true);
      w_s.mutable_grad() = at::Tensor();
      sync(dev);
      const double base = peak_bytes(dev);
      reset_peak(dev);
      const double before = peak_bytes(dev);
      (void)base;
      auto t0 = std::chrono::steady_clock::now();
      train::KlOptions o;
      at::Tensor loss = naive ? train::kd_kl_naive(h_s, w_s, h_t, w_t, weights, {}, o)
                              : train::kd_kl_from_hidden(h_s, w_s, h_t, w_t, weights, {}, o);
      loss.backward();
      sync(dev);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("| %s | %lld | %.2f | %.3f |\n", naive ? "naive (full logits, log_softmax)" : "logit-free (tiled)",
                  static_cast<long long>(seq), gib(peak_bytes(dev) - before), secs);
    }
    return 0;
  }

  // Random weights drawn on the device (CausalLM::random draws on the CPU, minutes for an 8B teacher): norms
  // around 1, the rest N(0, 0.02), as CausalLM::random does.
  auto random_on_device = [&](const ModelConfig& cfg, at::ScalarType dtype) {
    auto m = std::make_unique<CausalLM>(cfg, at::TensorOptions().dtype(dtype).device(dev));
    m->visit_parameters([&](const std::string& name, at::Tensor& t) {
      const bool is_norm = name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0;
      at::Tensor r = at::randn(t.sizes(), t.options().dtype(at::kFloat));
      t.copy_(is_norm ? 1.0 + 0.1 * r : 0.02 * r);
    });
    return m;
  };
  auto student = random_on_device(student_cfg, at::kFloat);
  auto teacher = random_on_device(teacher_cfg, at::kBFloat16);
  train::Stage st;
  st.kind = ild ? train::StageKind::kIld : train::StageKind::kKd;
  st.precision = at::kBFloat16;
  st.activation_checkpointing = true;
  auto params = train::trainable_parameters(*student, st);
  for (auto& p : params) p.tensor.requires_grad_(true);
  train::AdamW opt(params, {});
  at::Generator g = at::detail::createCPUGenerator(3);
  train::PackedBatch b;
  b.ids = at::randint(0, student_cfg.vocab_size, {batch, seq}, g, at::TensorOptions().dtype(at::kLong));
  b.loss_mask = at::ones({batch, seq}, at::kFloat);
  b.doc_start = at::zeros({batch, seq}, at::kBool);
  const double norm = train::counted_tokens(st, b);
  sync(dev);
  const double weights_gib = gib(peak_bytes(dev));
  reset_peak(dev);
  if (phases && !ild) {
    // kd_forward_backward phase by phase (same calls, same order), the allocator peak of each phase (reset between phases).
    const at::Tensor ids = b.ids.to(dev), pos = at::arange(seq, at::TensorOptions().dtype(at::kLong).device(dev));
    auto phase = [&](const char* what) {
      sync(dev);
      std::printf("phase %-34s peak %.2f GiB\n", what, gib(peak_bytes(dev)));
      reset_peak(dev);
    };
    phase("setup (weights; AdamW state if allocated)");
    at::Tensor loss;
    {
      train::AutocastScope autocast(dev.type(), st.precision);
      at::Tensor h = student->embed(ids);
      if (!h.requires_grad()) h = h.detach().requires_grad_(true);
      for (int64_t i = 0; i < student->num_blocks(); ++i)
        h = train::checkpointed_block([&student, i, pos](const at::Tensor& x) { return student->forward_block(i, x, pos).hidden; }, h);
      at::Tensor h_s = student->final_norm(h);
      phase("student forward (checkpointed)");
      at::Tensor h_t;
      {
        c10::NoGradGuard no_grad;
        h_t = teacher->forward_hidden(ids);
      }
      phase("teacher forward (no autograd)");
      loss = train::kd_loss(h_s, student->head_weight(), h_t, teacher->head_weight(), ids, b.loss_mask, norm,
                            st.kd);
      phase("logit-free KL forward");
    }
    loss.backward();
    phase("backward (block recompute + grads)");
    opt.zero_grad();
    reset_peak(dev);
  }
  // Step 0 warms up (allocator, cuBLAS handles) unless the --phases pass already did.
  const int64_t warmups = phases && !ild ? 0 : 1;
  double total_secs = 0;
  for (int64_t s = 0; s < steps + warmups; ++s) {
    sync(dev);
    auto t0 = std::chrono::steady_clock::now();
    if (ild) train::ild_forward_backward(*student, *teacher, b, norm, st, true);
    else train::kd_forward_backward(*student, *teacher, b, norm, st, true);
    train::clip_grad_norm(params, 1.0);
    opt.step(1e-5);
    opt.zero_grad();
    sync(dev);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmups) total_secs += secs;
    std::printf("step %lld: %.3f s\n", static_cast<long long>(s), secs);
  }
  std::printf("| pair | B x T | student params | s/step | tokens/s | peak GiB (whole step) | weights+state GiB before |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::printf("| %s%s | %lld x %lld | %.1fM | %.3f | %.0f | %.2f | %.2f |\n", pair.c_str(), ild ? " (ILD)" : " (KD)",
              static_cast<long long>(batch), static_cast<long long>(seq),
              static_cast<double>(parameter_count(student_cfg)) / 1e6, total_secs / static_cast<double>(steps),
              static_cast<double>(batch * seq * steps) / std::max(total_secs, 1e-9), gib(peak_bytes(dev)), weights_gib);
  return 0;
}
