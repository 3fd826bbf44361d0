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

std::vector<PerplexityWindow> plan_perplexity_windows(int64_t tokens, const PerplexityOptions& o) {
  if (o.context < 2) throw Error("perplexity: --context must be >= 2 (a window of N tokens predicts N-1)");
  if (o.stride < 0 || o.stride > o.context)
    throw Error("perplexity: --stride must be in [1, context] (or 0 for non-overlapping windows), got " +
                std::to_string(o.stride));
  if (tokens < 2) throw Error("perplexity: the text has " + std::to_string(tokens) + " token(s); need >= 2");
  if (o.token_bytes && static_cast<int64_t>(o.token_bytes->size()) != tokens)
    throw Error("perplexity: token_bytes has " + std::to_string(o.token_bytes->size()) + " entries for " +
                std::to_string(tokens) + " ids");
  std::vector<PerplexityWindow> windows;
  int64_t scored_end = 0;  // text positions < scored_end are already predicted (or are position 0)
  for (int64_t start = 0; start < tokens;) {
    PerplexityWindow w;
    w.start = start;
    w.len = std::min(o.context, tokens - start);
    w.first = std::min(w.len, std::max<int64_t>(1, scored_end - start));
    windows.push_back(w);
    scored_end = start + w.len;
    if (start + w.len >= tokens) break;
    start += o.stride > 0 ? o.stride : o.context;
  }
  return windows;
}

PerplexityAccumulator::PerplexityAccumulator(const PerplexityOptions& o, int64_t tokens) : o_(o) {
  r_.tokens = tokens;
  if (o.bucket > 0) {
    const int64_t nb = (o.context - 1) / o.bucket + 1;
    r_.bucket_nll_sum.assign(static_cast<size_t>(nb), 0.0);
    r_.bucket_count.assign(static_cast<size_t>(nb), 0);
  }
}

void PerplexityAccumulator::add(const PerplexityWindow& w, int64_t offset, const double* nll, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = w.first + offset + i;  // position within the window
    r_.nll_sum += nll[i];
    if (o_.per_token) r_.nll.push_back(nll[i]);
    if (o_.bucket > 0) {
      r_.bucket_nll_sum[static_cast<size_t>(pos / o_.bucket)] += nll[i];
      ++r_.bucket_count[static_cast<size_t>(pos / o_.bucket)];
    }
    if (o_.token_bytes) r_.bytes += (*o_.token_bytes)[static_cast<size_t>(w.start + pos)];
  }
  r_.predicted += n;
}

PerplexityResult PerplexityAccumulator::finish() {
  r_.nll_mean = r_.nll_sum / static_cast<double>(r_.predicted);
  r_.perplexity = std::exp(r_.nll_mean);
  if (o_.token_bytes && r_.bytes > 0)
    r_.bits_per_byte = r_.nll_sum / std::numbers::ln2 / static_cast<double>(r_.bytes);
  return std::move(r_);
}

PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, const PerplexityOptions& o,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  const std::vector<PerplexityWindow> windows = plan_perplexity_windows(static_cast<int64_t>(ids.size()), o);
  c10::InferenceMode inference_mode;
  PerplexityAccumulator acc(o, static_cast<int64_t>(ids.size()));
  const int64_t total_windows = static_cast<int64_t>(windows.size());
  // The LM head runs over slices of positions so that [N, V] fp32 logits never exist at once.
  constexpr int64_t kHeadChunk = 256;
  const auto device = model.options().device();
  for (const PerplexityWindow& w : windows) {
    if (w.len - w.first >= 1) {
      std::vector<int64_t> window(ids.begin() + w.start, ids.begin() + w.start + w.len);
      at::Tensor input = at::tensor(window, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);  // [1, L]
      at::Tensor hidden = model.forward_hidden(input);                                          // [1, L, D]
      at::Tensor targets = input.squeeze(0).to(device);                                         // [L]
      for (int64_t a = w.first; a < w.len; a += kHeadChunk) {
        const int64_t n = std::min(kHeadChunk, w.len - a);
        // Hidden state at window position a-1 predicts the token at position a.
        at::Tensor logits = model.lm_head(hidden.select(0, 0).narrow(0, a - 1, n));          // [n, V] fp32
        at::Tensor logp = at::log_softmax(logits, -1);                                       // [n, V]
        at::Tensor nll = -logp.gather(1, targets.narrow(0, a, n).unsqueeze(1)).squeeze(1);   // [n]
        at::Tensor nll64 = nll.to(at::kCPU, at::kDouble).contiguous();
        acc.add(w, a - w.first, nll64.data_ptr<double>(), n);
      }
    }
    acc.end_window();
    if (on_window) on_window(acc.windows(), total_windows);
  }
  return acc.finish();
}

PerplexityResult perplexity(CausalLM& model, const std::vector<int64_t>& ids, int64_t context, bool per_token,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  PerplexityOptions o;
  o.context = context;
  o.per_token = per_token;
  return perplexity(model, ids, o, on_window);
}

}  // namespace hylo::eval
