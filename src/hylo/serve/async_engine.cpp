#include "hylo/serve/async_engine.h"

#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <exception>
#include <utility>

#include "hylo/infer/generate.h"

namespace hylo::serve {

// ---- RequestHandle ------------------------------------------------------------------------------------------

std::optional<std::string> RequestHandle::wait_accepted() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return state_ != State::kPending; });
  if (state_ == State::kRejected) return reject_error_;
  return std::nullopt;
}

std::optional<StreamChunk> RequestHandle::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [&] { return !chunks_.empty(); })) return std::nullopt;
  StreamChunk chunk = std::move(chunks_.front());
  chunks_.pop_front();
  return chunk;
}

void RequestHandle::push(StreamChunk chunk) {
  {
    std::lock_guard lock(mutex_);
    chunks_.push_back(std::move(chunk));
  }
  cv_.notify_all();
}

void RequestHandle::set_state(State state, std::string error) {
  {
    std::lock_guard lock(mutex_);
    state_ = state;
    reject_error_ = std::move(error);
  }
  cv_.notify_all();
}

// ---- AsyncEngine --------------------------------------------------------------------------------------------

// Loop-thread state of one running request. Text goes through the same GeneratedText (stream decoder + stop
// strings) as `hylo generate`; what it releases during one event collects in `pending` for that event's chunk.
struct AsyncEngine::Live {
  Live(std::shared_ptr<RequestHandle> h, const tok::Tokenizer& tokenizer, const GenerateOptions& options)
      : handle(std::move(h)), text(&tokenizer, options, answer, [this](std::string_view piece) { pending += piece; }) {}
  std::string take_pending() { return std::exchange(pending, {}); }

  std::shared_ptr<RequestHandle> handle;
  std::string answer;    // all text released so far
  std::string pending;   // released since the last chunk
  GeneratedText text;
  int64_t prompt_tokens = 0;
  int64_t generated = 0;
  bool finished = false;   // the last chunk was sent (a stop string ends the answer before the engine's event)
};

AsyncEngine::AsyncEngine(engine::Engine& engine, const tok::Tokenizer& tokenizer, std::vector<int64_t> eos_ids,
                         int64_t max_in_flight)
    : engine_(engine), tokenizer_(tokenizer), eos_ids_(eos_ids.begin(), eos_ids.end()),
      max_in_flight_(max_in_flight) {
  stats_ = engine_.stats();
  thread_ = std::thread([this] { loop(); });
}

AsyncEngine::~AsyncEngine() { stop(); }

std::shared_ptr<RequestHandle> AsyncEngine::submit(GenerationRequest request, SubmitRefusal& why) {
  why = SubmitRefusal::kNone;
  if (!healthy_) {
    why = SubmitRefusal::kUnhealthy;
    return nullptr;
  }
  auto handle = std::make_shared<RequestHandle>();
  handle->request_ = std::move(request);
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_ || stop_) {
      why = SubmitRefusal::kShuttingDown;
      return nullptr;
    }
    if (in_flight_ >= max_in_flight_) {
      why = SubmitRefusal::kQueueFull;
      return nullptr;
    }
    ++in_flight_;
    incoming_.push_back(handle);
  }
  wake_.notify_all();
  return handle;
}

void AsyncEngine::cancel(const std::shared_ptr<RequestHandle>& handle) {
  if (!handle || handle->cancel_requested_.exchange(true)) return;
  {
    std::lock_guard lock(mutex_);
    cancels_.push_back(handle);
  }
  wake_.notify_all();
}

void AsyncEngine::begin_shutdown() {
  {
    std::lock_guard lock(mutex_);
    shutting_down_ = true;
  }
  wake_.notify_all();
}

bool AsyncEngine::wait_drained(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return drained_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
}

