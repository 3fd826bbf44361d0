#include "hylo/eval/perplexity_engine.h"

#include <map>
#include <string>

#include "hylo/core/result.h"

namespace hylo::eval {

PerplexityResult perplexity(engine::Engine& engine, const std::vector<int64_t>& ids, const PerplexityOptions& o,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  const std::vector<PerplexityWindow> windows = plan_perplexity_windows(static_cast<int64_t>(ids.size()), o);
  if (engine.has_work()) throw Error("perplexity: the engine is still busy with other sequences");
  const int64_t total = static_cast<int64_t>(windows.size());

  // Window index -> its NLLs (positions first .. len-1), filled as sequences finish; summed in window order at the
  // end, so the result does not depend on the order the engine finishes them in.
  std::vector<std::vector<double>> nll(windows.size());
  std::map<engine::SeqId, size_t> window_of;
  int64_t done = 0;
  for (size_t k = 0; k < windows.size(); ++k) {
    const PerplexityWindow& w = windows[k];
    if (w.len - w.first < 1) {  // nothing left to predict (a sliding window wholly scored before)
      ++done;
      continue;
    }
    engine::Request request;
    request.prompt.assign(ids.begin() + w.start, ids.begin() + w.start + w.len);
    request.prompt_logprobs = true;
    request.max_new_tokens = 0;
    request.sampling.temperature = 0.0;
    window_of[engine.submit(std::move(request))] = k;
  }
  if (on_window && done > 0) on_window(done, total);

  while (engine.has_work()) {
    for (const engine::Event& e : engine.step()) {
      if (e.finish == engine::FinishReason::kNone) continue;
      const auto it = window_of.find(e.seq);
      if (it == window_of.end()) continue;
      if (e.finish == engine::FinishReason::kError)
        throw Error("perplexity: the engine failed on window " + std::to_string(it->second) + ": " + e.error);
      const PerplexityWindow& w = windows[it->second];
      const engine::SequenceResult& r = engine.result(e.seq);
      // prompt_logprobs[i] = log p(prompt[i + 1] | prompt[<= i]); window position p is entry p - 1.
      if (static_cast<int64_t>(r.prompt_logprobs.size()) != w.len - 1)
        throw Error("perplexity: the engine returned " + std::to_string(r.prompt_logprobs.size()) +
                    " prompt log-probabilities for a window of " + std::to_string(w.len) + " tokens");
      auto& out = nll[it->second];
      out.reserve(static_cast<size_t>(w.len - w.first));
      for (int64_t p = w.first; p < w.len; ++p) out.push_back(-r.prompt_logprobs[static_cast<size_t>(p - 1)]);
      engine.release(e.seq);
      if (on_window) on_window(++done, total);
    }
  }

  PerplexityAccumulator acc(o, static_cast<int64_t>(ids.size()));
  for (size_t k = 0; k < windows.size(); ++k) {
    acc.add(windows[k], 0, nll[k].data(), static_cast<int64_t>(nll[k].size()));
    acc.end_window();
  }
  return acc.finish();
}

}  // namespace hylo::eval
