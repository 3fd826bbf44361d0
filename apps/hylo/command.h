// Subcommand registry of the hylo CLI. Each apps/hylo/cmd_*.cpp registers itself with HYLO_COMMAND, so
// adding a command touches no shared file. Commands only parse arguments and call into src/hylo.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace hylo::cli {

// setup() adds the subcommand's options to `app` and returns the function to run after parsing.
using CommandRun = std::function<int()>;
using CommandSetup = std::function<CommandRun(CLI::App& app)>;

struct CommandDef {
  std::string name;
  std::string description;
  CommandSetup setup;
};

std::vector<CommandDef>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string description, CommandSetup setup) {
    command_registry().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

}  // namespace hylo::cli

#define HYLO_COMMAND(ident, name, description, setup_fn) \
  static ::hylo::cli::CommandRegistrar hylo_command_##ident(name, description, setup_fn)
