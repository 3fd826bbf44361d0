#include "hylo/train/recipe.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cctype>
#include <cstdlib>
#include <set>

#include "hylo/config/yaml_fields.h"
#include "hylo/core/file_util.h"

namespace hylo::train {
namespace fs = std::filesystem;
namespace {

// The recipe's value readers on the shared field path and key check (config/yaml_fields.h).
struct Map : YamlFields {
  Result<double> number(const std::string& key) const {
    const YAML::Node v = node[key];
    try {
      if (!v.IsScalar()) throw YAML::Exception(v.Mark(), "");
      const double d = v.as<double>();
      if (!std::isfinite(d)) return bad(key, "expected a finite number");
      return d;
    } catch (const YAML::Exception&) {
      return bad(key, "expected a number");
    }
  }
  Result<int64_t> integer(const std::string& key) const {
    HYLO_TRY(double d, number(key));  // token budgets are often written 2.0e9
    if (std::floor(d) != d || std::fabs(d) > 9e15) return bad(key, "expected an integer");
    return static_cast<int64_t>(d);
  }
  Result<bool> boolean(const std::string& key) const {
    try {
      if (!node[key].IsScalar()) throw YAML::Exception(node[key].Mark(), "");
      return node[key].as<bool>();
    } catch (const YAML::Exception&) {
      return bad(key, "expected true or false");
    }
  }
  Result<std::string> string(const std::string& key) const {
    if (!node[key].IsScalar()) return bad(key, "expected a string");
    return node[key].Scalar();
  }
  Result<Map> sub(const std::string& key) const {
    HYLO_TRY(YamlFields f, YamlFields::sub(key));
    return Map{std::move(f)};
  }
};

// ${VAR} and $VAR from the environment.
Result<std::string> expand_env(const std::string& text, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '$') {
      out += text[i++];
      continue;
    }
    size_t start = i + 1, end;
    std::string var;
    if (start < text.size() && text[start] == '{') {
      end = text.find('}', start);
      if (end == std::string::npos) return make_error(where + ": unclosed ${ in '" + text + "'");
      var = text.substr(start + 1, end - start - 1);
      i = end + 1;
    } else {
      end = start;
      while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_')) ++end;
      var = text.substr(start, end - start);
      i = end;
    }
    if (var.empty()) return make_error(where + ": empty variable name in '" + text + "'");
    const char* value = std::getenv(var.c_str());
    if (!value) return make_error(where + ": environment variable " + var + " is not set (used in '" + text + "')");
    out += value;
  }
  return out;
}

Result<fs::path> path_field(const Map& m, const std::string& key, const fs::path& base) {
  HYLO_TRY(std::string raw, m.string(key));
  HYLO_TRY(std::string text, expand_env(raw, m.where(key)));
  if (text.empty()) return m.bad(key, "empty path");
  fs::path p(text);
  return p.is_absolute() ? p : (base / p).lexically_normal();
}

Result<ModelRef> model_field(const Map& m, const std::string& key, const fs::path& base) {
  ModelRef r;
  r.field = m.field(key);
  if (!m.has(key)) return make_error(m.where(key) + ": missing key (a model path or {stage: NAME})");
  if (m.node[key].IsMap()) {
    HYLO_TRY(Map s, m.sub(key));
    HYLO_CHECK_OK(s.check_keys({"stage"}));
    if (!s.has("stage")) return make_error(s.where("stage") + ": missing key (the name of an earlier stage)");
    HYLO_TRY(r.stage, s.string("stage"));
    return r;
  }
  HYLO_TRY(r.path, path_field(m, key, base));
  return r;
}

Result<at::ScalarType> dtype_field(const Map& m, const std::string& key) {
  HYLO_TRY(std::string s, m.string(key));
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  if (s == "fp32" || s == "float32") return at::kFloat;
  return m.bad(key, "expected bf16 or fp32, got '" + s + "'");
}

const std::set<std::string> kTrainKeys = {
    "student", "teacher", "train", "data", "seq_len", "tokens", "batch", "micro_batch", "lr", "min_lr", "warmup_ratio",
    "adamw", "grad_clip", "ild", "kd", "mla_yarn", "activation_checkpointing", "reset_state_at_doc_start", "precision",
    "teacher_dtype", "checkpoint_every", "eval_every", "eval_batches", "log_every", "seed"};

