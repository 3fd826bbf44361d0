// hylo chat MODEL [--system S] [--max-new-tokens N] [sampling flags] [--max-context N] [--dtype fp32|bf16]
//                 [--device cpu|cuda] [engine flags (engine_args.h)]
// An interactive chat in the terminal. Each line read from stdin is one user turn (so a conversation can be piped
// in); the whole history is rendered with the tokenizer's chat template and answered on the engine, the reply
// streamed to stdout. After each reply one stats line goes to stderr: the context used, how many prompt tokens the
// prefix cache supplied (earlier turns are not recomputed: the engine keeps their pages and recurrent-state
// snapshots, --prefix-snapshots, default 32), and the decode speed. Commands: /reset clears the history,
// /exit (or end of input) quits.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include "command.h"
#include "engine_args.h"
#include "sampling_args.h"
#include "hylo/core/result.h"
#include "hylo/infer/engine_generate.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct ChatArgs {
  std::string model, system, dtype = "fp32", device = "cpu";
  int64_t max_new_tokens = 512;
  int64_t max_context = 0;  // 0: the model's max_position_embeddings (8192 when the config has none)
  SamplingArgs sampling;
  EngineArgs engine;
};

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return {};
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

int run_chat(const ChatArgs& a) {
  if (a.max_new_tokens < 1) throw Error("chat: --max-new-tokens must be >= 1, got " + std::to_string(a.max_new_tokens));
  const tok::Tokenizer tokenizer = tok::Tokenizer::from_path(a.model).value_or_throw();
  if (!tokenizer.has_chat_template()) throw Error("chat: the tokenizer of " + a.model + " has no chat template");
  GenerateOptions opts;
  opts.sampling = a.sampling.params();
  opts.max_new_tokens = a.max_new_tokens;

  LoadOptions load;
  load.dtype = parse_scalar_type(a.dtype);
  load.device = parse_device(a.device);
  if (load.dtype != at::kFloat && load.dtype != at::kBFloat16)
    throw Error("chat: --dtype must be fp32 or bf16, got " + a.dtype);
  auto model = CausalLM::load(a.model, load);
  const int64_t model_context =
      model->config().max_position_embeddings > 0 ? model->config().max_position_embeddings : 8192;
  const int64_t wanted_context = a.max_context > 0 ? a.max_context : model_context;
  engine::Engine eng(*model, engine_options(a.engine, *model, /*default_sequences=*/1, /*default_snapshots=*/32,
                                            wanted_context));
  const int64_t max_context = std::min(wanted_context, eng.memory_plan().max_tokens_per_sequence);

  const bool interactive = isatty(STDIN_FILENO) != 0;
  std::fprintf(stderr, "hylo chat: %s, context %lld tokens, %s; /reset clears the history, /exit quits\n",
               a.model.c_str(), static_cast<long long>(max_context), opts.sampling.describe().c_str());
  std::vector<tok::ChatMessage> history;
  if (!a.system.empty()) history.push_back({"system", a.system});
  const size_t base_turns = history.size();

  std::string line;
  while (true) {
    if (interactive) {
      std::fprintf(stderr, "> ");
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line)) break;
    const std::string input = trim(line);
    if (input.empty()) continue;
    if (input == "/exit" || input == "/quit") break;
    if (input == "/reset") {
      history.resize(base_turns);
      std::fprintf(stderr, "[history cleared]\n");
      continue;
    }
    if (input[0] == '/') {
      std::fprintf(stderr, "[unknown command %s: /reset clears the history, /exit quits]\n", input.c_str());
      continue;
    }
    history.push_back({"user", input});
    const std::string rendered =
        tokenizer.apply_chat_template(history, /*add_generation_prompt=*/true).value_or_throw();
    std::vector<int32_t> ids32 = tokenizer.encode(rendered, /*add_special_tokens=*/false);
    std::vector<int64_t> prompt(ids32.begin(), ids32.end());
    const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
    GenerateOptions turn = opts;
    turn.max_new_tokens = std::min(opts.max_new_tokens, max_context - prompt_tokens);
    if (turn.max_new_tokens < 1) {
      history.pop_back();
      std::fprintf(stderr, "[the conversation (%lld tokens with this turn) fills the context of %lld tokens: /reset to "
                   "start over]\n", static_cast<long long>(prompt_tokens), static_cast<long long>(max_context));
      continue;
    }
    const EngineGenerateResult r = generate(eng, &tokenizer, prompt, turn, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::printf("\n");
    std::fflush(stdout);
    history.push_back({"assistant", r.generation.text});
    const GenerateResult& g = r.generation;
    const engine::EngineStats stats = eng.stats();
    std::fprintf(stderr,
                 "[context %lld/%lld tokens | prompt %lld, %lld from the prefix cache, %lld computed in %.0f ms | "
                 "%lld tokens at %.1f tok/s | prefix hits %lld/%lld]\n",
                 static_cast<long long>(prompt_tokens + static_cast<long long>(g.ids.size())),
                 static_cast<long long>(max_context), static_cast<long long>(prompt_tokens),
                 static_cast<long long>(r.cached_prompt_tokens),
                 static_cast<long long>(prompt_tokens - r.cached_prompt_tokens), g.prefill_seconds * 1e3,
                 static_cast<long long>(g.ids.size()), g.decode_tokens_per_second(),
                 static_cast<long long>(stats.prefix_hits), static_cast<long long>(stats.prefix_lookups));
  }
  return 0;
}

CommandRun setup_chat(CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  app.add_option("model", a->model, "HF model directory or GGUF file (with a chat template)")->required();
  app.add_option("--system", a->system, "system message at the start of the conversation");
  app.add_option("--max-new-tokens", a->max_new_tokens, "most tokens per reply")->capture_default_str();
  app.add_option("--max-context", a->max_context, "most tokens of the conversation (default: the model's)");
  add_sampling_options(app, a->sampling);
  app.add_option("--dtype", a->dtype, "fp32 or bf16")->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda[:N]")->capture_default_str();
  add_engine_options(app, a->engine);
  return [a] { return run_chat(*a); };
}

}  // namespace

HYLO_COMMAND(chat, "chat", "interactive chat in the terminal on the engine (history, streaming, prefix reuse)",
             setup_chat);

}  // namespace hylo::cli
