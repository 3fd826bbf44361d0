#include "hylo/infer/sampler.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "hylo/core/result.h"

namespace hylo {

namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

at::Tensor as_float_row(const at::Tensor& logits) {
  if (logits.dim() == 2 && logits.size(0) != 1)
    throw Error("sampler: expected logits of one sequence, [V] or [1, V], got [" + std::to_string(logits.size(0)) +
                ", " + std::to_string(logits.size(1)) + "]");
  if (logits.dim() != 1 && logits.dim() != 2)
    throw Error("sampler: expected logits [V] or [1, V], got a tensor of rank " + std::to_string(logits.dim()));
  // A copy, so the processors never write into the caller's logits.
  return logits.reshape({-1}).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);  // [V] fp32
}

}  // namespace

void SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0)
    throw Error("sampling: temperature must be a finite value >= 0 (0 = greedy), got " + std::to_string(temperature));
  if (top_k < 0) throw Error("sampling: top_k must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0.0 && top_p <= 1.0)) throw Error("sampling: top_p must be in (0, 1], got " + std::to_string(top_p));
  if (!(min_p >= 0.0 && min_p <= 1.0)) throw Error("sampling: min_p must be in [0, 1], got " + std::to_string(min_p));
  if (!(repetition_penalty > 0.0) || !std::isfinite(repetition_penalty))
    throw Error("sampling: repetition_penalty must be a finite value > 0 (1 = off), got " +
                std::to_string(repetition_penalty));
}

std::string SamplingParams::describe() const {
  std::ostringstream s;
  if (greedy()) {
    s << "greedy";
  } else {
    s << "temperature=" << temperature;
    if (top_k > 0) s << " top_k=" << top_k;
    if (top_p < 1.0) s << " top_p=" << top_p;
    if (min_p > 0.0) s << " min_p=" << min_p;
    s << " seed=" << seed;
  }
  if (repetition_penalty != 1.0) s << " repetition_penalty=" << repetition_penalty;
  return s.str();
}

at::Tensor apply_repetition_penalty(const at::Tensor& logits, std::span<const int64_t> history, double penalty) {
  if (penalty == 1.0 || history.empty()) return logits;
  const int64_t vocab = logits.size(-1);
  // Ids outside the head's vocabulary cannot be generated, so they carry no penalty (HF drops them too).
  std::vector<int64_t> seen;
  seen.reserve(history.size());
  for (int64_t id : history)
    if (id >= 0 && id < vocab) seen.push_back(id);
  if (seen.empty()) return logits;
  at::Tensor ids = at::tensor(seen, at::TensorOptions().dtype(at::kLong)).to(logits.device());  // [S]
  at::Tensor score = logits.index_select(-1, ids);                                              // [.., S]
  // HF: a positive logit is divided by the penalty, a negative one multiplied, so both move towards less likely.
  score = at::where(score < 0, score * penalty, score / penalty);
  // Duplicate ids write the same value, so the order of the writes does not matter.
  return logits.index_copy(-1, ids, score);
}

at::Tensor apply_top_k(const at::Tensor& logits, int64_t k) {
  const int64_t vocab = logits.size(-1);
  if (k <= 0 || k >= vocab) return logits;
  at::Tensor kth = std::get<0>(at::topk(logits, k, -1)).narrow(-1, k - 1, 1);  // [.., 1]
  // Strictly below the k-th value: ties with it survive, as in HF's TopKLogitsWarper.
  return logits.masked_fill(logits < kth, kMasked);
}

at::Tensor apply_top_p(const at::Tensor& logits, double p) {
  if (p >= 1.0) return logits;
  const int64_t vocab = logits.size(-1);
  auto [sorted, order] = at::sort(logits, -1, /*descending=*/false);  // [.., V] ascending
  at::Tensor cum = at::softmax(sorted, -1).cumsum(-1);                // [.., V]
  // Drop the low tail whose total mass is at most 1 - p; the most likely token always stays.
  at::Tensor remove_sorted = cum <= (1.0 - p);                        // [.., V] bool
  remove_sorted.narrow(-1, vocab - 1, 1).fill_(false);
  at::Tensor remove = remove_sorted.scatter(-1, order, remove_sorted);
  return logits.masked_fill(remove, kMasked);
}

at::Tensor apply_min_p(const at::Tensor& logits, double min_p) {
  if (min_p <= 0.0) return logits;
  at::Tensor probs = at::softmax(logits, -1);                     // [.., V]
  at::Tensor top = std::get<0>(probs.max(-1, /*keepdim=*/true));  // [.., 1]
  at::Tensor remove = probs < top * min_p;                        // [.., V] bool
  remove.scatter_(-1, probs.argmax(-1, /*keepdim=*/true), false);
  return logits.masked_fill(remove, kMasked);
}

