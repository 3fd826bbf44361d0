// `hylo serve`'s HTTP front end: OpenAI-compatible endpoints over an AsyncEngine (cpp-httplib).
//   POST /v1/chat/completions   the tokenizer's chat template, then generation (SSE when "stream": true)
//   POST /v1/completions        a text prompt (BOS added as the tokenizer does) or token ids
//   GET  /v1/models[/ID]        the served model, its context limit and memory plan
//   GET  /health                200 {"status": "ok"}; 503 while shutting down or after an engine failure
//   GET  /metrics               Prometheus text (metrics.h)
//   GET  /                      the built-in chat page (chat_page.h)
// Errors are OpenAI's {"error": {...}} with 400 (malformed, wrong types, over the context), 401 (API key),
// 404 (unknown model or route), 413 (body too big), 429 (too many requests in flight), 503 (shutting down,
// engine failed, per-request timeout).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hylo/infer/engine/engine.h"
#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (see Server::port())
  std::string api_key;                    // empty: no authentication
  std::string model_name;                 // the id clients use; requests naming another model get 404
  int64_t max_body_bytes = 1 << 20;
  int64_t max_prompt_tokens = 0;          // 0: only the engine's context limit applies
  int64_t max_tokens_limit = 4096;        // largest max_tokens accepted; also the chat default cap
  int64_t default_completion_tokens = 16; // /v1/completions without max_tokens, as OpenAI
  double timeout_s = 600.0;               // per request, from arrival to the last token
  int64_t max_queue = 256;                // requests in flight (waiting + running) before 429
};

class Server {
 public:
  // The engine and tokenizer must outlive the server.
  Server(ServerOptions options, engine::Engine& engine, const tok::Tokenizer& tokenizer);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the socket (throws hylo::Error when it cannot); returns the port bound.
  int bind();
  int port() const;
  // Serves until shutdown(); returns after the listener stopped.
  void run();
  // Graceful: refuse new generations (503), let in-flight ones finish for up to drain_timeout_s, then stop
  // listening. Safe to call from any thread, once or more.
  void shutdown(double drain_timeout_s);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace hylo::serve
