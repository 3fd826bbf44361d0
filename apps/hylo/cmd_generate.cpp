// hylo generate MODEL [--prompt TEXT | --prompt-file F | --prompt-ids "1 2 3"] [--chat] [--system S]
//                     [--messages FILE.json] [--max-new-tokens N] [--greedy] [--temperature T] [--top-k K]
//                     [--top-p P] [--min-p M] [--repetition-penalty R] [--seed S] [--stop STR ...]
//                     [--dtype fp32|bf16] [--device cpu|cuda] [--print-ids] [--no-stream] [--ignore-eos]
//                     [engine flags (engine_args.h)] [--reference]
// Runs on the inference engine (src/hylo/infer/engine); --reference runs the single-sequence reference loop instead
// (src/hylo/infer/generate.h), which gives the same greedy ids.
// Streams the generated text to stdout and ends with one stats line on stderr ("prefill N tok at X tok/s,
// decode M tok at Y tok/s, ..."). --print-ids prints the generated ids on one line instead of the text.
// --chat renders [system,] user (or the messages file) with the tokenizer's chat template and the
// generation prompt, then encodes it without adding special tokens (the template carries them), as
// transformers' apply_chat_template does.
#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "args.h"
#include "command.h"
#include "engine_args.h"
#include "sampling_args.h"
#include "hylo/core/file_util.h"
#include "hylo/infer/engine_generate.h"
#include "hylo/infer/generate.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt, prompt_file, prompt_ids, system, messages_file;
  bool chat = false;
  int64_t max_new_tokens = 256;
  SamplingArgs sampling;
  std::vector<std::string> stop;
  std::string dtype = "fp32";
  std::string device = "cpu";
  bool print_ids = false;
  bool no_stream = false;
  bool ignore_eos = false;
  bool reference = false;
  EngineArgs engine;
};

std::string read_file_or_throw(const std::string& path, const char* what) {
  auto text = read_text_file(path);
  if (!text.ok()) throw Error(std::string(what) + ": " + text.error());
  return std::move(text).value();
}