// Applies the keys of `m` (a stage or the defaults) onto `st`.
Status apply_train_keys(const Map& m, const fs::path& base, Stage& st) {
  if (m.has("student")) {
    HYLO_TRY(st.student, model_field(m, "student", base));
  }
  if (m.has("teacher")) {
    HYLO_TRY(st.teacher, model_field(m, "teacher", base));
  }
  if (m.has("train")) {
    HYLO_TRY(std::string t, m.string("train"));
    if (t != "all" && t != "mixers") return m.bad("train", "expected 'all' or 'mixers', got '" + t + "'");
    st.train_mixers_only = t == "mixers";
  }
  if (m.has("data")) {
    HYLO_TRY(st.data, path_field(m, "data", base));
  }
  auto positive_int = [&](const std::string& key, int64_t& out, int64_t min) -> Status {
    if (!m.has(key)) return {};
    HYLO_TRY(out, m.integer(key));
    if (out < min) return m.bad(key, "must be >= " + std::to_string(min));
    return {};
  };
  HYLO_CHECK_OK(positive_int("seq_len", st.seq_len, 2));
  HYLO_CHECK_OK(positive_int("tokens", st.tokens, 1));
  HYLO_CHECK_OK(positive_int("batch", st.batch, 1));
  HYLO_CHECK_OK(positive_int("micro_batch", st.micro_batch, 1));
  HYLO_CHECK_OK(positive_int("checkpoint_every", st.checkpoint_every, 1));
  HYLO_CHECK_OK(positive_int("eval_every", st.eval_every, 0));
  HYLO_CHECK_OK(positive_int("eval_batches", st.eval_batches, 1));
  HYLO_CHECK_OK(positive_int("log_every", st.log_every, 1));
  if (m.has("seed")) {
    int64_t s = 0;
    HYLO_CHECK_OK(positive_int("seed", s, 0));
    st.seed = static_cast<uint64_t>(s);
  }
  auto num = [&](const Map& mm, const std::string& key, double& out, double lo, bool lo_open, double hi,
                 bool hi_open) -> Status {
    if (!mm.has(key)) return {};
    HYLO_TRY(out, mm.number(key));
    const bool ok = (lo_open ? out > lo : out >= lo) && (hi_open ? out < hi : out <= hi);
    if (!ok)
      return mm.bad(key, "must be in " + std::string(lo_open ? "(" : "[") + std::to_string(lo) + ", " +
                             (std::isinf(hi) ? std::string("inf") : std::to_string(hi)) + (hi_open ? ")" : "]") +
                             ", got " + std::to_string(out));
    return {};
  };
  const double inf = INFINITY;
  HYLO_CHECK_OK(num(m, "lr", st.lr, 0, true, inf, true));
  HYLO_CHECK_OK(num(m, "min_lr", st.min_lr, 0, false, inf, true));
  HYLO_CHECK_OK(num(m, "warmup_ratio", st.warmup_ratio, 0, false, 1, true));
  HYLO_CHECK_OK(num(m, "grad_clip", st.grad_clip, 0, false, inf, true));
  if (m.has("adamw")) {
    HYLO_TRY(Map a, m.sub("adamw"));
    HYLO_CHECK_OK(a.check_keys({"beta1", "beta2", "eps", "weight_decay"}));
    HYLO_CHECK_OK(num(a, "beta1", st.adamw.beta1, 0, false, 1, true));
    HYLO_CHECK_OK(num(a, "beta2", st.adamw.beta2, 0, false, 1, true));
    HYLO_CHECK_OK(num(a, "eps", st.adamw.eps, 0, true, inf, true));
    HYLO_CHECK_OK(num(a, "weight_decay", st.adamw.weight_decay, 0, false, inf, true));
  }
  if (m.has("ild")) {
    HYLO_TRY(Map a, m.sub("ild"));
    HYLO_CHECK_OK(a.check_keys({"hidden_weight", "mixer_weight"}));
    HYLO_CHECK_OK(num(a, "hidden_weight", st.ild.hidden, 0, false, inf, true));
    HYLO_CHECK_OK(num(a, "mixer_weight", st.ild.mixer, 0, false, inf, true));
    if (st.ild.hidden == 0 && st.ild.mixer == 0) return a.bad("mixer_weight", "hidden_weight and mixer_weight are both 0");
  }
  if (m.has("kd")) {
    HYLO_TRY(Map a, m.sub("kd"));
    HYLO_CHECK_OK(a.check_keys({"temperature", "ce_weight", "vocab_tile", "seq_tile"}));
    HYLO_CHECK_OK(num(a, "temperature", st.kd.temperature, 0, true, inf, true));
    HYLO_CHECK_OK(num(a, "ce_weight", st.kd.ce_weight, 0, false, inf, true));
    if (a.has("vocab_tile")) {
      HYLO_TRY(st.kd.vocab_tile, a.integer("vocab_tile"));
      if (st.kd.vocab_tile < 1) return a.bad("vocab_tile", "must be >= 1");
    }
    if (a.has("seq_tile")) {
      HYLO_TRY(st.kd.seq_tile, a.integer("seq_tile"));
      if (st.kd.seq_tile < 1) return a.bad("seq_tile", "must be >= 1");
    }
  }
  if (m.has("mla_yarn")) {
    HYLO_TRY(Map a, m.sub("mla_yarn"));
    HYLO_CHECK_OK(a.check_keys({"factor", "original_max_position_embeddings"}));
    if (!a.has("factor")) return make_error(a.where("factor") + ": missing key (a number >= 1)");
    double f = 1;
    HYLO_CHECK_OK(num(a, "factor", f, 1, false, inf, true));
    st.mla_yarn_factor = f;
    if (a.has("original_max_position_embeddings")) {
      HYLO_TRY(int64_t o, a.integer("original_max_position_embeddings"));
      if (o < 1) return a.bad("original_max_position_embeddings", "must be >= 1");
      st.mla_original_max_position_embeddings = o;
    } else if (f > 1) {
      return make_error(a.where("original_max_position_embeddings") +
                        ": missing key (YaRN with factor > 1 needs the window it extends)");
    }
  }
  if (m.has("activation_checkpointing")) {
    HYLO_TRY(st.activation_checkpointing, m.boolean("activation_checkpointing"));
  }
  if (m.has("reset_state_at_doc_start")) {
    HYLO_TRY(st.reset_state_at_doc_start, m.boolean("reset_state_at_doc_start"));
    if (st.reset_state_at_doc_start)
      return m.bad("reset_state_at_doc_start",
                   "true is not supported yet: the mixers' training forward has no per-document (varlen) state reset; "
                   "use false (documents attend across packing boundaries, as HF packing does)");
  }
  if (m.has("precision")) {
    HYLO_TRY(st.precision, dtype_field(m, "precision"));
  }
  if (m.has("teacher_dtype")) {
    HYLO_TRY(st.teacher_dtype, dtype_field(m, "teacher_dtype"));
  }
  return {};
}

