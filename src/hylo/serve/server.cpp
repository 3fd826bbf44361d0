#include "hylo/serve/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "hylo/core/result.h"
#include "hylo/infer/generate.h"
#include "hylo/serve/async_engine.h"
#include "hylo/serve/chat_page.h"
#include "hylo/serve/generation_request.h"
#include "hylo/serve/metrics.h"
#include "hylo/serve/openai_request.h"
#include "hylo/serve/openai_response.h"

namespace hylo::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(e.to_json(), "application/json");
}

// Comparison whose time does not depend on where the strings differ (API keys).
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(b.size(), 1)]);
  return diff == 0 && !b.empty();
}

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%08llx%08llx", prefix, static_cast<unsigned long long>(counter.fetch_add(1)),
                static_cast<unsigned long long>(rng() & 0xffffffffULL));
  return buf;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// What a generation needs besides the request: prompt ids and the answer's header, prepared before submission.
struct Prepared {
  CompletionRequest request;
  GenerationRequest generation;
  AnswerHeader header;
};

}  // namespace

struct Server::Impl {
  ServerOptions options;
  engine::Engine& engine;
  const tok::Tokenizer& tokenizer;
  std::vector<int64_t> eos_ids;
  int64_t context_tokens = 0;  // the longest sequence the engine holds (prompt + completion)
  std::unique_ptr<AsyncEngine> async;
  Metrics metrics;
  httplib::Server http;
  int bound_port = -1;
  std::once_flag shutdown_once;
  std::atomic<bool> draining{false};
  // Streaming responses not yet fully written. The engine can finish a generation long before its stream has
  // reached a slow client (the events wait in the handle and the socket), and stopping the listener aborts every
  // stream still being written, so a graceful shutdown waits for these too.
  std::mutex streams_mutex;
  std::condition_variable streams_done;
  int64_t open_streams = 0;

  Impl(ServerOptions o, engine::Engine& e, const tok::Tokenizer& t) : options(std::move(o)), engine(e), tokenizer(t) {
    eos_ids = generation_stop_ids(engine.model().config(), &tokenizer, GenerateOptions{});  // as hylo generate
    context_tokens = engine.memory_plan().max_tokens_per_sequence;
    async = std::make_unique<AsyncEngine>(engine, tokenizer, eos_ids, options.max_queue);
    routes();
  }

  // ---- request preparation ------------------------------------------------------------------------------

  Prepared prepare(const httplib::Request& req, bool chat) {
    Prepared p;
    p.request = parse_completion_request(req.body, chat);
    const CompletionRequest& r = p.request;
    if (!r.model.empty() && r.model != options.model_name)
      throw api_error(404, "The model '" + r.model + "' does not exist; this server serves '" + options.model_name + "'",
                      "invalid_request_error", "model_not_found");

    const GenerationLimits limits{context_tokens, options.max_prompt_tokens, options.max_tokens_limit,
                                  options.default_completion_tokens, engine.model().config().vocab_size};
    p.generation = make_generation_request(r, tokenizer, eos_ids, limits);
    p.header = {chat, random_id(chat ? "chatcmpl-" : "cmpl-"), unix_now(), options.model_name};
    return p;
  }

  std::shared_ptr<RequestHandle> start(Prepared& p) {
    SubmitRefusal why = SubmitRefusal::kNone;
    auto handle = async->submit(std::move(p.generation), why);
    if (why == SubmitRefusal::kQueueFull)
      throw api_error(429, "Too many requests in flight (" + std::to_string(options.max_queue) +
                               ", --max-queue); retry later", "rate_limit_error", "queue_full");
    if (why == SubmitRefusal::kShuttingDown)
      throw api_error(503, "The server is shutting down", "server_error", "shutting_down");
    if (why == SubmitRefusal::kUnhealthy)
      throw api_error(503, "The engine failed and the server no longer accepts generations", "server_error",
                      "engine_failed");
    if (auto refused = handle->wait_accepted()) {
      const bool too_long = refused->find("max_tokens_per_sequence") != std::string::npos ||
                            refused->find("context") != std::string::npos;
      throw api_error(400, "The engine refused the request: " + *refused, "invalid_request_error",
                      too_long ? "context_length_exceeded" : "");
    }
    return handle;
  }

  // ---- generation endpoints -----------------------------------------------------------------------------

