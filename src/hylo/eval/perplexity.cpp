#include "hylo/eval/perplexity.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <numbers>
#include <string>

#include "hylo/core/result.h"

namespace hylo::eval {

int64_t perplexity_windows(int64_t tokens, int64_t context, int64_t stride) {
  if (stride <= 0) return (tokens + context - 1) / context;
  if (tokens <= context) return 1;
  return 1 + (tokens - context + stride - 1) / stride;
}

PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, const PerplexityOptions& o,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  if (o.context < 2) throw Error("perplexity: --context must be >= 2 (a window of N tokens predicts N-1)");
  if (o.stride < 0 || o.stride > o.context)
    throw Error("perplexity: --stride must be in [1, context] (or 0 for non-overlapping windows), got " +
                std::to_string(o.stride));
  if (ids.size() < 2) throw Error("perplexity: the text has " + std::to_string(ids.size()) + " token(s); need >= 2");
  if (o.token_bytes && o.token_bytes->size() != ids.size())
    throw Error("perplexity: token_bytes has " + std::to_string(o.token_bytes->size()) + " entries for " +
                std::to_string(ids.size()) + " ids");
  c10::InferenceMode inference_mode;
  PerplexityResult r;
  r.tokens = static_cast<int64_t>(ids.size());
  const int64_t total_windows = perplexity_windows(r.tokens, o.context, o.stride);
  if (o.bucket > 0) {
    const int64_t nb = (o.context - 1) / o.bucket + 1;
    r.bucket_nll_sum.assign(static_cast<size_t>(nb), 0.0);
    r.bucket_count.assign(static_cast<size_t>(nb), 0);
  }
  // The LM head runs over slices of positions so that [N, V] fp32 logits never exist at once.
  constexpr int64_t kHeadChunk = 256;
  const auto device = model.options().device();
  int64_t scored_end = 0;  // text positions < scored_end are already predicted (or are position 0)
  for (int64_t start = 0; start < r.tokens;) {
    const int64_t len = std::min(o.context, r.tokens - start);
    const int64_t first = std::max<int64_t>(1, scored_end - start);  // first window index to predict
    ++r.windows;
    if (len - first >= 1) {
      std::vector<int64_t> window(ids.begin() + start, ids.begin() + start + len);
      at::Tensor input = at::tensor(window, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);  // [1, L]
      at::Tensor hidden = model.forward_hidden(input);                                          // [1, L, D]
      at::Tensor targets = input.squeeze(0).to(device);                                         // [L]
      for (int64_t a = first; a < len; a += kHeadChunk) {
        const int64_t n = std::min(kHeadChunk, len - a);
        // Hidden state at window position a-1 predicts the token at position a.
        at::Tensor logits = model.lm_head(hidden.select(0, 0).narrow(0, a - 1, n));          // [n, V] fp32
        at::Tensor logp = at::log_softmax(logits, -1);                                       // [n, V]
        at::Tensor nll = -logp.gather(1, targets.narrow(0, a, n).unsqueeze(1)).squeeze(1);   // [n]
        at::Tensor nll64 = nll.to(at::kCPU, at::kDouble).contiguous();
        const double* p = nll64.data_ptr<double>();
        for (int64_t i = 0; i < n; ++i) {
          const int64_t pos = a + i;  // position within the window
          r.nll_sum += p[i];
          if (o.per_token) r.nll.push_back(p[i]);
          if (o.bucket > 0) {
            r.bucket_nll_sum[static_cast<size_t>(pos / o.bucket)] += p[i];
            ++r.bucket_count[static_cast<size_t>(pos / o.bucket)];
          }
          if (o.token_bytes) r.bytes += (*o.token_bytes)[static_cast<size_t>(start + pos)];
        }
        r.predicted += n;
      }
    }
    scored_end = start + len;
    if (on_window) on_window(r.windows, total_windows);
    if (start + len >= r.tokens) break;
    start += o.stride > 0 ? o.stride : o.context;
  }
  r.nll_mean = r.nll_sum / static_cast<double>(r.predicted);
  r.perplexity = std::exp(r.nll_mean);
  if (o.token_bytes && r.bytes > 0) r.bits_per_byte = r.nll_sum / std::numbers::ln2 / static_cast<double>(r.bytes);
  return r;
}

PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, int64_t context, bool per_token,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  PerplexityOptions o;
  o.context = context;
  o.per_token = per_token;
  return perplexity(model, ids, o, on_window);
}

}  // namespace hylo::eval
