// hylo: one binary, one subcommand per pipeline step (tokenize, inspect, generate, perplexity, upcycle, ...).
// Errors surface as hylo::Error and end the process with exit code 1 and a message naming what was wrong.
#include <cstdio>
#include <exception>
#include <memory>

#include "command.h"
#include "hylo/core/result.h"

namespace hylo::cli {
std::vector<CommandDef>& command_registry() {
  static std::vector<CommandDef> registry;
  return registry;
}
}  // namespace hylo::cli

int main(int argc, char** argv) {
  CLI::App app{"hylo: upcycle Transformers into long-context MLA + linear-recurrent hybrids"};
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, hylo::cli::CommandRun>> runs;
  for (auto& def : hylo::cli::command_registry()) {
    CLI::App* sub = app.add_subcommand(def.name, def.description);
    runs.emplace_back(sub, def.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runs)
      if (sub->parsed()) return run();
  } catch (const hylo::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
