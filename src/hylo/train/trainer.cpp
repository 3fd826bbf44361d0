#include "hylo/train/trainer.h"

#include <c10/core/GradMode.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hylo/config/layer_plan.h"
#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/infer/bench/device_memory.h"
#include "hylo/model/checkpoint.h"
#include "hylo/train/activation_checkpoint.h"
#include "hylo/train/adamw.h"
#include "hylo/train/loss_plot.h"
#include "hylo/train/losses.h"
#include "hylo/train/precision.h"
#include "hylo/train/train_state.h"
#include "hylo/upcycle/upcycler.h"

namespace hylo::train {
namespace fs = std::filesystem;

namespace {

SyncHooks& single_process() {
  static SyncHooks hooks;
  return hooks;
}

// CPU autocast to bf16 is slow and not what the recipe's bf16 is for (GPU tensor cores): CPU runs fp32.
at::ScalarType compute_dtype(const Stage& stage, at::Device device) {
  return device.is_cuda() ? stage.precision : at::kFloat;
}

at::Tensor positions_for(int64_t t, at::Device device) {
  return at::arange(t, at::TensorOptions().dtype(at::kLong).device(device));  // [T]
}

}  // namespace

std::vector<NamedParam> trainable_parameters(CausalLM& student, const Stage& stage) {
  std::vector<NamedParam> out;
  auto add = [&](const std::string& name, at::Tensor& t) { out.push_back({name, t}); };
  if (stage.train_mixers_only) {
    student.visit_mixer_parameters(add);
  } else if (stage.kind == StageKind::kIld) {
    for (int64_t i = 0; i < student.num_blocks(); ++i) student.visit_block_parameters(i, add);
  } else {
    student.visit_parameters(add);
  }
  return out;
}

double counted_tokens(const Stage& stage, const PackedBatch& batch) {
  if (stage.kind == StageKind::kIld) return static_cast<double>(batch.ids.numel());
  return kd_target_count(batch.loss_mask);
}

double kd_forward_backward(CausalLM& student, CausalLM& teacher, const PackedBatch& batch, double norm,
                           const Stage& stage, bool backward) {
  const at::Device dev = student.options().device();
  at::Tensor ids = batch.ids.to(dev);  // [B, T]
  const at::Tensor pos = positions_for(ids.size(1), dev);
  at::Tensor loss;
  {
    std::optional<c10::NoGradGuard> no_grad;
    if (!backward) no_grad.emplace();
    AutocastScope autocast(dev.type(), compute_dtype(stage, dev));
    at::Tensor h = student.embed(ids);  // [B, T, D]
    const bool ckpt = backward && stage.activation_checkpointing;
    // Checkpointed blocks need a differentiable input even when the embedding is frozen.
    if (ckpt && !h.requires_grad()) h = h.detach().requires_grad_(true);
    for (int64_t i = 0; i < student.num_blocks(); ++i) {
      if (ckpt)
        h = checkpointed_block([&student, i, pos](const at::Tensor& x) { return student.forward_block(i, x, pos).hidden; },
                               h);
      else
        h = student.forward_block(i, h, pos).hidden;
    }
    at::Tensor h_s = student.final_norm(h);  // [B, T, D]
    at::Tensor h_t;                          // [B, T, Dt]
    {
      c10::NoGradGuard teacher_no_grad;
      h_t = teacher.forward_hidden(ids);
    }
    loss = kd_loss(h_s, student.head_weight(), h_t, teacher.head_weight(), ids, batch.loss_mask, norm, stage.kd);
  }
  if (backward) loss.backward();
  return loss.item<double>();
}

double ild_forward_backward(CausalLM& student, CausalLM& teacher, const PackedBatch& batch, double norm,
                            const Stage& stage, bool backward) {
  const at::Device dev = student.options().device();
  at::Tensor ids = batch.ids.to(dev);  // [B, T]
  const at::Tensor pos = positions_for(ids.size(1), dev);
  const at::ScalarType ct = compute_dtype(stage, dev);
  at::Tensor w = at::full(ids.sizes(), 1.0 / norm, at::TensorOptions().dtype(at::kFloat).device(dev));  // [B, T]
  double total = 0;
  at::Tensor h_t;  // [B, T, D] the teacher's input to the current layer
  {
    c10::NoGradGuard no_grad;
    h_t = teacher.embed(ids);
  }
  for (int64_t l = 0; l < student.num_blocks(); ++l) {
    CausalLM::BlockOutput t_out, s_out;
    {
      c10::NoGradGuard no_grad;
      AutocastScope autocast(dev.type(), ct);
      t_out = teacher.forward_block(l, h_t, pos);
    }
    at::Tensor loss;
    {
      std::optional<c10::NoGradGuard> no_grad;
      if (!backward) no_grad.emplace();
      AutocastScope autocast(dev.type(), ct);
      // Teacher forcing: the student's layer l sees exactly the teacher's input to layer l.
      s_out = student.forward_block(l, h_t.to(student.options().dtype()), pos);
      loss = ild_layer_loss(s_out.hidden, t_out.hidden, s_out.mixer_out, t_out.mixer_out, w, stage.ild);
    }
    if (backward) loss.backward();  // layers are independent: free this layer's graph now
    total += loss.item<double>();
    h_t = t_out.hidden;
  }
  return total;
}

double learning_rate(const Stage& stage, int64_t step, int64_t total) {
  const int64_t warmup = static_cast<int64_t>(std::ceil(stage.warmup_ratio * static_cast<double>(total)));
  if (step < warmup) return stage.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t span = std::max<int64_t>(1, total - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
  return stage.min_lr + 0.5 * (stage.lr - stage.min_lr) * (1.0 + std::cos(M_PI * progress));
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  c10::NoGradGuard no_grad;
  at::Tensor sq;
  for (const auto& p : params) {
    const at::Tensor& g = p.tensor.grad();
    if (!g.defined()) continue;
    at::Tensor s = g.to(at::kFloat).pow(2).sum().to(at::kDouble);
    sq = sq.defined() ? sq + s : s;
  }
  if (!sq.defined()) return 0;
  const double norm = std::sqrt(sq.item<double>());
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params)
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(scale);
  }
  return norm;
}