at::Tensor process_logits(const at::Tensor& logits, std::span<const int64_t> history, const SamplingParams& params) {
  at::Tensor x = as_float_row(logits);  // [V] fp32
  x = apply_repetition_penalty(x, history, params.repetition_penalty);
  if (params.greedy()) return x;
  if (params.temperature != 1.0) x = x / params.temperature;
  x = apply_top_k(x, params.top_k);
  x = apply_top_p(x, params.top_p);
  x = apply_min_p(x, params.min_p);
  return x;
}

int64_t sample_from_kept(std::span<const int64_t> index, std::span<const float> value, double u) {
  float max = kMasked;
  for (float v : value)
    if (v > max) max = v;
  if (!(max > kMasked)) throw Error("sampler: every logit is masked or NaN; nothing to sample");
  // Unnormalised weights in fp64, summed in index order: the same logits give the same token on any device.
  double total = 0.0;
  for (float v : value)
    if (v > kMasked) total += std::exp(static_cast<double>(v) - max);
  const double target = u * total;
  double cum = 0.0;
  int64_t last = -1;
  for (size_t i = 0; i < value.size(); ++i) {
    if (!(value[i] > kMasked)) continue;
    cum += std::exp(static_cast<double>(value[i]) - max);
    last = index[i];
    if (cum > target) return index[i];
  }
  return last;  // only reached through rounding when u is within an ulp of 1
}

int64_t sample_from_processed(const at::Tensor& processed, double u) {
  at::Tensor host = processed.reshape({-1}).to(at::kCPU, at::kFloat).contiguous();  // [V] fp32
  const float* x = host.data_ptr<float>();
  std::vector<int64_t> index;
  std::vector<float> value;
  for (int64_t i = 0; i < host.numel(); ++i)
    if (x[i] > kMasked) index.push_back(i), value.push_back(x[i]);  // NaN and -inf are never chosen
  return sample_from_kept(index, value, u);
}

std::vector<int64_t> sample_rows_from_processed(const at::Tensor& processed, std::span<const double> u) {
  if (processed.dim() != 2 || processed.size(0) != static_cast<int64_t>(u.size()))
    throw Error("sampler: expected processed logits [N, V] with one uniform per row");
  // Only the kept entries leave the device ([K, 2] (row, column) in row-major order, and their values): after
  // top-p / top-k that is a few hundred per row instead of the whole vocabulary.
  const at::Tensor x = processed.to(at::kFloat);
  const at::Tensor where = (x > kMasked).nonzero();                                        // [K, 2]
  const at::Tensor kept = x.index({where.select(1, 0), where.select(1, 1)}).to(at::kCPU);  // [K]
  const at::Tensor rc = where.to(at::kCPU).contiguous();
  const auto n = static_cast<size_t>(processed.size(0)), k = static_cast<size_t>(rc.size(0));
  const int64_t* row_col = rc.data_ptr<int64_t>();
  const float* val = kept.contiguous().data_ptr<float>();
  // Row r's entries are [begin[r], begin[r + 1]) of the K kept ones (an empty row gets an empty range).
  std::vector<int64_t> col(k);
  std::vector<size_t> begin(n + 1, k);
  for (size_t i = k; i-- > 0;) {
    col[i] = row_col[2 * i + 1];
    begin[static_cast<size_t>(row_col[2 * i])] = i;
  }
  for (size_t r = n; r-- > 0;) begin[r] = std::min(begin[r], begin[r + 1]);
  std::vector<int64_t> token(n);
  at::parallel_for(0, static_cast<int64_t>(n), 1, [&](int64_t lo, int64_t hi) {
    for (auto r = static_cast<size_t>(lo); r < static_cast<size_t>(hi); ++r) {
      const size_t b = begin[r], len = begin[r + 1] - b;
      token[r] = sample_from_kept(std::span(col).subspan(b, len), std::span(val + b, len), u[r]);
    }
  });
  return token;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), engine_(params.seed) { params_.validate(); }

int64_t Sampler::next(const at::Tensor& logits, std::span<const int64_t> history) {
  at::Tensor processed = process_logits(logits, history, params_);  // [V] fp32
  if (params_.greedy()) return processed.argmax().item<int64_t>();
  return sample_from_processed(processed, draw_uniform());
}

double Sampler::draw_uniform() {
  // 53 random bits -> a double in [0, 1), defined bit for bit (std::uniform_real_distribution is not).
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

}  // namespace hylo
