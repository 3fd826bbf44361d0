#include "hylo/config/layer_plan.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "hylo/config/yaml_fields.h"
#include "hylo/core/file_util.h"

namespace hylo {
namespace {

// The plan's value readers on the shared field path and key check (config/yaml_fields.h).
struct Map : YamlFields {
  Result<int64_t> integer(const std::string& key) const {
    const YAML::Node v = node[key];
    if (!v || v.IsNull()) return make_error(where(key) + ": missing key (an integer)");
    if (!v.IsScalar()) return make_error(where(key) + yaml_line_of(v) + ": expected an integer");
    try {
      return v.as<int64_t>();
    } catch (const YAML::Exception&) {
      // Budgets in bytes are often written 4.0e7: accept numbers that are exact integers.
      try {
        const double d = v.as<double>();
        if (std::floor(d) == d && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
      } catch (const YAML::Exception&) {
      }
      return make_error(where(key) + yaml_line_of(v) + ": expected an integer, got '" + v.Scalar() + "'");
    }
  }
  Result<std::optional<int64_t>> opt_integer(const std::string& key) const {
    if (!has(key)) return std::optional<int64_t>();
    HYLO_TRY(int64_t v, integer(key));
    return std::optional<int64_t>(v);
  }
  Result<double> number(const std::string& key) const {
    const YAML::Node v = node[key];
    if (!v || v.IsNull()) return make_error(where(key) + ": missing key (a number)");
    try {
      if (!v.IsScalar()) throw YAML::Exception(v.Mark(), "not a scalar");
      return v.as<double>();
    } catch (const YAML::Exception&) {
      return make_error(where(key) + yaml_line_of(v) + ": expected a number");
    }
  }
  Result<double> number_or(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    return number(key);
  }
  Result<bool> boolean_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node[key];
    try {
      if (!v.IsScalar()) throw YAML::Exception(v.Mark(), "not a scalar");
      return v.as<bool>();
    } catch (const YAML::Exception&) {
      return make_error(where(key) + yaml_line_of(v) + ": expected true or false");
    }
  }
  Result<std::string> string(const std::string& key) const {
    const YAML::Node v = node[key];
    if (!v || v.IsNull()) return make_error(where(key) + ": missing key (a string)");
    if (!v.IsScalar()) return make_error(where(key) + yaml_line_of(v) + ": expected a string");
    return v.Scalar();
  }
  Result<Map> sub(const std::string& key) const {
    HYLO_TRY(YamlFields f, YamlFields::sub(key));
    return Map{std::move(f)};
  }
};

Result<RopeConfig> parse_rope(const Map& m) {
  HYLO_CHECK_OK(m.check_keys({"type", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                              "mscale", "mscale_all_dim", "truncate"}));
  RopeConfig r;
  if (m.has("type")) {
    HYLO_TRY(r.type, m.string("type"));
  }
  HYLO_TRY(r.factor, m.number_or("factor", r.factor));
  if (!m.has("type") && r.factor != 1.0) r.type = "yarn";
  HYLO_TRY(auto omax, m.opt_integer("original_max_position_embeddings"));
  r.original_max_position_embeddings = omax.value_or(0);
  HYLO_TRY(r.beta_fast, m.number_or("beta_fast", r.beta_fast));
  HYLO_TRY(r.beta_slow, m.number_or("beta_slow", r.beta_slow));
  HYLO_TRY(r.mscale, m.number_or("mscale", r.mscale));
  HYLO_TRY(r.mscale_all_dim, m.number_or("mscale_all_dim", r.mscale_all_dim));
  HYLO_TRY(r.truncate, m.boolean_or("truncate", r.truncate));
  return r;
}

std::string s(int64_t v) { return std::to_string(v); }

}  // namespace

Result<LayerPlan> parse_layer_plan(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return make_error(source + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) return make_error(source + ": expected a mapping at the top level (name:, mla_layers:, linear:, ...)");
  Map top{{root, source, ""}};
  HYLO_CHECK_OK(top.check_keys({"name", "description", "teacher", "mla_layers", "mla_rule", "kv_budget", "linear", "mla",
                                "gdn", "mamba2"}));
  LayerPlan plan;
  plan.source = source;
  if (top.has("name")) {
    HYLO_TRY(plan.name, top.string("name"));
  }

  if (top.has("teacher")) {
    HYLO_TRY(Map t, top.sub("teacher"));
    HYLO_CHECK_OK(t.check_keys({"num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim"}));
    HYLO_TRY(plan.teacher.num_layers, t.opt_integer("num_layers"));
    HYLO_TRY(plan.teacher.hidden_size, t.opt_integer("hidden_size"));
    HYLO_TRY(plan.teacher.num_heads, t.opt_integer("num_heads"));
    HYLO_TRY(plan.teacher.num_kv_heads, t.opt_integer("num_kv_heads"));
    HYLO_TRY(plan.teacher.head_dim, t.opt_integer("head_dim"));
  }

  const int selections = int(top.has("mla_layers")) + int(top.has("mla_rule")) + int(top.has("kv_budget"));
  if (selections != 1)
    return make_error(source + ": give exactly one of 'mla_layers' (a list), 'mla_rule' ({every, offset}) or "
                      "'kv_budget' ({context, bytes}); found " + s(selections));
  if (top.has("mla_layers")) {
    plan.selection = MlaSelection::kExplicit;
    const YAML::Node list = root["mla_layers"];
    if (!list.IsSequence()) return make_error(source + ": mla_layers" + yaml_line_of(list) + ": expected a list of layer indices");
    for (std::size_t i = 0; i < list.size(); ++i) {
      try {
        plan.mla_layers.push_back(list[i].as<int64_t>());
      } catch (const YAML::Exception&) {
        return make_error(source + ": mla_layers[" + std::to_string(i) + "]" + yaml_line_of(list[i]) +
                          ": expected an integer layer index");
      }
    }
  } else if (top.has("mla_rule")) {
    plan.selection = MlaSelection::kEvery;
    HYLO_TRY(Map r, top.sub("mla_rule"));
    HYLO_CHECK_OK(r.check_keys({"every", "offset"}));
    HYLO_TRY(plan.every, r.integer("every"));
    HYLO_TRY(auto off, r.opt_integer("offset"));
    plan.offset = off.value_or(0);
  } else {
    plan.selection = MlaSelection::kKvBudget;
    HYLO_TRY(Map b, top.sub("kv_budget"));
    HYLO_CHECK_OK(b.check_keys({"context", "bytes", "bytes_per_elem", "num_mla_layers"}));
    HYLO_TRY(plan.budget_context, b.integer("context"));
    HYLO_TRY(plan.budget_bytes, b.number("bytes"));
    HYLO_TRY(auto bpe, b.opt_integer("bytes_per_elem"));
    plan.budget_bytes_per_elem = bpe.value_or(2);
    HYLO_TRY(plan.budget_num_mla, b.opt_integer("num_mla_layers"));
  }

  {
    HYLO_TRY(std::string linear, top.string("linear"));
    auto kind = parse_mixer_kind(linear);
    if (!kind || (*kind != MixerKind::kGdn && *kind != MixerKind::kMamba2))
      return make_error(source + ": linear" + yaml_line_of(root["linear"]) + ": unknown linear mixer '" + linear +
                        "' (expected gdn or mamba2)");
    plan.linear = kind;
  }

  if (top.has("mla")) {
    HYLO_TRY(Map m, top.sub("mla"));
    HYLO_CHECK_OK(m.check_keys({"q_lora_rank", "kv_lora_rank", "kv_energy", "qk_nope_head_dim", "qk_rope_head_dim",
                                "v_head_dim", "num_kv_groups", "latent_norms", "rope"}));
    HYLO_TRY(plan.mla.q_lora_rank, m.opt_integer("q_lora_rank"));
    HYLO_TRY(plan.mla.kv_lora_rank, m.opt_integer("kv_lora_rank"));
    if (m.has("kv_energy")) {
      HYLO_TRY(double e, m.number("kv_energy"));
      plan.mla.kv_energy = e;
    }
    HYLO_TRY(plan.mla.qk_nope_head_dim, m.opt_integer("qk_nope_head_dim"));
    HYLO_TRY(plan.mla.qk_rope_head_dim, m.opt_integer("qk_rope_head_dim"));
    HYLO_TRY(plan.mla.v_head_dim, m.opt_integer("v_head_dim"));
    HYLO_TRY(plan.mla.num_kv_groups, m.opt_integer("num_kv_groups"));
    HYLO_TRY(plan.mla.latent_norms, m.boolean_or("latent_norms", false));
    if (m.has("rope")) {
      HYLO_TRY(Map r, m.sub("rope"));
      HYLO_TRY(plan.mla.rope, parse_rope(r));
    }
  }
  if (top.has("gdn")) {
    HYLO_TRY(Map g, top.sub("gdn"));
    HYLO_CHECK_OK(g.check_keys({"num_heads", "head_k_dim", "head_v_dim", "conv_size"}));
    HYLO_TRY(plan.gdn.num_heads, g.opt_integer("num_heads"));
    HYLO_TRY(plan.gdn.head_k_dim, g.opt_integer("head_k_dim"));
    HYLO_TRY(plan.gdn.head_v_dim, g.opt_integer("head_v_dim"));
    HYLO_TRY(auto conv, g.opt_integer("conv_size"));
    plan.gdn.conv_size = conv.value_or(4);
  }
  if (top.has("mamba2")) {
    HYLO_TRY(Map g, top.sub("mamba2"));
    HYLO_CHECK_OK(g.check_keys({"d_state", "n_heads", "head_dim", "conv_size", "chunk_size"}));
    HYLO_TRY(plan.mamba2.d_state, g.opt_integer("d_state"));
    HYLO_TRY(plan.mamba2.n_heads, g.opt_integer("n_heads"));
    HYLO_TRY(plan.mamba2.head_dim, g.opt_integer("head_dim"));
    HYLO_TRY(auto conv, g.opt_integer("conv_size"));
    plan.mamba2.conv_size = conv.value_or(4);
    HYLO_TRY(auto chunk, g.opt_integer("chunk_size"));
    plan.mamba2.chunk_size = chunk.value_or(256);
  }
  return plan;
}

std::string layer_plan_to_yaml(const LayerPlan& p, const std::vector<std::string>& comment) {
  YAML::Emitter e;
  e.SetDoublePrecision(17);
  for (const auto& c : comment) e << YAML::Comment(c) << YAML::Newline;
  e << YAML::BeginMap;
  if (!p.name.empty()) e << YAML::Key << "name" << YAML::Value << p.name;
  auto opt = [&](const char* key, const std::optional<int64_t>& v) {
    if (v) e << YAML::Key << key << YAML::Value << *v;
  };
  const TeacherShape& t = p.teacher;
  if (t.num_layers || t.hidden_size || t.num_heads || t.num_kv_heads || t.head_dim) {
    e << YAML::Key << "teacher" << YAML::Value << YAML::Flow << YAML::BeginMap;
    opt("num_layers", t.num_layers);
    opt("hidden_size", t.hidden_size);
    opt("num_heads", t.num_heads);
    opt("num_kv_heads", t.num_kv_heads);
    opt("head_dim", t.head_dim);
    e << YAML::EndMap;
  }
  switch (p.selection) {
    case MlaSelection::kExplicit:
      e << YAML::Key << "mla_layers" << YAML::Value << YAML::Flow << p.mla_layers;
      break;
    case MlaSelection::kEvery:
      e << YAML::Key << "mla_rule" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "every"
        << YAML::Value << p.every << YAML::Key << "offset" << YAML::Value << p.offset << YAML::EndMap;
      break;
    case MlaSelection::kKvBudget:
      e << YAML::Key << "kv_budget" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "context"
        << YAML::Value << p.budget_context << YAML::Key << "bytes" << YAML::Value << p.budget_bytes << YAML::Key
        << "bytes_per_elem" << YAML::Value << p.budget_bytes_per_elem;
      opt("num_mla_layers", p.budget_num_mla);
      e << YAML::EndMap;
      break;
  }
  if (p.linear) e << YAML::Key << "linear" << YAML::Value << mixer_kind_name(*p.linear);
  e << YAML::Key << "mla" << YAML::Value << YAML::BeginMap;
  opt("q_lora_rank", p.mla.q_lora_rank);
  opt("kv_lora_rank", p.mla.kv_lora_rank);
  if (p.mla.kv_energy) e << YAML::Key << "kv_energy" << YAML::Value << *p.mla.kv_energy;
  opt("qk_nope_head_dim", p.mla.qk_nope_head_dim);
  opt("qk_rope_head_dim", p.mla.qk_rope_head_dim);
  opt("v_head_dim", p.mla.v_head_dim);
  opt("num_kv_groups", p.mla.num_kv_groups);
  e << YAML::Key << "latent_norms" << YAML::Value << p.mla.latent_norms;
  const RopeConfig& r = p.mla.rope;
  e << YAML::Key << "rope" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "type" << YAML::Value
    << r.type << YAML::Key << "factor" << YAML::Value << r.factor;
  if (r.original_max_position_embeddings > 0)
    e << YAML::Key << "original_max_position_embeddings" << YAML::Value << r.original_max_position_embeddings;
  e << YAML::Key << "beta_fast" << YAML::Value << r.beta_fast << YAML::Key << "beta_slow" << YAML::Value
    << r.beta_slow << YAML::Key << "mscale" << YAML::Value << r.mscale << YAML::Key << "mscale_all_dim"
    << YAML::Value << r.mscale_all_dim << YAML::Key << "truncate" << YAML::Value << r.truncate << YAML::EndMap;
  e << YAML::EndMap;
  if (p.gdn.num_heads || p.gdn.head_k_dim || p.gdn.head_v_dim) {
    e << YAML::Key << "gdn" << YAML::Value << YAML::Flow << YAML::BeginMap;
    opt("num_heads", p.gdn.num_heads);
    opt("head_k_dim", p.gdn.head_k_dim);
    opt("head_v_dim", p.gdn.head_v_dim);
    e << YAML::Key << "conv_size" << YAML::Value << p.gdn.conv_size << YAML::EndMap;
  }
  e << YAML::Key << "mamba2" << YAML::Value << YAML::Flow << YAML::BeginMap;
  opt("d_state", p.mamba2.d_state);
  opt("n_heads", p.mamba2.n_heads);
  opt("head_dim", p.mamba2.head_dim);
  e << YAML::Key << "conv_size" << YAML::Value << p.mamba2.conv_size << YAML::Key << "chunk_size" << YAML::Value
    << p.mamba2.chunk_size << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

Result<LayerPlan> load_layer_plan(const std::filesystem::path& path) {
  HYLO_TRY(std::string text, read_text_file(path));
  return parse_layer_plan(text, path.string());
}

LayerPlan stage1_plan(const LayerPlan& plan, bool pure_linear) {
  LayerPlan p = plan;
  p.name = plan.name + (pure_linear ? "-stage1-linear" : "-stage1-mla");
  if (pure_linear) {
    p.selection = MlaSelection::kExplicit;
    p.mla_layers.clear();
  } else {
    p.selection = MlaSelection::kEvery;
    p.every = 1;
    p.offset = 0;
  }
  // A kv_budget plan may have derived its rank from the budget; this function does not turn that derived rank into
  // explicit dims (the upcycler passes the applied config for that), so the MLA dims stay as the plan wrote them.
  return p;
}

bool mla_rank_is_dynamic(const LayerPlan& plan) { return plan.mla.kv_energy.has_value(); }

int64_t energy_rank(const std::vector<double>& sigma, double energy) {
  double total = 0;
  for (double v : sigma) total += v * v;
  const int64_t n = static_cast<int64_t>(sigma.size());
  int64_t r = n;
  double cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    cum += sigma[i] * sigma[i];
    if (cum >= energy * total) {
      r = i + 1;
      break;
    }
  }
  r = (r + 7) / 8 * 8;
  return std::min(r, n);
}

int64_t kv_bytes_per_token(const ModelConfig& config, int64_t bytes_per_elem) {
  int64_t e = 0;
  for (const auto& l : config.layers) e += layer_footprint(config, l).kv_elems_per_token;
  return e * bytes_per_elem;
}

namespace {

// MLA dims with teacher defaults filled in (kv_lora_rank may still be 0 = "from the budget or the spectrum").
Result<MlaSpec> resolve_mla(const ModelConfig& t, const GqaSpec& g, const LayerPlan& plan) {
  const std::string& src = plan.source;
  const MlaPlan& p = plan.mla;
  const int64_t d = t.hidden_size, dh = g.head_dim;
  MlaSpec m;
  m.num_heads = g.num_heads;  // W_o is copied: the MLA keeps the teacher's query heads
  m.qk_rope_head_dim = p.qk_rope_head_dim.value_or(dh / 2);
  m.qk_nope_head_dim = p.qk_nope_head_dim.value_or(dh - m.qk_rope_head_dim);
  m.v_head_dim = p.v_head_dim.value_or(dh);
  m.num_kv_groups = p.num_kv_groups.value_or(g.num_kv_heads);
  m.q_lora_rank = p.q_lora_rank.value_or(0);
  m.kv_lora_rank = p.kv_lora_rank.value_or(0);
  m.latent_norms = p.latent_norms;
  m.bias = false;
  m.rope = p.rope;
  m.rope.theta = t.rope.theta;  // the backbone's rotary base (HYLO.md 2.3)

  if (m.qk_rope_head_dim < 2 || m.qk_rope_head_dim % 2 != 0)
    return make_error(src + ": mla.qk_rope_head_dim: must be even and >= 2, got " + s(m.qk_rope_head_dim));
  if (m.qk_nope_head_dim < 0)
    return make_error(src + ": mla.qk_nope_head_dim: must be >= 0, got " + s(m.qk_nope_head_dim));
  if (m.qk_nope_head_dim + m.qk_rope_head_dim > dh)
    return make_error(src + ": mla.qk_nope_head_dim + qk_rope_head_dim = " + s(m.qk_nope_head_dim) + " + " +
                      s(m.qk_rope_head_dim) + " exceeds the teacher head_dim " + s(dh) +
                      " (the SVD init keeps the first nope and the last rope rows of each teacher head)");
  if (m.v_head_dim != dh)
    return make_error(src + ": mla.v_head_dim: must equal the teacher head_dim " + s(dh) + ", got " + s(m.v_head_dim) +
                      " (the init copies W_o and every value row of the teacher)");
  if (m.num_kv_groups < 1 || m.num_heads % m.num_kv_groups != 0)
    return make_error(src + ": mla.num_kv_groups: " + s(m.num_kv_groups) + " does not divide the " + s(m.num_heads) +
                      " query heads");
  if (m.num_kv_groups % g.num_kv_heads != 0)
    return make_error(src + ": mla.num_kv_groups: " + s(m.num_kv_groups) + " is not a multiple of the teacher's " +
                      s(g.num_kv_heads) + " KV heads (the init repeats each KV head num_kv_groups / num_kv_heads times)");
  const int64_t q_max = std::min(g.num_heads * dh, d);
  if (m.q_lora_rank < 0 || m.q_lora_rank > q_max)
    return make_error(src + ": mla.q_lora_rank: " + s(m.q_lora_rank) + " is larger than the " +
                      s(g.num_heads * dh) + " x " + s(d) + " query matrix it factorises (at most " + s(q_max) +
                      "; 0 = uncompressed q_proj)");
  const int64_t kv_max = std::min(2 * m.num_kv_groups * dh, d);
  if (p.kv_lora_rank && p.kv_energy)
    return make_error(src + ": mla: give kv_lora_rank or kv_energy, not both");
  if (p.kv_lora_rank && (m.kv_lora_rank < 1 || m.kv_lora_rank > kv_max))
    return make_error(src + ": mla.kv_lora_rank: " + s(m.kv_lora_rank) + " is larger than the " +
                      s(2 * m.num_kv_groups * dh) + " x " + s(d) + " stacked [W_k; W_v] matrix it factorises (at most " +
                      s(kv_max) + ")");
  if (p.kv_energy && !(*p.kv_energy > 0.0 && *p.kv_energy <= 1.0))
    return make_error(src + ": mla.kv_energy: must lie in (0, 1], got " + std::to_string(*p.kv_energy));
  if (m.rope.type != "default" && m.rope.type != "yarn")
    return make_error(src + ": mla.rope.type: unsupported '" + m.rope.type + "' (expected default or yarn)");
  if (m.rope.factor < 1.0)
    return make_error(src + ": mla.rope.factor: must be >= 1, got " + std::to_string(m.rope.factor));
  if (m.rope.type == "yarn" && m.rope.factor > 1.0 && m.rope.original_max_position_embeddings <= 0)
    return make_error(src + ": mla.rope.original_max_position_embeddings: required (> 0) for yarn with factor > 1");
  return m;
}

Result<GdnSpec> resolve_gdn(const LayerPlan& plan) {
  const std::string& src = plan.source;
  GdnSpec g;
  if (!plan.gdn.num_heads) return make_error(src + ": gdn.num_heads: missing key (linear: gdn needs its dims)");
  if (!plan.gdn.head_k_dim) return make_error(src + ": gdn.head_k_dim: missing key");
  if (!plan.gdn.head_v_dim) return make_error(src + ": gdn.head_v_dim: missing key");
  g.num_heads = *plan.gdn.num_heads;
  g.head_k_dim = *plan.gdn.head_k_dim;
  g.head_v_dim = *plan.gdn.head_v_dim;
  g.conv_size = plan.gdn.conv_size;
  if (g.num_heads < 1) return make_error(src + ": gdn.num_heads: must be >= 1, got " + s(g.num_heads));
  if (g.head_k_dim < 1) return make_error(src + ": gdn.head_k_dim: must be >= 1, got " + s(g.head_k_dim));
  if (g.head_v_dim < 1) return make_error(src + ": gdn.head_v_dim: must be >= 1, got " + s(g.head_v_dim));
  if (g.conv_size < 1) return make_error(src + ": gdn.conv_size: must be >= 1, got " + s(g.conv_size));
  return g;
}

Result<Mamba2Spec> resolve_mamba2(const ModelConfig& t, const GqaSpec& g, const LayerPlan& plan) {
  const std::string& src = plan.source;
  Mamba2Spec m;
  // Zebra's construction (HYLO.md 2.4): nheads = ngroups = H, headdim = d_state = teacher head_dim.
  m.n_heads = plan.mamba2.n_heads.value_or(g.num_heads);
  m.head_dim = plan.mamba2.head_dim.value_or(g.head_dim);
  m.d_state = plan.mamba2.d_state.value_or(g.head_dim);
  m.conv_size = plan.mamba2.conv_size;
  m.chunk_size = plan.mamba2.chunk_size;
  if (m.n_heads != g.num_heads)
    return make_error(src + ": mamba2.n_heads: must equal the teacher's " + s(g.num_heads) +
                      " query heads, got " + s(m.n_heads) + " (the init maps C <- W_q one head per teacher head)");
  if (m.head_dim != g.head_dim)
    return make_error(src + ": mamba2.head_dim: must equal the teacher head_dim " + s(g.head_dim) + ", got " +
                      s(m.head_dim) + " (x <- W_v per KV head)");
  if (m.d_state != g.head_dim)
    return make_error(src + ": mamba2.d_state: must equal the teacher head_dim " + s(g.head_dim) + ", got " +
                      s(m.d_state) + " (B <- W_k and C <- W_q per head)");
  if (m.conv_size < 1) return make_error(src + ": mamba2.conv_size: must be >= 1, got " + s(m.conv_size));
  if (m.chunk_size < 1) return make_error(src + ": mamba2.chunk_size: must be >= 1, got " + s(m.chunk_size));
  m.d_inner = m.n_heads * m.head_dim;
  m.d_xb = g.num_kv_heads * m.head_dim;
  m.norm_group_size = m.d_inner / m.n_heads;
  m.conv_bias = true;
  m.norm_eps = t.rms_norm_eps;
  return m;
}

Status check_teacher(const ModelConfig& t, const LayerPlan& plan) {
  const std::string& src = plan.source;
  if (t.layers.empty()) return make_error(src + ": the teacher has no layers");
  const GqaSpec& g = t.layers[0].gqa;
  for (std::size_t i = 0; i < t.layers.size(); ++i) {
    const auto& l = t.layers[i];
    if (l.mixer != MixerKind::kGqa)
      return make_error(src + ": the teacher must be a Transformer, but its layer " + std::to_string(i) + " is " +
                        mixer_kind_name(l.mixer));
    if (l.gqa.num_heads != g.num_heads || l.gqa.num_kv_heads != g.num_kv_heads || l.gqa.head_dim != g.head_dim)
      return make_error(src + ": teacher layer " + std::to_string(i) + " has attention dims unlike layer 0");
  }
  if (g.num_heads < 1 || g.num_kv_heads < 1 || g.head_dim < 1 || g.num_heads % g.num_kv_heads != 0)
    return make_error(src + ": teacher attention dims are inconsistent (heads " + s(g.num_heads) + ", kv heads " +
                      s(g.num_kv_heads) + ", head_dim " + s(g.head_dim) + ")");
  auto expect = [&](const std::optional<int64_t>& want, int64_t have, const char* field) -> Status {
    if (want && *want != have)
      return make_error(src + ": teacher." + field + ": the plan is for a teacher with " + s(*want) + ", this teacher has " +
                        s(have));
    return {};
  };
  HYLO_CHECK_OK(expect(plan.teacher.num_layers, t.num_layers(), "num_layers"));
  HYLO_CHECK_OK(expect(plan.teacher.hidden_size, t.hidden_size, "hidden_size"));
  HYLO_CHECK_OK(expect(plan.teacher.num_heads, g.num_heads, "num_heads"));
  HYLO_CHECK_OK(expect(plan.teacher.num_kv_heads, g.num_kv_heads, "num_kv_heads"));
  HYLO_CHECK_OK(expect(plan.teacher.head_dim, g.head_dim, "head_dim"));
  return {};
}

}  // namespace

Result<std::vector<int64_t>> plan_mla_layers(const ModelConfig& t, const LayerPlan& plan) {
  const std::string& src = plan.source;
  const int64_t L = t.num_layers();
  std::vector<int64_t> out;
  switch (plan.selection) {
    case MlaSelection::kExplicit: {
      std::set<int64_t> seen;
      for (std::size_t i = 0; i < plan.mla_layers.size(); ++i) {
        const int64_t v = plan.mla_layers[i];
        if (v < 0 || v >= L)
          return make_error(src + ": mla_layers[" + std::to_string(i) + "]: index " + s(v) + " out of range 0.." +
                            s(L - 1) + " (the teacher has " + s(L) + " layers)");
        if (!seen.insert(v).second)
          return make_error(src + ": mla_layers[" + std::to_string(i) + "]: duplicate index " + s(v));
      }
      out.assign(seen.begin(), seen.end());
      break;
    }
    case MlaSelection::kEvery: {
      if (plan.every < 1) return make_error(src + ": mla_rule.every: must be >= 1, got " + s(plan.every));
      if (plan.offset < 0 || plan.offset >= L)
        return make_error(src + ": mla_rule.offset: " + s(plan.offset) + " out of range 0.." + s(L - 1));
      // Step without overflow: a huge 'every' ends the loop instead of wrapping i past INT64_MAX.
      for (int64_t i = plan.offset; i < L; i = (plan.every >= L - i) ? L : i + plan.every) out.push_back(i);
      break;
    }
    case MlaSelection::kKvBudget: {
      if (plan.budget_context < 1)
        return make_error(src + ": kv_budget.context: must be >= 1, got " + s(plan.budget_context));
      if (!(plan.budget_bytes > 0) || !std::isfinite(plan.budget_bytes))
        return make_error(src + ": kv_budget.bytes: must be a finite number > 0, got " + std::to_string(plan.budget_bytes));
      if (plan.budget_bytes_per_elem < 1)
        return make_error(src + ": kv_budget.bytes_per_elem: must be >= 1, got " + s(plan.budget_bytes_per_elem));
      const double per_elem = double(plan.budget_context) * double(plan.budget_bytes_per_elem);
      const int64_t rope = plan.mla.qk_rope_head_dim.value_or(t.layers[0].gqa.head_dim / 2);
      int64_t n = 0;
      if (plan.budget_num_mla) {
        n = *plan.budget_num_mla;
        if (n < 1 || n > L)
          return make_error(src + ": kv_budget.num_mla_layers: " + s(n) + " out of range 1.." + s(L));
      } else {
        if (!plan.mla.kv_lora_rank)
          return make_error(src + ": kv_budget: without num_mla_layers the plan needs mla.kv_lora_rank (the latent "
                            "width decides how many MLA layers fit)");
        if (*plan.mla.kv_lora_rank < 1)
          return make_error(src + ": mla.kv_lora_rank: must be >= 1, got " + s(*plan.mla.kv_lora_rank));
        if (rope < 0) return make_error(src + ": mla.qk_rope_head_dim: must be >= 0, got " + s(rope));
        // In double: the width and the layer count come from the file and may be far outside int64 range; the
        // quotient is clamped to [0, L] before the cast so no value of the plan makes the conversion undefined.
        const double width = double(*plan.mla.kv_lora_rank) + double(rope);
        const double fit = std::floor(plan.budget_bytes / (per_elem * width));
        n = fit >= double(L) ? L : (fit >= 1.0 ? static_cast<int64_t>(fit) : 0);
        if (n < 1)
          return make_error(src + ": kv_budget: " + std::to_string(plan.budget_bytes) + " bytes hold no MLA layer at context " +
                            s(plan.budget_context) + " (one layer needs " + std::to_string(per_elem * width) + " bytes)");
      }
      // Evenly spaced, centred in equal segments of the depth.
      for (int64_t i = 0; i < n; ++i) out.push_back(static_cast<int64_t>((double(i) + 0.5) * double(L) / double(n)));
      break;
    }
  }
  return out;
}

Result<ModelConfig> apply_plan(const ModelConfig& teacher, const LayerPlan& plan) {
  const std::string& src = plan.source;
  HYLO_CHECK_OK(check_teacher(teacher, plan));
  if (!plan.linear) return make_error(src + ": linear: missing key (gdn or mamba2)");
  const GqaSpec g = teacher.layers[0].gqa;
  HYLO_TRY(std::vector<int64_t> mla_layers, plan_mla_layers(teacher, plan));
  const int64_t L = teacher.num_layers();

  MlaSpec mla;
  const bool any_mla = !mla_layers.empty();
  const bool any_linear = static_cast<int64_t>(mla_layers.size()) < L;
  if (any_mla) {
    HYLO_TRY(mla, resolve_mla(teacher, g, plan));
    if (plan.selection == MlaSelection::kKvBudget && plan.budget_num_mla) {
      if (plan.mla.kv_lora_rank || plan.mla.kv_energy)
        return make_error(src + ": kv_budget.num_mla_layers fixes the latent rank; remove mla.kv_lora_rank / kv_energy");
      const double per_layer = plan.budget_bytes / (double(plan.budget_context) * double(plan.budget_bytes_per_elem) *
                                                    double(mla_layers.size()));
      const int64_t kv_max = std::min(2 * mla.num_kv_groups * g.head_dim, teacher.hidden_size);
      // Clamp in double before the cast: a huge budget would overflow int64, and any rank above kv_max is cut anyway.
      const double per_layer_cap = std::min(std::floor(per_layer), double(kv_max + mla.qk_rope_head_dim));
      const int64_t r = (static_cast<int64_t>(per_layer_cap) - mla.qk_rope_head_dim) / 8 * 8;
      if (r < 8)
        return make_error(src + ": kv_budget: " + std::to_string(plan.budget_bytes) + " bytes leave a latent rank of " +
                          s(r) + " (< 8) for " + s(static_cast<int64_t>(mla_layers.size())) + " MLA layers");
      mla.kv_lora_rank = std::min(r, kv_max / 8 * 8);
    } else if (!plan.mla.kv_lora_rank && !plan.mla.kv_energy) {
      return make_error(src + ": mla.kv_lora_rank: missing key (or give mla.kv_energy for the dynamic rank)");
    }
  }
  GdnSpec gdn;
  Mamba2Spec m2;
  if (any_linear) {
    if (*plan.linear == MixerKind::kGdn) {
      HYLO_TRY(gdn, resolve_gdn(plan));
      gdn.norm_eps = teacher.rms_norm_eps;
    } else {
      HYLO_TRY(m2, resolve_mamba2(teacher, g, plan));
    }
  }

  ModelConfig out = teacher;
  out.backbone_attention = g;
  out.backbone_intermediate_size = teacher.layers[0].intermediate_size;
  out.tie_word_embeddings = false;  // HyLo stores an untied lm_head (HYLO.md 2.1 notes)
  std::set<int64_t> is_mla(mla_layers.begin(), mla_layers.end());
  for (int64_t i = 0; i < L; ++i) {
    LayerSpec& l = out.layers[i];
    l.gqa = GqaSpec{};
    if (is_mla.count(i)) {
      l.mixer = MixerKind::kMla;
      l.mla = mla;
    } else if (*plan.linear == MixerKind::kGdn) {
      l.mixer = MixerKind::kGdn;
      l.gdn = gdn;
    } else {
      l.mixer = MixerKind::kMamba2;
      l.mamba2 = m2;
    }
  }
  return out;
}

}  // namespace hylo
