#include "hylo/infer/engine_generate.h"

#include <chrono>
#include <set>

#include "hylo/core/result.h"

namespace hylo {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

StopReason stop_reason_of(engine::FinishReason finish) {
  switch (finish) {
    case engine::FinishReason::kEos: return StopReason::kEos;
    case engine::FinishReason::kLength: return StopReason::kLength;
    default: break;
  }
  throw Error(std::string("generate: the engine ended the sequence with '") + engine::finish_reason_name(finish) +
              "'");
}

}  // namespace

EngineGenerateResult generate(engine::Engine& engine, const tok::Tokenizer* tokenizer,
                              std::span<const int64_t> prompt, const GenerateOptions& options,
                              const TextCallback& on_text) {
  CausalLM& model = engine.model();
  check_generate_input(model.config(), tokenizer, prompt, options);
  if (engine.has_work()) throw Error("generate: the engine is still busy with other sequences");
  EngineGenerateResult out;
  GenerateResult& result = out.generation;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  if (options.max_new_tokens == 0) return out;

  engine::Request request;
  request.prompt.assign(prompt.begin(), prompt.end());
  request.sampling = options.sampling;
  request.max_new_tokens = options.max_new_tokens;
  request.stop_ids = generation_stop_ids(model.config(), tokenizer, options);
  const std::set<int64_t> stop_ids(request.stop_ids.begin(), request.stop_ids.end());
  GeneratedText text(tokenizer, options, result.text, on_text);

  const auto t_start = Clock::now();
  Clock::time_point t_first{};
  const engine::SeqId seq = engine.submit(std::move(request));
  bool text_stopped = false;
  engine::FinishReason finish = engine::FinishReason::kNone;
  std::string error;
  while (engine.has_work()) {
    for (const engine::Event& e : engine.step()) {
      if (e.seq != seq) continue;
      if (e.token >= 0 && !text_stopped) {
        if (result.ids.empty()) {
          t_first = Clock::now();
          result.prefill_seconds = seconds_since(t_start);
        }
        result.ids.push_back(e.token);
        // The engine stops by itself at stop ids and the length limit; a stop string is only visible in the
        // decoded text, so the sequence is cancelled here (the stop id itself is not decoded, as in generate()).
        if (!stop_ids.count(e.token) && text.push(e.token)) {
          text_stopped = true;
          engine.cancel(seq);
        }
      }
      if (e.finish != engine::FinishReason::kNone) {
        finish = e.finish;
        error = e.error;
      }
    }
  }
  if (finish == engine::FinishReason::kError) throw Error("generate: the engine failed: " + error);
  if (text_stopped) {
    result.stop_reason = StopReason::kStopString;
  } else {
    result.stop_reason = stop_reason_of(finish);
    if (text.finish()) result.stop_reason = StopReason::kStopString;
  }
  result.decode_steps = result.ids.empty() ? 0 : static_cast<int64_t>(result.ids.size()) - 1;
  result.decode_seconds = result.ids.empty() ? 0.0 : seconds_since(t_first);
  const engine::SequenceResult& r = engine.result(seq);
  out.cached_prompt_tokens = r.cached_prompt_tokens;
  out.preemptions = r.preemptions;
  engine.release(seq);
  return out;
}

}  // namespace hylo
