// The part of reading a YAML config that every hylo YAML file shares (layer plans, training recipes): a mapping
// with its dotted field path, so that each error names the file, the field and the line, and the check that
// refuses unknown keys (a typo must not be silently ignored). The value readers (integer, number, string, ...)
// stay with each format, because their rules differ: a recipe's number must be finite, a plan's missing key is
// reported with the kind of value expected, and so on.
#pragma once

#include <yaml-cpp/yaml.h>

#include <set>
#include <string>

#include "hylo/core/result.h"

namespace hylo {

// " (line N)" for a node read from text; "" for a node with no position or one that is not there (e.g. a recipe
// key that comes from its `defaults` block rather than from the stage itself).
std::string yaml_line_of(const YAML::Node& n);

struct YamlFields {
  YAML::Node node;     // a mapping
  std::string source;  // the file named in errors
  std::string path;    // the dotted path of `node` ("mla", "stages[2].optimizer"); "" for the top level

  std::string field(const std::string& key) const { return path.empty() ? key : path + "." + key; }
  std::string where(const std::string& key) const { return source + ": " + field(key); }
  // "<source>: <field> (line N): <what>"
  ErrorInfo bad(const std::string& key, const std::string& what) const;
  // Fails on the first key outside `allowed`, listing the allowed ones.
  Status check_keys(const std::set<std::string>& allowed) const;
  // Present and not null (`key:` with nothing after it counts as absent).
  bool has(const std::string& key) const { return node[key] && !node[key].IsNull(); }
  // The nested mapping under `key`, its path extended by `key`.
  Result<YamlFields> sub(const std::string& key) const;
};

}  // namespace hylo
