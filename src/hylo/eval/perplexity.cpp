#include "hylo/eval/perplexity.h"

#include <cmath>
#include <string>

#include "hylo/core/result.h"

namespace hylo::eval {

PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, int64_t context, bool per_token,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  if (context < 2) throw Error("perplexity: --context must be >= 2 (a window of N tokens predicts N-1)");
  if (ids.size() < 2) throw Error("perplexity: the text has " + std::to_string(ids.size()) + " token(s); need >= 2");
  PerplexityResult r;
  r.tokens = static_cast<int64_t>(ids.size());
  const int64_t total_windows = (r.tokens + context - 1) / context;
  // The LM head runs over slices of positions so that [N, V] fp32 logits never exist at once.
  constexpr int64_t kHeadChunk = 256;
  const auto device = model.options().device();
  for (int64_t start = 0; start < r.tokens; start += context) {
    const int64_t len = std::min(context, r.tokens - start);
    ++r.windows;
    if (len >= 2) {
      std::vector<int64_t> window(ids.begin() + start, ids.begin() + start + len);
      at::Tensor input = at::tensor(window, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);  // [1, L]
      at::Tensor hidden = model.forward_hidden(input);                                          // [1, L, D]
      at::Tensor targets = input.squeeze(0).narrow(0, 1, len - 1).to(device);                   // [L-1]
      for (int64_t a = 0; a < len - 1; a += kHeadChunk) {
        const int64_t n = std::min(kHeadChunk, len - 1 - a);
        at::Tensor logits = model.lm_head(hidden.select(0, 0).narrow(0, a, n));              // [n, V] fp32
        at::Tensor logp = at::log_softmax(logits, -1);                                       // [n, V]
        at::Tensor nll = -logp.gather(1, targets.narrow(0, a, n).unsqueeze(1)).squeeze(1);   // [n]
        at::Tensor nll64 = nll.to(at::kCPU, at::kDouble).contiguous();
        const double* p = nll64.data_ptr<double>();
        for (int64_t i = 0; i < n; ++i) {
          r.nll_sum += p[i];
          if (per_token) r.nll.push_back(p[i]);
        }
        r.predicted += n;
      }
    }
    if (on_window) on_window(r.windows, total_windows);
  }
  r.nll_mean = r.nll_sum / static_cast<double>(r.predicted);
  r.perplexity = std::exp(r.nll_mean);
  return r;
}

}  // namespace hylo::eval