Result<Stage> parse_stage(const Map& m, const Map* defaults, const fs::path& base) {
  Stage st;
  if (!m.has("name")) return make_error(m.where("name") + ": missing key (a stage name)");
  HYLO_TRY(st.name, m.string("name"));
  if (st.name.empty() || st.name.find_first_of("/\\ ") != std::string::npos || st.name[0] == '.')
    return m.bad("name", "a stage name must be non-empty, without '/', '\\', spaces or a leading '.'");
  if (!m.has("kind")) return make_error(m.where("kind") + ": missing key (ild, assemble or kd)");
  HYLO_TRY(std::string kind, m.string("kind"));
  if (kind == "ild") st.kind = StageKind::kIld;
  else if (kind == "kd") st.kind = StageKind::kKd;
  else if (kind == "assemble") st.kind = StageKind::kAssemble;
  else return m.bad("kind", "expected ild, assemble or kd, got '" + kind + "'");

  if (st.kind == StageKind::kAssemble) {
    HYLO_CHECK_OK(m.check_keys({"name", "kind", "from_mla", "from_linear", "plan"}));
    HYLO_TRY(st.from_mla, model_field(m, "from_mla", base));
    HYLO_TRY(st.from_linear, model_field(m, "from_linear", base));
    if (!m.has("plan")) return make_error(m.where("plan") + ": missing key (the layer plan YAML)");
    HYLO_TRY(st.plan, path_field(m, "plan", base));
    return st;
  }
  std::set<std::string> allowed = kTrainKeys;
  allowed.insert({"name", "kind"});
  HYLO_CHECK_OK(m.check_keys(allowed));
  if (st.kind == StageKind::kKd) st.lr = 6e-5;  // HYLO.md 4.2 (1B / Qwen)
  else st.lr = 2e-4;                            // HYLO.md 4.1
  if (defaults) HYLO_CHECK_OK(apply_train_keys(*defaults, base, st));
  HYLO_CHECK_OK(apply_train_keys(m, base, st));
  for (const char* key : {"student", "teacher", "data", "tokens", "batch"})
    if (!m.has(key) && !(defaults && defaults->has(key)))
      return make_error(m.where(key) + ": missing key (needed by a " + kind + " stage)");
  if (st.micro_batch == 0) st.micro_batch = st.batch;
  if (st.batch % st.micro_batch != 0)
    return m.bad("micro_batch", "batch " + std::to_string(st.batch) + " is not a multiple of micro_batch " +
                                    std::to_string(st.micro_batch));
  if (st.min_lr > st.lr) return m.bad("min_lr", "is above lr");
  if (st.tokens < st.batch * st.seq_len)
    return m.bad("tokens", "budget " + std::to_string(st.tokens) + " is less than one step (batch x seq_len = " +
                               std::to_string(st.batch * st.seq_len) + " tokens)");
  if (st.kind == StageKind::kIld && st.kd.ce_weight > 0)
    return m.bad("kd", "an ild stage has no KD loss; remove kd (or use kind: kd)");
  return st;
}

}  // namespace