std::unique_ptr<CausalLM> with_mla_yarn(std::unique_ptr<CausalLM> model, double factor,
                                        std::optional<int64_t> original_max) {
  ModelConfig config = model->config();
  bool any = false;
  for (auto& layer : config.layers) {
    if (layer.mixer != MixerKind::kMla) continue;
    any = true;
    layer.mla.rope.type = "yarn";
    layer.mla.rope.factor = factor;
    if (original_max) layer.mla.rope.original_max_position_embeddings = *original_max;
  }
  if (!any) return model;
  auto out = std::make_unique<CausalLM>(config, model->options());
  std::vector<at::Tensor> params;
  model->visit_parameters([&](const std::string&, at::Tensor& t) { params.push_back(t); });
  size_t i = 0;
  out->visit_parameters([&](const std::string&, at::Tensor& t) { t = params.at(i++); });
  return out;
}

// ---- the stage runner ------------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

fs::path model_path(const ModelRef& ref, const fs::path& out) {
  return ref.stage.empty() ? ref.path : out / ref.stage / "final";
}

// Keeps the metrics lines of steps <= `step` (a resumed run rewrites what came after its checkpoint).
Status truncate_metrics(const fs::path& file, int64_t step) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return {};
  HYLO_TRY(std::string text, read_text_file(file));
  std::istringstream in(text);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a line cut by a kill: dropped
    }
  }
  return write_file_atomic(file, kept);
}

