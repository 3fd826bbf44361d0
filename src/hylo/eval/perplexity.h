// Perplexity of a model over a token sequence, in non-overlapping or sliding windows, with bits per byte and
// the NLL by position within the window (does the model use long context?).
//
// Non-overlapping (stride 0, what `hylo perplexity` reports): the ids are cut into windows ids[k*N, (k+1)*N) of
// N = context tokens (the last window may be shorter). Each window is one stateless forward from position 0;
// within it every token except the window's first is predicted from the tokens before it in the same window.
// So a window of L tokens contributes L-1 predictions, and nothing crosses a window boundary.
//
// Sliding (stride S, 1 <= S <= N): windows of N tokens start at 0, S, 2S, ...; each window scores only the tokens
// no earlier window scored (the first window all but its first token, later ones their last S or fewer), so
// every token after the first is predicted exactly once with at least N-S tokens of context (the standard
// "strided" evaluation of fixed-length models). The last window ends at the end of the text.
//
// nll_mean is the mean of -log p(token) over all predictions (natural log); perplexity = exp(nll_mean).
// bits_per_byte = sum of NLL / ln 2 / the UTF-8 bytes of the predicted tokens' text (given token_bytes: the bytes
// of text each token completes when the ids are decoded in order, special tokens 0).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "hylo/model/causal_lm.h"

namespace hylo::eval {

struct PerplexityOptions {
  int64_t context = 2048;
  int64_t stride = 0;                              // 0: non-overlapping windows
  bool per_token = false;                          // keep every prediction's NLL
  int64_t bucket = 0;                              // > 0: NLL by window position in buckets of this many tokens
  const std::vector<int64_t>* token_bytes = nullptr;  // per id (same length as ids): enables bits_per_byte
};

struct PerplexityResult {
  int64_t tokens = 0;       // ids scored (the whole sequence)
  int64_t predicted = 0;    // predictions made (tokens - windows, for non-overlapping windows of >= 1 token)
  int64_t windows = 0;
  double nll_sum = 0.0;
  double nll_mean = 0.0;
  double perplexity = 0.0;
  int64_t bytes = 0;        // bytes of the predicted tokens (with token_bytes)
  double bits_per_byte = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> nll;  // per prediction, in order (only when asked for)
  // NLL by the predicted token's position p within its window (1 .. context-1): bucket b holds p in
  // [b*bucket, (b+1)*bucket).
  std::vector<double> bucket_nll_sum;
  std::vector<int64_t> bucket_count;
};

// One window of the evaluation: ids[start, start + len), predicting window positions [first, len) (first >= 1;
// first == len: nothing left to predict in it).
struct PerplexityWindow {
  int64_t start = 0, len = 0, first = 1;
};
// The windows in order, after checking the options (errors name --context / --stride) and the ids.
std::vector<PerplexityWindow> plan_perplexity_windows(int64_t tokens, const PerplexityOptions& options);

// Sums window NLLs into a PerplexityResult (per-token list, position buckets, bytes) in the order they are added.
// Both the reference loop below and the engine's (perplexity_engine.h) use it.
class PerplexityAccumulator {
 public:
  PerplexityAccumulator(const PerplexityOptions& options, int64_t tokens);
  // nll[i] is the NLL of window position w.first + offset + i, for i in [0, n).
  void add(const PerplexityWindow& w, int64_t offset, const double* nll, int64_t n);
  void end_window() { ++r_.windows; }
  int64_t windows() const { return r_.windows; }
  PerplexityResult finish();  // nll_mean, perplexity, bits_per_byte

 private:
  const PerplexityOptions& o_;
  PerplexityResult r_;
};

// on_window(done, total) is called after each window (progress display).
PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, const PerplexityOptions& options,
                            const std::function<void(int64_t, int64_t)>& on_window = {});

// Non-overlapping windows of `context` (the form `hylo perplexity` uses).
PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, int64_t context, bool per_token,
                            const std::function<void(int64_t, int64_t)>& on_window = {});

// Number of windows perplexity() will run.
int64_t perplexity_windows(int64_t tokens, int64_t context, int64_t stride);

}  // namespace hylo::eval