const char* stage_kind_name(StageKind kind) {
  switch (kind) {
    case StageKind::kIld: return "ild";
    case StageKind::kAssemble: return "assemble";
    case StageKind::kKd: return "kd";
  }
  return "?";
}

const Stage* Recipe::find(const std::string& n) const {
  for (const auto& s : stages)
    if (s.name == n) return &s;
  return nullptr;
}

int64_t stage_steps(const Stage& stage) {
  return std::max<int64_t>(1, stage.tokens / (stage.batch * stage.seq_len));
}

Result<Recipe> parse_recipe(const std::string& yaml_text, const std::string& source, const fs::path& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return make_error(source + ": YAML syntax error: " + e.what());
  }
  if (!root.IsMap()) return make_error(source + ": a recipe is a mapping with name and stages");
  Map top{{root, source, ""}};
  HYLO_CHECK_OK(top.check_keys({"name", "defaults", "stages"}));
  Recipe r;
  r.source = source;
  if (!top.has("name")) return make_error(source + ": name: missing key (the recipe's name)");
  HYLO_TRY(r.name, top.string("name"));
  std::optional<Map> defaults;
  if (top.has("defaults")) {
    HYLO_TRY(Map d, top.sub("defaults"));
    HYLO_CHECK_OK(d.check_keys(kTrainKeys));
    defaults = d;
  }
  if (!root["stages"] || !root["stages"].IsSequence() || root["stages"].size() == 0)
    return make_error(source + ": stages" + yaml_line_of(root["stages"]) + ": expected a non-empty list of stages");
  std::set<std::string> names;
  for (size_t i = 0; i < root["stages"].size(); ++i) {
    const YAML::Node n = root["stages"][i];
    const std::string path = "stages[" + std::to_string(i) + "]";
    if (!n.IsMap()) return make_error(source + ": " + path + yaml_line_of(n) + ": expected a mapping");
    Map m{{n, source, path}};
    HYLO_TRY(Stage st, parse_stage(m, defaults ? &*defaults : nullptr, base_dir));
    if (names.count(st.name)) return m.bad("name", "stage name '" + st.name + "' is used twice");
    // {stage: X} must name an EARLIER stage that makes a model.
    for (const ModelRef* ref : {&st.student, &st.teacher, &st.from_mla, &st.from_linear}) {
      if (ref->stage.empty()) continue;
      if (!names.count(ref->stage))
        return make_error(source + ": " + ref->field + ".stage: '" + ref->stage + "' is not an earlier stage");
    }
    names.insert(st.name);
    r.stages.push_back(std::move(st));
  }
  return r;
}

Result<Recipe> load_recipe(const fs::path& path) {
  HYLO_TRY(std::string text, read_text_file(path));
  return parse_recipe(text, path.string(), fs::absolute(path).parent_path());
}

Status check_recipe_paths(const Recipe& recipe) {
  std::error_code ec;
  auto check_model = [&](const ModelRef& ref) -> Status {
    if (!ref.stage.empty()) return {};
    const fs::path& p = ref.path;
    if (fs::is_directory(p, ec)) {
      if (!fs::exists(p / "config.json", ec))
        return make_error(recipe.source.string() + ": " + ref.field + ": " + p.string() +
                          " is a directory without config.json (not a model)");
      return {};
    }
    if (fs::is_regular_file(p, ec) && p.extension() == ".gguf") return {};
    return make_error(recipe.source.string() + ": " + ref.field + ": " + p.string() +
                      ": no such model directory or .gguf file");
  };
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const Stage& st = recipe.stages[i];
    const std::string where = recipe.source.string() + ": stages[" + std::to_string(i) + "].";
    if (st.kind == StageKind::kAssemble) {
      HYLO_CHECK_OK(check_model(st.from_mla));
      HYLO_CHECK_OK(check_model(st.from_linear));
      if (!fs::is_regular_file(st.plan, ec)) return make_error(where + "plan: " + st.plan.string() + ": no such file");
      continue;
    }
    HYLO_CHECK_OK(check_model(st.student));
    HYLO_CHECK_OK(check_model(st.teacher));
    if (!fs::is_regular_file(st.data / "index.json", ec))
      return make_error(where + "data: " + st.data.string() + ": not a dataset (no index.json; make one with hylo data)");
  }
  return {};
}

}  // namespace hylo::train