void append_line(const fs::path& file, const nlohmann::json& j) {
  std::ofstream out(file, std::ios::app);
  out << j.dump() << "\n";
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Mean held-out loss over eval_batches global batches, the same sequences at every evaluation.
double heldout_loss(CausalLM& student, CausalLM& teacher, const std::shared_ptr<const TokenDataset>& data,
                    const Stage& stage, SyncHooks& hooks) {
  PackedLoader loader(data, Split::kHeldout, stage.seq_len, stage.seed, hooks.rank(), hooks.world());
  double sum = 0;
  for (int64_t b = 0; b < stage.eval_batches; ++b) {
    double loss = 0;
    std::vector<PackedBatch> micro;
    at::Tensor count = at::zeros({1}, at::kDouble);
    const int64_t accum = stage.batch / (stage.micro_batch * hooks.world());
    for (int64_t m = 0; m < accum; ++m) {
      micro.push_back(loader.next(stage.micro_batch * hooks.world()));
      count[0] += counted_tokens(stage, micro.back());
    }
    hooks.all_reduce_sum(count);
    const double norm = std::max(1.0, count[0].item<double>());
    for (const auto& mb : micro)
      loss += stage.kind == StageKind::kKd ? kd_forward_backward(student, teacher, mb, norm, stage, false)
                                           : ild_forward_backward(student, teacher, mb, norm, stage, false);
    at::Tensor l = at::full({1}, loss, at::kDouble);
    hooks.all_reduce_sum(l);
    sum += l[0].item<double>();
  }
  return sum / static_cast<double>(stage.eval_batches);
}

Status run_assemble(const Stage& st, const fs::path& out, const TrainOptions& opt, SyncHooks& hooks) {
  const fs::path dir = out / st.name;
  if (hooks.rank() == 0) {
    LoadOptions lo;  // fp32 on the CPU: assembly only copies tensors
    auto mla = CausalLM::load(model_path(st.from_mla, out), lo);
    auto linear = CausalLM::load(model_path(st.from_linear, out), lo);
    HYLO_TRY(LayerPlan plan, load_layer_plan(st.plan));
    HYLO_TRY(auto hybrid, assemble_hybrid(*mla, *linear, plan));
    std::error_code ec;
    fs::create_directories(dir, ec);
    HYLO_CHECK_OK(save_checkpoint(*hybrid, dir / "final", model_path(st.from_linear, out)));
    if (opt.progress) std::fprintf(stderr, "[%s] assembled %s\n", st.name.c_str(), (dir / "final").string().c_str());
  }
  hooks.barrier();
  return {};
}

// Returns true when the stage ran to its end, false when stop_after stopped it.
Result<bool> run_training_stage(const Stage& st, size_t index, size_t count, const fs::path& out,
                                const TrainOptions& opt, SyncHooks& hooks) {
  const fs::path dir = out / st.name, state_dir = dir / "train_state", metrics = dir / "metrics.jsonl";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(dir.string() + ": cannot create: " + ec.message());
  const int world = hooks.world(), rank = hooks.rank();
  if (st.batch % (st.micro_batch * world) != 0)
    return make_error(st.name + ": batch " + std::to_string(st.batch) + " is not divisible by micro_batch x ranks = " +
                      std::to_string(st.micro_batch) + " x " + std::to_string(world));
  const int64_t accum = st.batch / (st.micro_batch * world);
  int64_t total = stage_steps(st);
  if (opt.max_steps) total = std::min(total, *opt.max_steps);

  HYLO_TRY(auto data, TokenDataset::open(st.data));
  const fs::path student_path = model_path(st.student, out);
  LoadOptions student_lo{at::kFloat, opt.device};  // fp32 master weights
  auto student = CausalLM::load(student_path, student_lo);
  if (st.mla_yarn_factor)
    student = with_mla_yarn(std::move(student), *st.mla_yarn_factor, st.mla_original_max_position_embeddings);
  LoadOptions teacher_lo{opt.device.is_cuda() ? st.teacher_dtype : at::kFloat, opt.device};
  auto teacher = CausalLM::load(model_path(st.teacher, out), teacher_lo);
  const ModelConfig &sc = student->config(), &tc = teacher->config();
  if (sc.vocab_size != tc.vocab_size)
    return make_error(st.name + ": student vocabulary " + std::to_string(sc.vocab_size) + " differs from the teacher's " +
                      std::to_string(tc.vocab_size));
  if (data->vocab_size() > sc.vocab_size)
    return make_error(st.data.string() + ": the dataset's vocabulary (" + std::to_string(data->vocab_size()) +
                      ") is larger than the model's (" + std::to_string(sc.vocab_size) + ")");
  if (st.kind == StageKind::kIld && (sc.num_layers() != tc.num_layers() || sc.hidden_size != tc.hidden_size))
    return make_error(st.name + ": ILD needs a teacher of the student's depth and width (student " +
                      std::to_string(sc.num_layers()) + " x " + std::to_string(sc.hidden_size) + ", teacher " +
                      std::to_string(tc.num_layers()) + " x " + std::to_string(tc.hidden_size) + ")");
  const bool eval_possible = data->num_tokens(Split::kHeldout) >= st.seq_len;

  // Trainable parameters: leaves with requires_grad; everything else frozen.
  student->visit_parameters([](const std::string&, at::Tensor& t) { t.requires_grad_(false); });
  std::vector<NamedParam> params = trainable_parameters(*student, st);
  for (auto& p : params) p.tensor.requires_grad_(true);
  AdamW optimizer(params, st.adamw);
  hooks.attach(params);
  optimizer.set_owned(hooks.owned(params));

  PackedLoader loader(data, Split::kTrain, st.seq_len, st.seed, rank, world);
  TrainState state;
  state.stage = st.name;
  state.total_steps = total;
  state.world = world;
  if (opt.resume && fs::exists(state_dir / "state.json", ec)) {
    HYLO_TRY(state, load_train_state(state_dir, *student, optimizer));
    if (state.total_steps != total)
      return make_error((state_dir / "state.json").string() + ": total_steps " + std::to_string(state.total_steps) +
                        " differs from this run's " + std::to_string(total) +
                        " (the recipe's tokens/batch/seq_len or --max-steps changed since the checkpoint)");
    loader.restore(state.loader);
    state.world = world;
    if (rank == 0) HYLO_CHECK_OK(truncate_metrics(metrics, state.step));
  } else if (rank == 0) {
    HYLO_CHECK_OK(remove_tree(metrics));
  }
  hooks.barrier();

  const int64_t start_step = state.step;
  const std::string label = "[" + std::to_string(index + 1) + "/" + std::to_string(count) + "] " + st.name;
  std::optional<ProgressBar> bar;
  if (opt.progress && rank == 0) bar.emplace(label, total - start_step, "step");
  auto eval_and_plot = [&](int64_t step) {
    if (!eval_possible) return;
    const double h = heldout_loss(*student, *teacher, data, st, hooks);
    if (rank == 0) {
      append_line(metrics, {{"step", step}, {"tokens", state.tokens}, {"heldout_loss", h}});
      Status s = write_loss_plot(metrics, dir / "loss.svg",
                                 "stage " + st.name + " (" + stage_kind_name(st.kind) + ", " + std::to_string(total) +
                                     " steps of " + std::to_string(st.batch) + " x " + std::to_string(st.seq_len) +
                                     " tokens)");
      if (!s.ok() && opt.progress) std::fprintf(stderr, "warning: %s\n", s.error().c_str());
    }
  };
  if (start_step == 0 && st.eval_every > 0) eval_and_plot(0);

  bench::reset_peak_memory(opt.device);  // the stage's peak: weights, teacher, optimizer state and activations
  const auto t0 = Clock::now();
  double window_loss = 0;
  int64_t window_steps = 0;
  while (state.step < total) {
    std::vector<PackedBatch> micro;
    at::Tensor n = at::zeros({1}, at::kDouble);
    for (int64_t m = 0; m < accum; ++m) {
      micro.push_back(loader.next(st.micro_batch * world));
      n[0] += counted_tokens(st, micro.back());
    }
    hooks.all_reduce_sum(n);
    const double norm = n[0].item<double>();
    double loss = 0;
    if (norm > 0) {
      for (int64_t m = 0; m < accum; ++m) {
        hooks.before_backward(static_cast<int>(m), m == accum - 1);
        loss += st.kind == StageKind::kKd ? kd_forward_backward(*student, *teacher, micro[m], norm, st, true)
                                          : ild_forward_backward(*student, *teacher, micro[m], norm, st, true);
      }
    }
    hooks.after_backward();
    const double grad_norm = clip_grad_norm(params, st.grad_clip);
    const double lr = learning_rate(st, state.step, total);
    optimizer.step(lr);
    hooks.after_step();
    optimizer.zero_grad();
    state.step += 1;
    state.tokens += st.batch * st.seq_len;
    state.loader = loader.state();
    // The loss sum and "some rank was asked to stop" travel in one all-reduce, so every rank stops at this step.
    const bool asked = opt.stop_requested && opt.stop_requested->load();
    at::Tensor l = at::tensor({loss, asked ? 1.0 : 0.0}, at::kDouble);
    hooks.all_reduce_sum(l);
    loss = l[0].item<double>();
    const bool signalled = l[1].item<double>() > 0;
    window_loss += loss;
    window_steps += 1;

    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double tok_s = static_cast<double>((state.step - start_step) * st.batch * st.seq_len) / std::max(secs, 1e-9);
    if (bar) {
      bar->set_status("loss " + fmt("%.4g", loss) + " lr " + fmt("%.2e", lr) + " " + fmt("%.0f", tok_s) + " tok/s");
      bar->set(state.step - start_step);
    }
    if (rank == 0 && (state.step % st.log_every == 0 || state.step == total)) {
      nlohmann::json line = {{"step", state.step},
                             {"tokens", state.tokens},
                             {"loss", window_loss / static_cast<double>(window_steps)},
                             {"lr", lr},
                             {"grad_norm", grad_norm},
                             {"tokens_per_s", tok_s},
                             {"elapsed_s", state.elapsed_seconds + secs}};
      // Rank 0's CUDA allocator peak so far in this stage (ranks are alike; with ZeRO-1 each holds its shard).
      if (const double peak = bench::peak_memory_bytes(opt.device); std::isfinite(peak)) line["peak_gpu_bytes"] = peak;
      append_line(metrics, line);
      window_loss = 0;
      window_steps = 0;
    }
    if ((st.eval_every > 0 && state.step % st.eval_every == 0) || state.step == total) eval_and_plot(state.step);
    const bool stop =
        state.step < total && (signalled || (opt.stop_after && state.step - start_step >= *opt.stop_after));
    if ((state.step % st.checkpoint_every == 0 && state.step < total) || stop) {
      TrainState save = state;
      save.elapsed_seconds += secs;
      HYLO_CHECK_OK(save_train_state(state_dir, *student, optimizer, save, hooks));
    }
    if (stop) {
      if (bar) bar->finish();
      if (rank == 0 && opt.progress)
        std::fprintf(stderr, "[%s] stopped at step %lld of %lld, checkpoint in %s\n", st.name.c_str(),
                     static_cast<long long>(state.step), static_cast<long long>(total), state_dir.string().c_str());
      hooks.detach();
      return false;
    }
  }
  if (bar) bar->finish();
  hooks.detach();
  for (auto& p : params) p.tensor.requires_grad_(false);
  if (rank == 0) {
    HYLO_CHECK_OK(save_checkpoint(*student, dir / "final", student_path));
    HYLO_CHECK_OK(remove_tree(state_dir));
    if (opt.progress) std::fprintf(stderr, "[%s] done: %s\n", st.name.c_str(), (dir / "final").string().c_str());
  }
  hooks.barrier();
  return true;
}

}  // namespace

