#include "hylo/upcycle/upcycler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/upcycle/init_gdn.h"
#include "hylo/upcycle/init_mamba2.h"
#include "hylo/upcycle/init_mla.h"

namespace hylo {
namespace {

using init::NamedTensors;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Copies `src` into a parameter of the student. Shapes must agree up to singleton dimensions (a depthwise conv
// is [C, K] here and [C, 1, K] in checkpoints of other layouts).
void assign(at::Tensor& param, const at::Tensor& src, const std::string& name) {
  at::Tensor s = src;
  if (s.sizes() != param.sizes()) {
    if (s.numel() != param.numel() || s.squeeze().sizes() != param.squeeze().sizes())
      throw Error("upcycle: initialiser for '" + name + "' has shape " + shape_str(src.sizes()) + ", the model's is " +
                  shape_str(param.sizes()));
    s = s.reshape(param.sizes());
  }
  param = s.to(param.device(), param.scalar_type()).contiguous().clone();
}

std::map<std::string, at::Tensor> parameter_map(CausalLM& model) {
  std::map<std::string, at::Tensor> m;
  model.visit_parameters([&](const std::string& name, at::Tensor& t) { m[name] = t; });
  return m;
}

std::string fmt(double v, const char* f = "%.4f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string thousands(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v < 0 ? "-" : "") + out;
}

}  // namespace

at::Tensor teacher_log_probs(CausalLM& teacher, const at::Tensor& ids) {
  c10::NoGradGuard no_grad;
  return teacher.forward(ids).to(at::kFloat).log_softmax(-1);  // [1, T, V]
}

double logit_kl(const at::Tensor& teacher_logp, CausalLM& student, const at::Tensor& ids) {
  c10::NoGradGuard no_grad;
  const at::Tensor& lt = teacher_logp;                                   // [1, T, V]
  at::Tensor ls = student.forward(ids).to(at::kFloat).log_softmax(-1);  // [1, T, V]
  at::Tensor kl = (lt.exp() * (lt - ls)).sum(-1);                        // [1, T]
  return kl.mean().item<double>();
}

double logit_kl(CausalLM& teacher, CausalLM& student, const at::Tensor& ids) {
  return logit_kl(teacher_log_probs(teacher, ids), student, ids);
}

Result<at::Tensor> calibration_ids(const std::filesystem::path& text_path, const std::filesystem::path& tokenizer_path,
                                   int64_t tokens) {
  HYLO_TRY(std::string text, read_text_file(text_path));
  HYLO_TRY(auto tok, tok::Tokenizer::from_path(tokenizer_path));
  // Enough text for the requested tokens (a few characters per token), not the whole book.
  if (text.size() > static_cast<size_t>(tokens) * 16 + 1024) text.resize(static_cast<size_t>(tokens) * 16 + 1024);
  std::vector<int32_t> ids = tok.encode(text, /*add_special_tokens=*/true);
  if (static_cast<int64_t>(ids.size()) < tokens)
    return make_error(text_path.string() + ": only " + std::to_string(ids.size()) + " tokens, " + std::to_string(tokens) +
                      " requested for calibration");
  at::Tensor t = at::empty({1, tokens}, at::kLong);  // [1, T]
  for (int64_t i = 0; i < tokens; ++i) t[0][i] = static_cast<int64_t>(ids[i]);
  return t;
}

Result<UpcycleResult> upcycle(CausalLM& teacher, const LayerPlan& plan, const UpcycleOptions& options) {
  const auto t0 = Clock::now();
  const ModelConfig& tc = teacher.config();
  HYLO_TRY(ModelConfig config, apply_plan(tc, plan));

  // Calibration inputs are checked before the SVDs too, so a missing file fails fast. The KL is a report, not
  // a requirement: without calibration text it is skipped, and the report says so and how to get it.
  at::Tensor calib;
  const std::filesystem::path calib_path = options.calibration_text;
  std::string kl_skipped;
  if (options.calibration_tokens <= 0)
    kl_skipped = "calibration tokens set to 0; pass --calibration FILE --calibration-tokens N to measure it";
  else if (calib_path.empty())
    kl_skipped = "no calibration text given; pass --calibration FILE (any text file) to measure it";
  if (kl_skipped.empty()) {
    const std::filesystem::path tok_path = options.tokenizer.empty() ? teacher.source() : options.tokenizer;
    HYLO_TRY(calib, calibration_ids(calib_path, tok_path, options.calibration_tokens));
  }

  std::map<std::string, at::Tensor> tparams = parameter_map(teacher);
  auto get = [&](const std::string& name) -> at::Tensor {
    auto it = tparams.find(name);
    if (it == tparams.end()) throw Error("upcycle: the teacher has no tensor '" + name + "'");
    return it->second;
  };

  UpcycleReport report;
  report.teacher = teacher.source().string();
  report.plan_source = plan.source;
  report.plan_name = plan.name;
  report.kl_skipped = kl_skipped;
  const int64_t L = tc.num_layers(), d = tc.hidden_size;
  int64_t n_mla = 0;
  for (const auto& l : config.layers) n_mla += l.mixer == MixerKind::kMla;

  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  std::vector<NamedTensors> inits(L);
  bool folded = false, dropped_bias = false;
  {
    std::unique_ptr<ProgressBar> bar;
    if (options.progress && n_mla > 0) bar = std::make_unique<ProgressBar>("SVD init of MLA layers", n_mla, "layer");
    for (int64_t i = 0; i < L; ++i) {
      const std::string prefix = "model.layers." + std::to_string(i) + ".";
      LayerSpec& spec = config.layers[i];
      const init::TeacherAttention ta = init::teacher_attention(tc.layers[i].gqa, prefix, get);
      folded |= ta.folded_qk_norm;
      dropped_bias |= ta.dropped_bias;
      LayerReport lr;
      lr.index = i;
      lr.mixer = spec.mixer;
      switch (spec.mixer) {
        case MixerKind::kMla: {
          init::MlaInit mi = init::init_mla(ta, spec.mla, plan.mla.kv_energy);
          spec.mla.kv_lora_rank = mi.kv_rank;  // the dynamic rank (or the plan's)
          lr.init = "svd";
          lr.q_rank = mi.q_rank;
          lr.kv_rank = mi.kv_rank;
          if (mi.q_rank > 0) {
            lr.q_error = mi.q_error;
            lr.q_tail = mi.q_tail;
          }
          lr.kv_error = mi.kv_error;
          lr.kv_tail = mi.kv_tail;
          lr.k_pe_error = mi.k_pe_error;
          inits[i] = std::move(mi.params);
          if (bar) bar->advance();
          break;
        }
        case MixerKind::kGdn: {
          init::GdnInit gi = init::init_gdn(ta, spec.gdn, d, gen);
          lr.init = "copy q/k " + std::to_string(gi.key_rows_copied) + "/" + std::to_string(spec.gdn.key_dim()) +
                    " v " + std::to_string(gi.value_rows_copied) + "/" + std::to_string(spec.gdn.value_dim()) + " rows";
          inits[i] = std::move(gi.params);
          break;
        }
        case MixerKind::kMamba2:
          inits[i] = init::init_mamba2(ta, spec.mamba2, d, gen);
          lr.init = "x<-W_v B<-W_k C<-W_q";
          break;
        case MixerKind::kGqa:
          throw Error("upcycle: apply_plan produced a gqa layer");
      }
      const LayerFootprint ft = layer_footprint(tc, tc.layers[i]), fs = layer_footprint(config, spec);
      lr.params_teacher = ft.params;
      lr.params_student = fs.params;
      lr.kv_bytes_teacher = 2 * ft.kv_elems_per_token;
      lr.kv_bytes_student = 2 * fs.kv_elems_per_token;
      lr.state_bytes_student = 4 * fs.state_elems;
      report.layers.push_back(std::move(lr));
    }
    if (bar) bar->finish();
  }

  // config.json's torch_dtype describes the stored weights.
  switch (options.dtype) {
    case at::kBFloat16: config.torch_dtype = "bfloat16"; break;
    case at::kHalf: config.torch_dtype = "float16"; break;
    case at::kDouble: config.torch_dtype = "float64"; break;
    default: config.torch_dtype = "float32"; break;
  }
  // The student: every parameter comes from an initialiser or verbatim from the teacher; none is left unset.
  auto student = std::make_unique<CausalLM>(config, at::TensorOptions().dtype(options.dtype));
  std::set<std::string> used;
  std::vector<std::string> unset;
  student->visit_parameters([&](const std::string& name, at::Tensor& param) {
    if (name.rfind("model.layers.", 0) == 0) {
      const size_t dot = name.find('.', 13);
      const int64_t i = std::stoll(name.substr(13, dot - 13));
      const std::string rel = name.substr(dot + 1);
      auto it = inits[i].find(rel);
      if (it != inits[i].end()) {
        assign(param, it->second, name);
        used.insert(name);
        return;
      }
    }
    auto t = tparams.find(name);
    if (t != tparams.end() && t->second.sizes() == param.sizes()) {
      assign(param, t->second, name);  // embeddings, norms, MLPs: verbatim
      return;
    }
    if (name == "lm_head.weight" && tc.tie_word_embeddings) {
      assign(param, get("model.embed_tokens.weight"), name);  // untie: the head starts as the embedding
      return;
    }
    unset.push_back(name);
  });
  if (!unset.empty())
    throw Error("upcycle: no initial value for student parameter '" + unset.front() + "' (" +
                std::to_string(unset.size()) + " in all)");
  for (int64_t i = 0; i < L; ++i)
    for (const auto& [rel, _] : inits[i])
      if (!used.count("model.layers." + std::to_string(i) + "." + rel))
        throw Error("upcycle: the " + std::string(mixer_kind_name(config.layers[i].mixer)) + " mixer of layer " +
                    std::to_string(i) + " has no parameter '" + rel + "' that the initialiser provides");
  report.init_seconds = seconds_since(t0);

  if (folded)
    report.notes.push_back("teacher q_norm/k_norm gains folded into W_q/W_k rows; their per-head RMS normalisation is "
                           "not representable by the new mixers and is dropped (docs/upcycling.md)");
  if (dropped_bias) report.notes.push_back("teacher attention biases dropped (the new mixers have none)");
  report.params_teacher = parameter_count(tc);
  report.params_student = parameter_count(config);
  report.kv_bytes_teacher = kv_bytes_per_token(tc);
  report.kv_bytes_student = kv_bytes_per_token(config);

  if (calib.defined()) {
    const auto t1 = Clock::now();
    report.kl = logit_kl(teacher, *student, calib);
    report.kl_tokens = calib.size(1);
    report.calibration_source = calib_path.string();
    report.kl_seconds = seconds_since(t1);
  }
  return UpcycleResult{std::move(student), std::move(report)};
}

Result<std::unique_ptr<CausalLM>> assemble_hybrid(CausalLM& mla_model, CausalLM& linear_model, const LayerPlan& plan,
                                                  bool share_tensors) {
  const ModelConfig& mc = mla_model.config();
  const ModelConfig& lc = linear_model.config();
  const std::string& src = plan.source;
  if (mc.num_layers() != lc.num_layers() || mc.hidden_size != lc.hidden_size || mc.vocab_size != lc.vocab_size)
    return make_error(src + ": the Stage-I models do not share a teacher shape (layers " + std::to_string(mc.num_layers()) +
                      " vs " + std::to_string(lc.num_layers()) + ", hidden " + std::to_string(mc.hidden_size) + " vs " +
                      std::to_string(lc.hidden_size) + ")");
  // The plan selects layers of the backbone: describe it by the backbone attention both checkpoints keep.
  ModelConfig backbone = lc;
  for (auto& l : backbone.layers) {
    l.mixer = MixerKind::kGqa;
    l.gqa = lc.backbone_attention;
  }
  HYLO_TRY(std::vector<int64_t> mla_layers, plan_mla_layers(backbone, plan));
  std::set<int64_t> is_mla(mla_layers.begin(), mla_layers.end());
  ModelConfig config = lc;
  for (int64_t i = 0; i < lc.num_layers(); ++i) {
    const bool want_mla = is_mla.count(i) > 0;
    const LayerSpec& from = want_mla ? mc.layers[i] : lc.layers[i];
    if (want_mla && from.mixer != MixerKind::kMla)
      return make_error(src + ": layer " + std::to_string(i) + " should come from the MLA model, whose layer is " +
                        mixer_kind_name(from.mixer));
    if (!want_mla && from.mixer != MixerKind::kGdn && from.mixer != MixerKind::kMamba2)
      return make_error(src + ": layer " + std::to_string(i) + " should come from the linear model, whose layer is " +
                        mixer_kind_name(from.mixer));
    if (!want_mla && plan.linear && from.mixer != *plan.linear)
      return make_error(src + ": the plan asks for " + mixer_kind_name(*plan.linear) + " layers, the linear model has " +
                        mixer_kind_name(from.mixer));
    config.layers[i] = from;
  }
  auto mp = parameter_map(mla_model);
  auto lp = parameter_map(linear_model);
  auto out = std::make_unique<CausalLM>(config, linear_model.options());
  std::vector<std::string> missing;
  out->visit_parameters([&](const std::string& name, at::Tensor& param) {
    const std::map<std::string, at::Tensor>* from = &lp;
    if (name.rfind("model.layers.", 0) == 0) {
      const int64_t i = std::stoll(name.substr(13, name.find('.', 13) - 13));
      if (is_mla.count(i)) from = &mp;
    }
    auto it = from->find(name);
    if (it == from->end() || it->second.sizes() != param.sizes()) {
      missing.push_back(name);
      return;
    }
    param = share_tensors && it->second.scalar_type() == param.scalar_type()
                ? it->second
                : it->second.to(param.device(), param.scalar_type()).contiguous().clone();
  });
  if (!missing.empty())
    return make_error(src + ": assembling the hybrid: tensor '" + missing.front() + "' missing or of another shape in " +
                      "its Stage-I model (" + std::to_string(missing.size()) + " in all)");
  return out;
}

nlohmann::json UpcycleReport::to_json() const {
  nlohmann::json j;
  j["teacher"] = teacher;
  j["plan"] = {{"source", plan_source}, {"name", plan_name}};
  j["params"] = {{"teacher", params_teacher}, {"student", params_student}};
  j["kv_bytes_per_token"] = {{"teacher", kv_bytes_teacher},
                             {"student", kv_bytes_student},
                             {"ratio", kv_bytes_teacher ? double(kv_bytes_student) / double(kv_bytes_teacher) : 0.0},
                             {"bytes_per_elem", 2}};
  if (kl) j["kl_after_init"] = {{"nats_per_token", *kl}, {"tokens", kl_tokens}, {"text", calibration_source}};
  else j["kl_after_init"] = {{"skipped", true}, {"reason", kl_skipped}, {"how", "--calibration FILE"}};
  j["seconds"] = {{"init", init_seconds}, {"kl", kl_seconds}};
  j["notes"] = notes;
  nlohmann::json ls = nlohmann::json::array();
  for (const auto& l : layers) {
    nlohmann::json e = {{"index", l.index}, {"mixer", mixer_kind_name(l.mixer)}, {"init", l.init},
                        {"params", {{"teacher", l.params_teacher}, {"student", l.params_student}}},
                        {"kv_bytes_per_token", {{"teacher", l.kv_bytes_teacher}, {"student", l.kv_bytes_student}}},
                        {"state_bytes", l.state_bytes_student}};
    if (l.mixer == MixerKind::kMla) {
      e["ranks"] = {{"q_lora_rank", l.q_rank}, {"kv_lora_rank", l.kv_rank}};
      nlohmann::json err;
      if (l.q_error) err["q"] = *l.q_error;
      if (l.kv_error) err["kv"] = *l.kv_error;
      if (l.k_pe_error) err["k_pe"] = *l.k_pe_error;
      e["relative_error"] = err;
      nlohmann::json tail;
      if (l.q_tail) tail["q"] = *l.q_tail;
      if (l.kv_tail) tail["kv"] = *l.kv_tail;
      e["tail_energy"] = tail;
    }
    ls.push_back(e);
  }
  j["layers"] = ls;
  return j;
}

std::string UpcycleReport::table() const {
  std::string s;
  char line[256];
  s += "upcycle " + teacher + " with " + (plan_name.empty() ? plan_source : plan_name) + "\n";
  std::snprintf(line, sizeof line, "%5s %-7s %9s %8s %8s %8s %8s  %12s  %15s  %s\n", "layer", "mixer", "r_q/r_kv",
                "err q", "err kv", "err k_pe", "tail kv", "params", "KV B/token", "init");
  s += line;
  auto opt = [](const std::optional<double>& v) { return v ? fmt(*v) : std::string("-"); };
  for (const auto& l : layers) {
    std::string ranks = l.mixer == MixerKind::kMla ? std::to_string(l.q_rank) + "/" + std::to_string(l.kv_rank) : "-";
    std::string kv = std::to_string(l.kv_bytes_teacher) + " -> " + std::to_string(l.kv_bytes_student);
    std::snprintf(line, sizeof line, "%5lld %-7s %9s %8s %8s %8s %8s  %12s  %15s  %s\n", (long long)l.index,
                  mixer_kind_name(l.mixer), ranks.c_str(), opt(l.q_error).c_str(), opt(l.kv_error).c_str(),
                  opt(l.k_pe_error).c_str(), opt(l.kv_tail).c_str(), thousands(l.params_student).c_str(), kv.c_str(),
                  l.init.c_str());
    s += line;
  }
  const double ratio = kv_bytes_teacher ? double(kv_bytes_student) / double(kv_bytes_teacher) : 0.0;
  s += "parameters: teacher " + thousands(params_teacher) + ", hybrid " + thousands(params_student) +
       " (untied lm_head)\n";
  s += "KV cache per token (bf16): teacher " + thousands(kv_bytes_teacher) + " B, hybrid " +
       thousands(kv_bytes_student) + " B = " + fmt(100.0 * ratio, "%.2f") + "% of the teacher\n";
  int64_t state = 0;
  for (const auto& l : layers) state += l.state_bytes_student;
  std::snprintf(line, sizeof line, "%12s  %14s  %14s  %s\n", "context", "teacher KV", "hybrid KV", "hybrid state (fixed)");
  s += line;
  for (int64_t ctx : {int64_t{8192}, int64_t{32768}, int64_t{131072}, int64_t{1048576}}) {
    std::snprintf(line, sizeof line, "%12s  %14s  %14s  %s\n", thousands(ctx).c_str(),
                  format_bytes(double(kv_bytes_teacher) * double(ctx)).c_str(),
                  format_bytes(double(kv_bytes_student) * double(ctx)).c_str(), format_bytes(double(state)).c_str());
    s += line;
  }
  if (kl)
    s += "KL(teacher || hybrid) right after init: " + fmt(*kl) + " nats/token over " + std::to_string(kl_tokens) +
         " tokens of " + calibration_source + "\n";
  else
    s += "KL(teacher || hybrid) right after init: skipped (" + kl_skipped + ")\n";
  s += "init " + fmt(init_seconds, "%.1f") + " s, KL " + fmt(kl_seconds, "%.1f") + " s\n";
  for (const auto& n : notes) s += "note: " + n + "\n";
  return s;
}

}  // namespace hylo