std::vector<tok::ChatMessage> read_messages(const std::string& path) {
  auto json = nlohmann::json::parse(read_file_or_throw(path, "--messages"), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) throw Error("--messages " + path + ": not valid JSON");
  if (json.is_object() && json.contains("messages")) json = json["messages"];
  if (!json.is_array() || json.empty())
    throw Error("--messages " + path + ": expected a non-empty array of {\"role\", \"content\"} objects");
  std::vector<tok::ChatMessage> messages;
  for (size_t i = 0; i < json.size(); ++i) {
    const auto& m = json[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw Error("--messages " + path + ": message " + std::to_string(i) +
                  " must be an object with string fields \"role\" and \"content\"");
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return messages;
}

int run_generate(const GenerateArgs& a) {
  const int prompt_sources = !a.prompt.empty() + !a.prompt_file.empty() + !a.prompt_ids.empty() +
                             !a.messages_file.empty();
  if (prompt_sources != 1)
    throw Error("generate: give exactly one of --prompt, --prompt-file, --prompt-ids, --messages");
  if (!a.messages_file.empty() && !a.system.empty())
    throw Error("generate: --system goes with --prompt/--prompt-file; put the system turn into the --messages file");
  if (!a.prompt_ids.empty() && (a.chat || !a.system.empty()))
    throw Error("generate: --prompt-ids are used as given; --chat and --system need a text prompt");
  for (const auto& s : a.stop)
    if (s.empty()) throw Error("generate: --stop needs a non-empty string");

  GenerateOptions opts;
  opts.sampling = a.sampling.params();
  if (a.max_new_tokens < 0) throw Error("generate: --max-new-tokens must be >= 0, got " + std::to_string(a.max_new_tokens));
  opts.max_new_tokens = a.max_new_tokens;
  opts.stop_strings = a.stop;
  opts.use_default_eos = !a.ignore_eos;

  // The tokenizer lives beside the weights (model directory) or inside the GGUF file. Only raw ids without
  // text output can do without one.
  std::optional<tok::Tokenizer> tokenizer;
  {
    auto t = tok::Tokenizer::from_path(a.model);
    if (t.ok())
      tokenizer.emplace(std::move(t).value());
    else if (a.prompt_ids.empty() || !a.stop.empty())
      throw Error("generate: cannot load the tokenizer of " + a.model + ": " + t.error());
    else if (!a.print_ids)
      std::fprintf(stderr, "note: %s has no usable tokenizer (%s); printing ids only\n", a.model.c_str(),
                   t.error().c_str());
  }

  std::vector<int64_t> prompt;
  if (!a.prompt_ids.empty()) {
    prompt = parse_token_ids(a.prompt_ids, "--prompt-ids");
  } else {
    std::string text = !a.prompt_file.empty() ? read_file_or_throw(a.prompt_file, "--prompt-file") : a.prompt;
    std::vector<int32_t> ids;
    if (a.chat || !a.messages_file.empty()) {
      if (!tokenizer->has_chat_template())
        throw Error("generate: --chat: the tokenizer of " + a.model + " has no chat template");
      std::vector<tok::ChatMessage> messages;
      if (!a.messages_file.empty()) {
        messages = read_messages(a.messages_file);
      } else {
        if (!a.system.empty()) messages.push_back({"system", a.system});
        messages.push_back({"user", text});
      }
      const std::string rendered = tokenizer->apply_chat_template(messages, true).value_or_throw();
      ids = tokenizer->encode(rendered, /*add_special_tokens=*/false);
    } else {
      if (!a.system.empty()) throw Error("generate: --system needs --chat");
      ids = tokenizer->encode(text, /*add_special_tokens=*/true);
    }
    prompt.assign(ids.begin(), ids.end());
  }

  LoadOptions load;
  load.dtype = parse_scalar_type(a.dtype);
  load.device = parse_device(a.device);
  if (load.dtype != at::kFloat && load.dtype != at::kBFloat16)
    throw Error("generate: --dtype must be fp32 or bf16, got " + a.dtype);
  const auto t_load = std::chrono::steady_clock::now();
  auto model = CausalLM::load(a.model, load);
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();


  const bool stream = !a.no_stream && !a.print_ids;
  TextCallback on_text;
  if (stream)
    on_text = [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
  GenerateResult r;
  std::string path = "reference path";
  if (a.reference) {
    r = generate(*model, tokenizer ? &*tokenizer : nullptr, prompt, opts, on_text);
  } else {
    const int64_t tokens = static_cast<int64_t>(prompt.size()) + std::max<int64_t>(a.max_new_tokens, 1);
    engine::Engine eng(*model, engine_options(a.engine, *model, /*default_sequences=*/1, /*default_snapshots=*/0,
                                              tokens));
    EngineGenerateResult er = generate(eng, tokenizer ? &*tokenizer : nullptr, prompt, opts, on_text);
    r = std::move(er.generation);
    path = "engine, page " + std::to_string(eng.options().page_size) + ", " +
           std::to_string(er.cached_prompt_tokens) + " prompt tokens cached";
  }

  if (a.print_ids) {
    for (size_t i = 0; i < r.ids.size(); ++i) std::printf(i ? " %lld" : "%lld", static_cast<long long>(r.ids[i]));
    std::printf("\n");
  } else {
    if (!stream) std::fwrite(r.text.data(), 1, r.text.size(), stdout);
    std::printf("\n");
  }
  std::fflush(stdout);
  std::fprintf(stderr,
               "prefill %lld tok at %.1f tok/s, decode %lld tok at %.1f tok/s (time to first token %.1f ms, "
               "stop: %s, %s, %s on %s, load %.2f s, %s)\n",
               static_cast<long long>(r.prompt_tokens), r.prefill_tokens_per_second(),
               static_cast<long long>(r.decode_steps), r.decode_tokens_per_second(), r.prefill_seconds * 1e3,
               stop_reason_name(r.stop_reason), opts.sampling.describe().c_str(), a.dtype.c_str(),
               a.device.c_str(), load_seconds, path.c_str());
  return 0;
}

CommandRun setup_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  app.add_option("model", a->model, "HF model directory or GGUF file")->required();
  app.add_option("--prompt", a->prompt, "prompt text");
  app.add_option("--prompt-file", a->prompt_file, "file holding the prompt text");
  app.add_option("--prompt-ids", a->prompt_ids, "prompt token ids, e.g. \"1 2 3\" (used as given, no BOS added)");
  app.add_flag("--chat", a->chat, "render the prompt as a user turn with the tokenizer's chat template");
  app.add_option("--system", a->system, "system message for --chat");
  app.add_option("--messages", a->messages_file, "JSON file: [{\"role\": ..., \"content\": ...}, ...] (implies --chat)");
  app.add_option("--max-new-tokens", a->max_new_tokens, "most tokens to generate")->capture_default_str();
  add_sampling_options(app, a->sampling);
  app.add_option("--stop", a->stop, "stop when this text appears (not printed); repeatable");
  app.add_option("--dtype", a->dtype, "fp32 or bf16")->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda[:N]")->capture_default_str();
  app.add_flag("--print-ids", a->print_ids, "print the generated ids on one line instead of the text");
  app.add_flag("--no-stream", a->no_stream, "print the text at the end instead of streaming it");
  app.add_flag("--ignore-eos", a->ignore_eos, "do not stop at end-of-sequence ids (fixed-length runs, benchmarks)");
  app.add_flag("--reference", a->reference, "run the single-sequence reference loop instead of the engine");
  add_engine_options(app, a->engine);
  return [a] { return run_generate(*a); };
}

}  // namespace

HYLO_COMMAND(generate, "generate", "generate text from a model (greedy or sampled, streaming, tokens/s)",
             setup_generate);

}  // namespace hylo::cli