namespace {

bool stage_done(const fs::path& out, const std::string& name) {
  std::error_code ec;
  return fs::exists(out / name / "final" / "config.json", ec);
}

// --stage: every named stage exists, and every stage it takes a model from is done or named before it.
Status check_only_stages(const Recipe& recipe, const TrainOptions& opt) {
  std::vector<std::string> picked;
  for (const Stage& st : recipe.stages) {
    bool named = false;
    for (const auto& n : opt.only_stages) named = named || n == st.name;
    if (!named) continue;
    for (const ModelRef* ref : {&st.student, &st.teacher, &st.from_mla, &st.from_linear}) {
      if (ref->stage.empty() || stage_done(opt.out, ref->stage)) continue;
      bool earlier = false;
      for (const auto& p : picked) earlier = earlier || p == ref->stage;
      if (!earlier)
        return make_error(recipe.source.string() + ": stage " + st.name + " takes a model from stage " + ref->stage +
                          ", which is not done in " + opt.out.string() + " and not named by --stage before it");
    }
    std::error_code ec;
    if (!opt.resume && fs::exists(opt.out / st.name, ec) && !fs::is_empty(opt.out / st.name, ec))
      return make_error((opt.out / st.name).string() + ": exists and is not empty; pass --resume to continue "
                        "that stage, or choose another --out");
    picked.push_back(st.name);
  }
  for (const auto& n : opt.only_stages) {
    bool found = false;
    for (const Stage& st : recipe.stages) found = found || st.name == n;
    if (!found) {
      std::string names;
      for (const Stage& st : recipe.stages) names += (names.empty() ? "" : ", ") + st.name;
      return make_error(recipe.source.string() + ": --stage " + n + ": no such stage (the recipe has " + names + ")");
    }
  }
  return {};
}

}  // namespace

