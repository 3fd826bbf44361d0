#include "hylo/config/yaml_fields.h"

namespace hylo {

std::string yaml_line_of(const YAML::Node& n) {
  if (!n.IsDefined()) return "";
  const auto m = n.Mark();
  return m.line >= 0 ? " (line " + std::to_string(m.line + 1) + ")" : "";
}

ErrorInfo YamlFields::bad(const std::string& key, const std::string& what) const {
  return make_error(where(key) + yaml_line_of(node[key]) + ": " + what);
}

Status YamlFields::check_keys(const std::set<std::string>& allowed) const {
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return make_error(where(key) + yaml_line_of(kv.first) + ": unknown key (allowed here: " + list + ")");
    }
  }
  return {};
}

Result<YamlFields> YamlFields::sub(const std::string& key) const {
  if (!node[key].IsMap()) return bad(key, "expected a mapping ({key: value, ...})");
  return YamlFields{node[key], source, field(key)};
}

}  // namespace hylo
