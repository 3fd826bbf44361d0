// hylo serve MODEL [--host 127.0.0.1] [--port 8080] [--api-key K | --api-key-file F] [--model-name NAME]
//                  [--max-body-bytes N] [--max-prompt-tokens N] [--max-tokens-limit N] [--timeout-s S]
//                  [--max-queue N] [--device cpu|cuda] [--dtype fp32|bf16] [engine flags (engine_args.h)]
// An OpenAI-compatible HTTP server over the engine (src/hylo/serve/server.h lists the endpoints). Binds
// 127.0.0.1 unless told otherwise. Prints "hylo serve: listening on http://HOST:PORT" on stderr once it
// accepts connections (--port 0 picks a free port). SIGINT / SIGTERM: stop accepting, let in-flight requests
// finish (at most --timeout-s), exit 0. Engine defaults for serving: 64 sequences at once, 32 prefix snapshots
// (prefix reuse on: chat turns and shared system prompts skip their prefill).
#include <csignal>
#include <cstdio>
#include <memory>
#include <thread>

#include "command.h"
#include "hylo/core/file_util.h"
#include "hylo/core/result.h"

#ifdef HYLO_HAVE_SERVE
#include <pthread.h>

#include <filesystem>

#include "hylo/infer/engine/engine.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/serve/server.h"
#endif

#include "engine_args.h"

namespace hylo::cli {
namespace {

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key, api_key_file, model_name;
  int64_t max_body_bytes = 1 << 20;
  int64_t max_prompt_tokens = 0;
  int64_t max_tokens_limit = 4096;
  double timeout_s = 600.0;
  int64_t max_queue = 256;
  std::string device = "cpu";
  std::string dtype = "fp32";
  EngineArgs engine;
};

#ifdef HYLO_HAVE_SERVE

std::string read_api_key(const ServeArgs& a) {
  if (!a.api_key.empty() && !a.api_key_file.empty()) throw Error("serve: give --api-key or --api-key-file, not both");
  if (a.api_key_file.empty()) return a.api_key;
  auto text = read_text_file(a.api_key_file);
  if (!text.ok()) throw Error("serve: --api-key-file: " + text.error());
  std::string key = text.value();
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) throw Error("serve: --api-key-file " + a.api_key_file + " is empty");
  return key;
}

int run_serve(const ServeArgs& a) {
  // Signals go to one watcher thread. Blocked first thing: every thread started later (torch's OpenMP pool at
  // model load, the engine loop, the HTTP workers) inherits the mask, so none of them can take SIGTERM's
  // default action and end the process without draining.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that left must not end the server

  serve::ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_key = read_api_key(a);
  so.model_name = a.model_name.empty() ? std::filesystem::path(a.model).filename().string() : a.model_name;
  if (so.model_name.empty()) so.model_name = std::filesystem::path(a.model).parent_path().filename().string();
  if (a.port < 0 || a.port > 65535) throw Error("serve: --port must be in [0, 65535], got " + std::to_string(a.port));
  if (a.max_body_bytes < 1024) throw Error("serve: --max-body-bytes must be at least 1024");
  if (a.max_prompt_tokens < 0) throw Error("serve: --max-prompt-tokens must be >= 0 (0: no limit but the context)");
  if (a.max_tokens_limit < 1) throw Error("serve: --max-tokens-limit must be >= 1");
  if (!(a.timeout_s > 0)) throw Error("serve: --timeout-s must be > 0");
  if (a.max_queue < 1) throw Error("serve: --max-queue must be >= 1");
  so.max_body_bytes = a.max_body_bytes;
  so.max_prompt_tokens = a.max_prompt_tokens;
  so.max_tokens_limit = a.max_tokens_limit;
  so.timeout_s = a.timeout_s;
  so.max_queue = a.max_queue;

  auto tokenizer = tok::Tokenizer::from_path(a.model);
  if (!tokenizer.ok()) throw Error("serve: cannot load the tokenizer of " + a.model + ": " + tokenizer.error());

  LoadOptions load;
  load.dtype = parse_scalar_type(a.dtype);
  load.device = parse_device(a.device);
  if (load.dtype != at::kFloat && load.dtype != at::kBFloat16)
    throw Error("serve: --dtype must be fp32 or bf16, got " + a.dtype);
  auto model = CausalLM::load(a.model, load);

  // On the CPU without --memory-bytes: pools for the default sequences at the model's trained context (<= 4 GiB).
  const int64_t context = model->config().max_position_embeddings > 0 ? model->config().max_position_embeddings : 4096;
  const engine::EngineOptions eo = engine_options(a.engine, *model, /*default_sequences=*/64,
                                                  /*default_snapshots=*/32, context);
  engine::Engine engine(*model, eo);

  serve::Server server(so, engine, tokenizer.value());
  const int port = server.bind();
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "hylo serve: signal %d, draining in-flight requests (at most %.0f s)\n", sig, a.timeout_s);
    server.shutdown(a.timeout_s);
  });
  std::fprintf(stderr, "hylo serve: model %s, %s, context %lld tokens per sequence\n", so.model_name.c_str(),
               engine.memory_plan().describe().c_str(),
               static_cast<long long>(engine.memory_plan().max_tokens_per_sequence));
  std::fprintf(stderr, "hylo serve: listening on http://%s:%d\n", so.host.c_str(), port);
  std::fflush(stderr);
  server.run();
  // The listener also ends without a signal when it fails; wake the watcher then (a no-op after a signal).
  pthread_kill(watcher.native_handle(), SIGTERM);
  watcher.join();
  std::fprintf(stderr, "hylo serve: stopped\n");
  return 0;
}

#else

int run_serve(const ServeArgs&) {
  throw Error("serve: this hylo was built without cpp-httplib (install libcpp-httplib-dev, or put httplib.h and "
              "libcpp-httplib.so where CMake finds them, and reconfigure)");
}

#endif

CommandRun setup_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  app.add_option("model", a->model, "HF model directory, GGUF file or hylo checkpoint")->required();
  app.add_option("--host", a->host, "address to bind (127.0.0.1: this machine only)")->capture_default_str();
  app.add_option("--port", a->port, "TCP port; 0 picks a free one")->capture_default_str();
  app.add_option("--api-key", a->api_key, "require 'Authorization: Bearer KEY' on /v1/* and /metrics");
  app.add_option("--api-key-file", a->api_key_file, "file holding the API key (keeps it out of ps)");
  app.add_option("--model-name", a->model_name, "model id clients use (default: the model path's last part)");
  app.add_option("--max-body-bytes", a->max_body_bytes, "largest request body; larger gets 413")->capture_default_str();
  app.add_option("--max-prompt-tokens", a->max_prompt_tokens, "longest prompt; 0 = the engine's context limit")
      ->capture_default_str();
  app.add_option("--max-tokens-limit", a->max_tokens_limit, "largest max_tokens a request may ask for")
      ->capture_default_str();
  app.add_option("--timeout-s", a->timeout_s, "per-request time limit (cancelled after it)")->capture_default_str();
  app.add_option("--max-queue", a->max_queue, "requests in flight before 429")->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--dtype", a->dtype, "fp32 or bf16")->capture_default_str();
  add_engine_options(app, a->engine);
  return [a] { return run_serve(*a); };
}

}  // namespace

HYLO_COMMAND(serve, "serve", "OpenAI-compatible HTTP server (chat, completions, streaming, metrics, chat page)",
             setup_serve);

}  // namespace hylo::cli
