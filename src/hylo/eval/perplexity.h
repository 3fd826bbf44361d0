// Perplexity of a model over a token sequence, in non-overlapping windows.
//
// Definition (what `hylo perplexity` reports): the ids are cut into windows ids[k*N, (k+1)*N) of N = context
// tokens (the last window may be shorter). Each window is one stateless forward from position 0; within it
// every token except the window's first is predicted from the tokens before it in the same window. So a
// window of L tokens contributes L-1 predictions, and nothing crosses a window boundary. nll_mean is the mean
// of -log p(token) over all predictions (natural log); perplexity = exp(nll_mean).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "hylo/model/causal_lm.h"

namespace hylo::eval {

struct PerplexityResult {
  int64_t tokens = 0;       // ids scored (the whole sequence)
  int64_t predicted = 0;    // predictions made (tokens - windows, for windows of >= 1 token)
  int64_t windows = 0;
  double nll_sum = 0.0;
  double nll_mean = 0.0;
  double perplexity = 0.0;
  std::vector<double> nll;  // per prediction, in order (only when asked for)
};

// on_window(done, total) is called after each window (progress display).
PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, int64_t context, bool per_token,
                            const std::function<void(int64_t, int64_t)>& on_window = {});

}  // namespace hylo::eval