  void completion(const httplib::Request& req, httplib::Response& res, bool chat) {
    const auto t0 = Clock::now();
    Prepared p;
    std::shared_ptr<RequestHandle> handle;
    try {
      if (draining) throw api_error(503, "The server is shutting down", "server_error", "shutting_down");
      p = prepare(req, chat);
      handle = start(p);
    } catch (const ApiError& e) {
      send_error(res, e);
      return;
    }
    if (p.request.stream)
      stream(res, p, handle, t0);
    else
      whole(res, p, handle, t0);
  }

  Clock::time_point deadline_from(Clock::time_point t0) const {
    return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.timeout_s));
  }

  void whole(httplib::Response& res, const Prepared& p, const std::shared_ptr<RequestHandle>& handle,
             Clock::time_point t0) {
    const auto deadline = deadline_from(t0);
    std::string text;
    LogprobsBuilder logprobs(tokenizer, p.header.chat);
    double first_token = -1.0;
    bool timed_out = false;
    StreamChunk last;
    while (true) {
      // Checked on every wake-up, not only when idle: a request that keeps producing tokens can run out of time.
      if (!timed_out && Clock::now() > deadline) {
        timed_out = true;
        async->cancel(handle);
      }
      auto chunk = handle->next(std::chrono::milliseconds(100));
      if (!chunk) continue;
      if (!chunk->tokens.empty() && first_token < 0) first_token = seconds_since(t0);
      if (p.request.logprobs) logprobs.add(chunk->tokens, static_cast<int64_t>(text.size()));
      text += chunk->text;
      if (chunk->finished) {
        last = std::move(*chunk);
        break;
      }
    }
    metrics.record_tokens(last.prompt_tokens, last.completion_tokens);
    metrics.record_latency(seconds_since(t0), first_token);
    if (timed_out && last.finish_reason == "cancelled")
      return send_error(res, api_error(503, "The request took longer than " + json(options.timeout_s).dump() +
                                                " s (--timeout-s) and was cancelled", "server_error", "timeout"));
    if (last.finish_reason == "cancelled")
      return send_error(res, api_error(503, "The request was cancelled (server shutting down)", "server_error",
                                       "cancelled"));
    if (last.finish_reason == "error")
      return send_error(res, api_error(500, "Generation failed: " + last.error, "server_error", "engine_error"));
    const Usage usage{last.prompt_tokens, last.completion_tokens, last.cached_prompt_tokens};
    const json lp = p.request.logprobs ? logprobs.take() : json(nullptr);
    res.set_content(dump_json(full_answer(p.header, text, last.finish_reason, lp, usage)), "application/json");
  }

  // Server-sent events: one `data: {chunk}` per step that produced text (or logprobs), the finish chunk, the
  // usage chunk when asked, then `data: [DONE]`. A failed write means the client left: the request is
  // cancelled in the engine, and counted in /metrics.
  struct StreamState {
    Prepared prepared;
    std::shared_ptr<RequestHandle> handle;
    Clock::time_point t0, deadline;
    LogprobsBuilder logprobs;
    int64_t text_length = 0;
    double first_token = -1.0;
    bool role_sent = false, done = false, timed_out = false;
    StreamState(Prepared p, std::shared_ptr<RequestHandle> h, Clock::time_point start, Clock::time_point end,
                const tok::Tokenizer& tok)
        : prepared(std::move(p)), handle(std::move(h)), t0(start), deadline(end), logprobs(tok, prepared.header.chat) {}
  };

  static bool write_event(httplib::DataSink& sink, const std::string& payload) {
    const std::string event = "data: " + payload + "\n\n";
    return sink.write(event.data(), event.size());
  }

  void stream(httplib::Response& res, Prepared& p, const std::shared_ptr<RequestHandle>& handle,
              Clock::time_point t0) {
    auto state = std::make_shared<StreamState>(std::move(p), handle, t0, deadline_from(t0), tokenizer);
    {
      std::lock_guard lock(streams_mutex);
      ++open_streams;  // the releaser below runs exactly once, when the response ends (httplib's ~Response)
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, state](size_t, httplib::DataSink& sink) { return stream_step(*state, sink); },
        [this, state](bool) {
          // Runs when the response ends for any reason; a stream that did not reach its end lost its client.
          if (!state->done) {
            async->cancel(state->handle);
            // Drain the handle so that usage and latency are still recorded.
            while (auto chunk = state->handle->next(std::chrono::milliseconds(2000)))
              if (chunk->finished) {
                metrics.record_tokens(chunk->prompt_tokens, chunk->completion_tokens);
                break;
              }
          }
          {
            std::lock_guard lock(streams_mutex);
            --open_streams;
          }
          streams_done.notify_all();
        });
  }

  bool stream_step(StreamState& s, httplib::DataSink& sink) {
    const bool chat = s.prepared.header.chat;
    if (!s.role_sent && chat) {
      s.role_sent = true;
      return write_event(sink, dump_json(stream_chunk(s.prepared.header, "", true, "", nullptr)));
    }
    if (!s.timed_out && Clock::now() > s.deadline) {
      s.timed_out = true;
      async->cancel(s.handle);
    }
    auto chunk = s.handle->next(std::chrono::milliseconds(100));
    if (!chunk) return sink.is_writable();
    if (!chunk->tokens.empty() && s.first_token < 0) s.first_token = seconds_since(s.t0);
    const bool want_logprobs = s.prepared.request.logprobs && !chunk->tokens.empty();
    if (want_logprobs) s.logprobs.add(chunk->tokens, s.text_length);
    s.text_length += static_cast<int64_t>(chunk->text.size());
    if (!chunk->text.empty() || want_logprobs) {
      const json lp = want_logprobs ? s.logprobs.take() : json(nullptr);
      if (!write_event(sink, dump_json(stream_chunk(s.prepared.header, chunk->text, false, "", lp)))) {
        async->cancel(s.handle);
        return false;
      }
    }
    if (!chunk->finished) return true;

    s.done = true;
    metrics.record_tokens(chunk->prompt_tokens, chunk->completion_tokens);
    metrics.record_latency(seconds_since(s.t0), s.first_token);
    bool ok = true;
    if (chunk->finish_reason == "stop" || chunk->finish_reason == "length") {
      ok = write_event(sink, dump_json(stream_chunk(s.prepared.header, "", false, chunk->finish_reason, nullptr)));
    } else {
      const ApiError e = chunk->finish_reason == "error"
                             ? api_error(500, "Generation failed: " + chunk->error, "server_error", "engine_error")
                         : s.timed_out ? api_error(503, "The request took longer than --timeout-s and was cancelled",
                                                   "server_error", "timeout")
                                       : api_error(503, "The request was cancelled (server shutting down)",
                                                   "server_error", "cancelled");
      ok = sink.write("data: ", 6) && sink.write(e.to_json().data(), e.to_json().size()) && sink.write("\n\n", 2);
    }
    if (ok && s.prepared.request.include_usage)
      ok = write_event(sink, dump_json(usage_chunk(s.prepared.header, {chunk->prompt_tokens, chunk->completion_tokens,
                                                                        chunk->cached_prompt_tokens})));
    if (ok) ok = write_event(sink, "[DONE]");
    if (ok) sink.done();
    return ok;
  }

  // ---- other endpoints ----------------------------------------------------------------------------------

  json model_card() const {
    const auto& config = engine.model().config();
    const auto& plan = engine.memory_plan();
    json layers = json::object();
    for (const auto& layer : config.layers) layers[layer_kind_name(layer)] = layers.value(layer_kind_name(layer), 0) + 1;
    return {{"id", options.model_name},
            {"object", "model"},
            {"created", 0},
            {"owned_by", "hylo"},
            {"max_model_len", context_tokens},
            {"hylo",
             {{"architecture", config.architecture},
              {"model_type", config.model_type},
              {"vocab_size", config.vocab_size},
              {"layers", layers},
              {"hybrid", config.is_hybrid()},
              {"max_context_tokens", context_tokens},
              {"max_tokens_limit", options.max_tokens_limit},
              {"memory_plan", plan.describe()},
              {"chat_template", tokenizer.has_chat_template()}}}};
  }

  static std::string layer_kind_name(const LayerSpec& layer);

  std::string render_metrics() {
    EngineGauges g;
    g.stats = async->stats();
    g.in_flight = async->in_flight();
    g.cancelled_total = async->cancelled_total();
    g.stop_string_total = async->stop_string_total();
    g.healthy = async->healthy();
    return metrics.render(g);
  }

  void routes() {
    http.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
    // One worker per request in flight (streams hold theirs) plus a few for health, metrics and refusals.
    const size_t workers = static_cast<size_t>(std::clamp<int64_t>(options.max_queue, 1, 1024)) + 8;
    http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
      if (!guarded || options.api_key.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      if (auth.rfind(prefix, 0) != 0) {
        send_error(res, api_error(401, "Missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error",
                                  "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!constant_time_equal(auth.substr(prefix.size()), options.api_key)) {
        send_error(res, api_error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });

    http.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, true); });
    http.Post("/v1/completions",
              [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, false); });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump_json({{"object", "list"}, {"data", json::array({model_card()})}}), "application/json");
    });
    http.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.matches[1].str() != options.model_name)
        return send_error(res, api_error(404, "The model '" + req.matches[1].str() + "' does not exist",
                                         "invalid_request_error", "model_not_found"));
      res.set_content(dump_json(model_card()), "application/json");
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const bool ok = async->healthy() && !draining;
      res.status = ok ? 200 : 503;
      res.set_content(dump_json({{"status", ok ? "ok" : (draining ? "shutting_down" : "engine_failed")}}),
                      "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(render_metrics(), "text/plain; version=0.0.4");
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      const auto page = chat_page_html();
      res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    });

    // Answers httplib makes itself (no route: 404, body over the limit: 413, ...) get OpenAI's error body too.
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (res.status == 413)
        send_error(res, api_error(413, "The request body is larger than the server's limit (--max-body-bytes)",
                                  "invalid_request_error", "request_too_large"));
      else if (res.status == 404)
        send_error(res, api_error(404, "No route " + req.method + " " + req.path, "invalid_request_error",
                                  "unknown_route"));
      else
        send_error(res, api_error(res.status, "HTTP error " + std::to_string(res.status), "invalid_request_error"));
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, api_error(500, "Internal error: " + what, "server_error"));
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      static const std::set<std::string> known = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                                  "/health", "/metrics", "/"};
      metrics.record_request(known.count(req.path) ? req.path : "other", res.status);
    });
  }
};

