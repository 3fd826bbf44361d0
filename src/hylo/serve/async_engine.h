// A thread-safe front of the (single-threaded) engine for the HTTP server: one loop thread owns the Engine and
// is the only caller of submit/cancel/step; HTTP threads hand it requests and read each request's chunks from
// that request's own queue. Text is made here, in the loop, per request: ids go through generate.h's
// GeneratedText (a tok::StreamDecoder for complete UTF-8, a StopStringFilter); when a stop string completes the
// sequence is cancelled in the engine at once, so no compute is spent past it.
//
// Life cycle: submit() until begin_shutdown(); then new submissions are refused while in-flight requests run to
// their end (wait_drained), and stop() cancels whatever is left and joins the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hylo/infer/engine/engine.h"
#include "hylo/io/tokenizer/tokenizer.h"

namespace hylo::serve {

struct TokenInfo {
  int64_t id = 0;
  double logprob = 0.0;
  std::vector<engine::TokenLogprob> top;
};

// What one engine step produced for one request: newly released text and the tokens generated in the step.
// The last chunk of a request has finished = true, the finish reason and the usage counts.
struct StreamChunk {
  std::string text;
  std::vector<TokenInfo> tokens;
  bool finished = false;
  std::string finish_reason;       // "stop" (EOS or stop string), "length", "cancelled", "error"
  std::string error;               // with "error"
  int64_t prompt_tokens = 0;       // set on the last chunk
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;
};

struct GenerationRequest {
  engine::Request request;                 // prompt ids, sampling, max_new_tokens, stop_ids, top_logprobs
  std::vector<std::string> stop_strings;   // matched on the decoded text, never emitted
};

class AsyncEngine;

// Shared by the HTTP thread that owns the request and the loop thread that feeds it.
class RequestHandle {
 public:
  // Blocks until the loop has handed the request to the engine. Returns the engine's error message when the
  // engine refused it (malformed or over the context limit); nothing is queued then.
  std::optional<std::string> wait_accepted();
  // The next chunk, or nothing when none came within `timeout`.
  std::optional<StreamChunk> next(std::chrono::milliseconds timeout);

 private:
  friend class AsyncEngine;
  enum class State { kPending, kAccepted, kRejected };
  void push(StreamChunk chunk);
  void set_state(State state, std::string error = {});

  std::mutex mutex_;
  std::condition_variable cv_;
  State state_ = State::kPending;
  std::string reject_error_;
  std::deque<StreamChunk> chunks_;
  GenerationRequest request_;        // moved into the engine on acceptance
  engine::SeqId seq_ = -1;           // loop thread only
  std::atomic<bool> cancel_requested_{false};
};

enum class SubmitRefusal { kNone, kQueueFull, kShuttingDown, kUnhealthy };

class AsyncEngine {
 public:
  // The engine and tokenizer must outlive this object. eos_ids: ids that end a generation (the config's and
  // the tokenizer's); they are counted as generated tokens but never decoded into text. max_in_flight: the
  // most requests accepted at once (waiting + running); more are refused with kQueueFull.
  AsyncEngine(engine::Engine& engine, const tok::Tokenizer& tokenizer, std::vector<int64_t> eos_ids,
              int64_t max_in_flight);
  ~AsyncEngine();  // stop()
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Hands a request to the loop; nullptr and `why` set when refused.
  std::shared_ptr<RequestHandle> submit(GenerationRequest request, SubmitRefusal& why);
  // Ends a request early (client gone, timeout): the engine cancels it at the next step boundary and the
  // handle gets a last chunk with finish_reason "cancelled". Idempotent; finished requests are unaffected.
  void cancel(const std::shared_ptr<RequestHandle>& handle);

  void begin_shutdown();                                   // refuse new requests from now on
  bool wait_drained(std::chrono::milliseconds timeout);    // true when nothing is in flight
  void stop();                                             // cancel the rest, join the loop thread

  int64_t in_flight() const;
  bool shutting_down() const { return shutting_down_.load(); }
  bool healthy() const { return healthy_.load(); }
  engine::EngineStats stats() const;                       // as of the last step
  int64_t cancelled_total() const { return cancelled_total_.load(); }
  int64_t stop_string_total() const { return stop_string_total_.load(); }

 private:
  struct Live;
  void loop();
  void accept_new(std::deque<std::shared_ptr<RequestHandle>>& incoming);
  void apply_cancels(std::vector<std::shared_ptr<RequestHandle>>& cancels);
  void on_event(const engine::Event& event);
  void finish(Live& live, engine::SeqId seq, const std::string& reason, const std::string& error);
  void fail_all(const std::string& error);

  engine::Engine& engine_;
  const tok::Tokenizer& tokenizer_;
  std::set<int64_t> eos_ids_;
  int64_t max_in_flight_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;      // the loop waits here for work
  std::condition_variable drained_;   // wait_drained waits here
  std::deque<std::shared_ptr<RequestHandle>> incoming_;
  std::vector<std::shared_ptr<RequestHandle>> cancels_;
  int64_t in_flight_ = 0;             // submitted and not yet finished
  bool stop_ = false;
  engine::EngineStats stats_;

  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> cancelled_total_{0};
  std::atomic<int64_t> stop_string_total_{0};

  std::map<engine::SeqId, std::unique_ptr<Live>> live_;  // loop thread only
  std::thread thread_;
};

}  // namespace hylo::serve
