// Next-token selection for generation: greedy (argmax) or sampling with the logits processors Hugging Face
// `generate` applies, in HF's order -- repetition penalty, temperature, top-k, top-p, min-p -- with HF's
// semantics for each (ties at the k-th value are kept, top-p keeps the smallest set whose mass exceeds p,
// at least one token always survives). The filtering runs with ATen on the logits' device; the random draw
// is an inverse-CDF lookup on the host with a uniform from a seeded std::mt19937_64, so a seed gives the same
// stream of uniforms on CPU and CUDA (the tokens then agree wherever the two devices' logits do).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace hylo {

struct SamplingParams {
  double temperature = 1.0;         // 0 (or less): greedy
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // 1: off
  double min_p = 0.0;               // 0: off
  double repetition_penalty = 1.0;  // 1: off; applied in greedy mode too, as HF does
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0; }
  // Throws hylo::Error naming the field when a value is outside its domain (top_p in (0,1], ...).
  void validate() const;
  std::string describe() const;  // "greedy" or "temperature=0.7 top_k=40 ..." for logs
};

// Applies the processors to one row of logits. logits: [V] any float dtype, any device; history: every id
// seen so far (prompt and generated) for the repetition penalty. Returns [V] fp32 on the logits' device,
// masked entries set to -inf. In greedy mode only the repetition penalty applies.
at::Tensor process_logits(const at::Tensor& logits, std::span<const int64_t> history, const SamplingParams& params);

// The single processors, exposed for tests. All take and return [V] fp32 (or [N, V]: rows are independent).
at::Tensor apply_repetition_penalty(const at::Tensor& logits, std::span<const int64_t> history, double penalty);
at::Tensor apply_top_k(const at::Tensor& logits, int64_t k);
at::Tensor apply_top_p(const at::Tensor& logits, double p);
at::Tensor apply_min_p(const at::Tensor& logits, double min_p);

// Index drawn from the categorical distribution softmax(processed) with uniform u in [0, 1): the first index
// whose cumulative probability (summed in fp64 on the host, in index order) exceeds u. Masked (-inf) entries
// are never chosen.
int64_t sample_from_processed(const at::Tensor& processed, double u);
// The same choice from only the kept (not masked, not NaN) entries of a row: their indices in increasing order and
// their values.
int64_t sample_from_kept(std::span<const int64_t> index, std::span<const float> value, double u);
// sample_from_processed for every row of processed [N, V] (on any device) with u[r] for row r; only the kept entries
// are copied to the host.
std::vector<int64_t> sample_rows_from_processed(const at::Tensor& processed, std::span<const double> u);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  const SamplingParams& params() const { return params_; }

  // logits: [V] (or [1, V]). Greedy: the argmax of the processed logits (first index on ties). Sampling:
  // one uniform drawn from the seeded engine per call.
  int64_t next(const at::Tensor& logits, std::span<const int64_t> history);

  // The uniform in [0, 1) that next() draws when sampling, advancing the same stream: a caller that runs the
  // processors on many rows at once (the engine, without a repetition penalty) draws each row with
  // sample_from_processed(row, draw_uniform()) and chooses the token next() would.
  double draw_uniform();

 private:
  SamplingParams params_;
  std::mt19937_64 engine_;
};

}  // namespace hylo