Status run_recipe(const Recipe& recipe, const TrainOptions& opt, RunSummary* summary) {
  SyncHooks& hooks = opt.hooks ? *opt.hooks : single_process();
  HYLO_CHECK_OK(check_recipe_paths(recipe));
  std::error_code ec;
  if (!opt.only_stages.empty()) {
    HYLO_CHECK_OK(check_only_stages(recipe, opt));
  } else if (!opt.resume && fs::exists(opt.out, ec) && !fs::is_empty(opt.out, ec)) {
    return make_error(opt.out.string() + ": exists and is not empty; pass --resume to continue that run, or choose "
                      "another --out");
  }
  if (hooks.rank() == 0) {
    fs::create_directories(opt.out, ec);
    if (ec) return make_error(opt.out.string() + ": cannot create: " + ec.message());
  }
  hooks.barrier();
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const Stage& st = recipe.stages[i];
    bool named = opt.only_stages.empty();
    for (const auto& n : opt.only_stages) named = named || n == st.name;
    if (!named) continue;
    if (!stage_done(opt.out, st.name) && opt.stop_requested) {
      // A signal that came during an earlier stage's last steps or its evaluation stops before the next stage
      // starts (every rank agrees through the all-reduce), rather than one step into it.
      at::Tensor asked = at::full({1}, opt.stop_requested->load() ? 1.0 : 0.0, at::kDouble);
      hooks.all_reduce_sum(asked);
      if (asked[0].item<double>() > 0) {
        if (summary) summary->stopped = true;
        return {};
      }
    }
    if (stage_done(opt.out, st.name)) {
      if (opt.progress && hooks.rank() == 0)
        std::fprintf(stderr, "[%zu/%zu] %s: done earlier (%s)\n", i + 1, recipe.stages.size(), st.name.c_str(),
                     (opt.out / st.name / "final").string().c_str());
      continue;
    }
    if (st.kind == StageKind::kAssemble) {
      HYLO_CHECK_OK(run_assemble(st, opt.out, opt, hooks));
    } else {
      HYLO_TRY(bool finished, run_training_stage(st, i, recipe.stages.size(), opt.out, opt, hooks));
      if (!finished) {
        if (summary) summary->stopped = true;
        return {};
      }
    }
    if (summary) summary->finished_stages.push_back(st.name);
  }
  return {};
}

}  // namespace hylo::train