std::string Server::Impl::layer_kind_name(const LayerSpec& layer) { return mixer_kind_name(layer.mixer); }

Server::Server(ServerOptions options, engine::Engine& engine, const tok::Tokenizer& tokenizer)
    : impl_(std::make_unique<Impl>(std::move(options), engine, tokenizer)) {}

Server::~Server() {
  shutdown(0.0);
  impl_->async->stop();
}

int Server::bind() {
  auto& s = *impl_;
  if (s.options.port == 0) {
    s.bound_port = s.http.bind_to_any_port(s.options.host);
    if (s.bound_port < 0) throw Error("serve: cannot bind " + s.options.host + " to any port");
  } else {
    if (!s.http.bind_to_port(s.options.host, s.options.port))
      throw Error("serve: cannot bind " + s.options.host + ":" + std::to_string(s.options.port) +
                  " (in use, or not an address of this machine)");
    s.bound_port = s.options.port;
  }
  return s.bound_port;
}

int Server::port() const { return impl_->bound_port; }

void Server::run() { impl_->http.listen_after_bind(); }

void Server::shutdown(double drain_timeout_s) {
  auto& s = *impl_;
  std::call_once(s.shutdown_once, [&] {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(drain_timeout_s * 1000));
    auto streams_written = [&](Clock::time_point until) {
      std::unique_lock lock(s.streams_mutex);
      return s.streams_done.wait_until(lock, until, [&] { return s.open_streams == 0; });
    };
    s.draining = true;
    s.async->begin_shutdown();
    // In-flight generations end, then their streams reach their clients, both within the drain time.
    const bool drained = s.async->wait_drained(std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::max(deadline - Clock::now(), Clock::duration::zero()))) &&
                         streams_written(deadline);
    // What did not finish in time is cancelled now, so that every stream sees its last chunk and the HTTP
    // workers (which stop() joins) can end; a graceful shutdown gives those last chunks a moment to go out.
    s.async->stop();
    if (!drained && drain_timeout_s > 0) streams_written(Clock::now() + std::chrono::seconds(1));
    s.http.stop();
  });
}

}  // namespace hylo::serve