void AsyncEngine::stop() {
  {
    std::lock_guard lock(mutex_);
    shutting_down_ = true;
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t AsyncEngine::in_flight() const {
  std::lock_guard lock(mutex_);
  return in_flight_;
}

engine::EngineStats AsyncEngine::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void AsyncEngine::accept_new(std::deque<std::shared_ptr<RequestHandle>>& incoming) {
  for (auto& handle : incoming) {
    GenerateOptions text_options;
    text_options.stop_strings = handle->request_.stop_strings;
    auto live = std::make_unique<Live>(handle, tokenizer_, text_options);
    live->prompt_tokens = static_cast<int64_t>(handle->request_.request.prompt.size());
    if (handle->cancel_requested_) {  // the client left before the engine saw the request
      handle->set_state(RequestHandle::State::kAccepted);
      finish(*live, -1, "cancelled", "");
      continue;
    }
    try {
      handle->seq_ = engine_.submit(std::move(handle->request_.request));
    } catch (const std::exception& e) {
      handle->set_state(RequestHandle::State::kRejected, e.what());
      std::lock_guard lock(mutex_);
      --in_flight_;
      drained_.notify_all();
      continue;
    }
    handle->set_state(RequestHandle::State::kAccepted);
    live_[handle->seq_] = std::move(live);
  }
  incoming.clear();
}

void AsyncEngine::apply_cancels(std::vector<std::shared_ptr<RequestHandle>>& cancels) {
  for (auto& handle : cancels) {
    auto it = live_.find(handle->seq_);
    if (handle->seq_ >= 0 && it != live_.end() && !it->second->finished) engine_.cancel(handle->seq_);
  }
  cancels.clear();
}

void AsyncEngine::finish(Live& live, engine::SeqId seq, const std::string& reason, const std::string& error) {
  if (live.finished) return;
  live.finished = true;
  StreamChunk last;
  last.finished = true;
  last.finish_reason = reason;
  last.error = error;
  last.prompt_tokens = live.prompt_tokens;
  last.completion_tokens = live.generated;
  if (seq >= 0) last.cached_prompt_tokens = engine_.result(seq).cached_prompt_tokens;
  if (reason == "cancelled") ++cancelled_total_;
  live.handle->push(std::move(last));
  std::lock_guard lock(mutex_);
  --in_flight_;
  drained_.notify_all();
}

void AsyncEngine::on_event(const engine::Event& event) {
  auto it = live_.find(event.seq);
  if (it == live_.end()) return;
  Live& live = *it->second;
  if (event.token >= 0 && !live.finished) {
    ++live.generated;
    StreamChunk chunk;
    bool stopped = false;
    if (!eos_ids_.count(event.token)) {  // an end-of-sequence id is counted, never decoded (as in generate)
      chunk.tokens.push_back({event.token, event.logprob, event.top});
      stopped = live.text.push(event.token);
      chunk.text = live.take_pending();
    }
    if (!chunk.text.empty() || !chunk.tokens.empty()) live.handle->push(std::move(chunk));
    if (stopped) {  // the answer is complete; the engine frees the sequence at the next step boundary
      ++stop_string_total_;
      engine_.cancel(event.seq);
      finish(live, event.seq, "stop", "");
    }
  }
  if (event.finish == engine::FinishReason::kNone) return;
  if (!live.finished) {
    if (event.finish == engine::FinishReason::kEos || event.finish == engine::FinishReason::kLength) {
      StreamChunk tail;
      const bool stopped = live.text.finish();
      if (stopped) ++stop_string_total_;
      tail.text = live.take_pending();
      if (!tail.text.empty()) live.handle->push(std::move(tail));
      const bool by_length = event.finish == engine::FinishReason::kLength && !stopped;
      finish(live, event.seq, by_length ? "length" : "stop", "");
    } else if (event.finish == engine::FinishReason::kCancelled) {
      finish(live, event.seq, "cancelled", "");
    } else {
      finish(live, event.seq, "error", event.error.empty() ? "the engine failed this request" : event.error);
    }
  }
  engine_.release(event.seq);
  live_.erase(it);
}

void AsyncEngine::fail_all(const std::string& error) {
  for (auto& [seq, live] : live_) {
    try {
      engine_.cancel(seq);
    } catch (const std::exception&) {
    }
    finish(*live, -1, "error", error);
  }
  live_.clear();
}

void AsyncEngine::loop() {
  c10::InferenceMode inference_mode;
  std::deque<std::shared_ptr<RequestHandle>> incoming;
  std::vector<std::shared_ptr<RequestHandle>> cancels;
  while (true) {
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || !incoming_.empty() || !cancels_.empty() || !live_.empty(); });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stop_;
    }
    accept_new(incoming);
    if (stopping)
      for (auto& [seq, live] : live_)
        if (!live->finished) engine_.cancel(seq);
    apply_cancels(cancels);
    if (engine_.has_work()) {
      try {
        for (const engine::Event& event : engine_.step()) on_event(event);
      } catch (const std::exception& e) {
        // The engine's state after a failed step is unknown: answer everyone with the error and refuse new work
        // (/health turns 503) rather than serve from a possibly corrupt cache.
        std::fprintf(stderr, "hylo serve: engine step failed: %s\n", e.what());
        healthy_ = false;
        fail_all(std::string("engine step failed: ") + e.what());
      }
    } else {
      // Requests whose last chunk went out (stop string) and whose cancellation the engine already absorbed;
      // one still unfinished here was dropped by the engine without an end event, which must not hang its client.
      for (auto it = live_.begin(); it != live_.end();) {
        if (!it->second->finished) finish(*it->second, -1, "error", "the engine ended the sequence without a result");
        try {
          engine_.release(it->first);
        } catch (const std::exception&) {  // already gone: nothing to free
        }
        it = live_.erase(it);
      }
    }
    {
      std::lock_guard lock(mutex_);
      stats_ = engine_.stats();
    }
    if (stopping && live_.empty() && !engine_.has_work()) {
      std::lock_guard lock(mutex_);
      if (incoming_.empty()) break;
    }
  }
}

}  // namespace hylo::serve
