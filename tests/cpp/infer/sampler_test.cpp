// Sampler tests on synthetic logits: greedy is the argmax, each processor's mask equals a plain fp64
// reference written here (with HF's semantics), empirical sampling frequencies match the filtered softmax under
// a chi-square bound, and a seed fixes the token stream (on CPU and, where present, CUDA).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "hylo/infer/sampler.h"

namespace hylo {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps32 = 0x1.0p-24;  // unit roundoff of fp32

std::vector<double> random_logits(int64_t vocab, uint64_t seed, double scale = 3.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(vocab);
  for (auto& x : v) x = static_cast<float>(normal(rng));  // representable in fp32, so both sides see the same values
  return v;
}

at::Tensor to_tensor(const std::vector<double>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);  // [V] fp32
}

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor c = t.reshape({-1}).to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<bool> kept(const std::vector<double>& v) {
  std::vector<bool> k(v.size());
  for (size_t i = 0; i < v.size(); ++i) k[i] = v[i] > -kInf;
  return k;
}

// ---- fp64 references, written from HF's definitions. Each returns the kept mask and the smallest distance of
// ---- a compared quantity from its threshold (the margin), so a test can require the margin to exceed fp32 error.
struct RefMask {
  std::vector<bool> keep;
  double margin = kInf;
};

std::vector<double> softmax(const std::vector<double>& x) {
  double m = -kInf;
  for (double v : x) m = std::max(m, v);
  std::vector<double> p(x.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (p[i] = x[i] > -kInf ? std::exp(x[i] - m) : 0.0);
  for (auto& v : p) v /= s;
  return p;
}

RefMask ref_top_k(const std::vector<double>& x, int64_t k) {
  std::vector<double> sorted = x;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const double kth = sorted[std::min<size_t>(k, x.size()) - 1];
  RefMask r;
  for (double v : x) r.keep.push_back(v >= kth);
  return r;
}

RefMask ref_top_p(const std::vector<double>& x, double p) {
  const auto probs = softmax(x);
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  RefMask r;
  r.keep.assign(x.size(), true);
  double cum = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    cum += probs[order[j]];
    if (j + 1 < order.size()) {
      if (cum <= 1.0 - p) r.keep[order[j]] = false;
      r.margin = std::min(r.margin, std::abs(cum - (1.0 - p)));
    }
  }
  return r;
}

RefMask ref_min_p(const std::vector<double>& x, double min_p) {
  const auto probs = softmax(x);
  const double top = *std::max_element(probs.begin(), probs.end());
  RefMask r;
  for (double q : probs) {
    r.keep.push_back(!(q < min_p * top));
    // Measured relative to the top probability: fp32 softmax errors scale with it.
    r.margin = std::min(r.margin, std::abs(q - min_p * top) / top);
  }
  return r;
}

std::vector<double> apply_mask(std::vector<double> x, const std::vector<bool>& keep) {
  for (size_t i = 0; i < x.size(); ++i)
    if (!keep[i]) x[i] = -kInf;
  return x;
}

// fp32 error of the implementation's softmax + cumsum over V terms: each probability carries a few roundings
// and a sequential sum of V terms at most V more; twice that, with a small constant floor, is the margin a
// reference decision needs for the fp32 decision to be certain.
double fp32_cum_error(int64_t vocab) { return 2.0 * (static_cast<double>(vocab) + 8.0) * kEps32; }

TEST(Sampler, GreedyIsArgmax) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto x = random_logits(1000, seed);
    const auto best = std::max_element(x.begin(), x.end()) - x.begin();
    SamplingParams params;
    params.temperature = 0.0;
    Sampler sampler(params);
    EXPECT_EQ(sampler.next(to_tensor(x), {}), best) << "seed " << seed;
  }
  // Ties go to the first index, as torch.argmax does.
  std::vector<double> tie(50, 0.0);
  tie[7] = tie[31] = 2.5;
  EXPECT_EQ(Sampler(SamplingParams{.temperature = 0.0}).next(to_tensor(tie), {}), 7);
}

TEST(Sampler, RepetitionPenaltyMatchesHfDefinition) {
  auto x = random_logits(300, 11);
  x[5] = 0.0;  // zero stays zero (divided)
  const std::vector<int64_t> history = {5, 17, 17, 250, 3, 299, 1000, -1};  // duplicates and out-of-range ids
  const double penalty = 1.3;
  const auto out = to_vector(apply_repetition_penalty(to_tensor(x), history, penalty));
  std::vector<bool> seen(x.size(), false);
  for (int64_t id : history)
    if (id >= 0 && id < 300) seen[id] = true;
  for (size_t i = 0; i < x.size(); ++i) {
    // One fp32 rounding of the product or quotient.
    const double want = seen[i] ? (x[i] < 0 ? x[i] * penalty : x[i] / penalty) : x[i];
    EXPECT_NEAR(out[i], want, std::abs(want) * 2 * kEps32) << "token " << i;
  }
  // Greedy applies the penalty too (HF does): the best token, already seen, loses to the runner-up.
  std::vector<double> y(10, -1.0);
  y[2] = 3.0;
  y[4] = 2.5;
  const std::vector<int64_t> hist = {2};
  EXPECT_EQ(Sampler(SamplingParams{.temperature = 0.0, .repetition_penalty = 1.5}).next(to_tensor(y), hist), 4);
  EXPECT_EQ(Sampler(SamplingParams{.temperature = 0.0}).next(to_tensor(y), hist), 2);
}

TEST(Sampler, TopKMaskMatchesReference) {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto x = random_logits(257, 100 + seed);
    // Put a tie exactly at the k-th value: HF keeps every token equal to it.
    std::vector<double> sorted = x;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const int64_t k = 5 + static_cast<int64_t>(seed) * 7;
    x[(seed * 31) % x.size()] = sorted[k - 1];
    const auto ref = ref_top_k(x, k);
    const auto got = to_vector(apply_top_k(to_tensor(x), k));
    EXPECT_EQ(kept(got), ref.keep) << "seed " << seed << " k " << k;
    for (size_t i = 0; i < x.size(); ++i)
      if (ref.keep[i]) EXPECT_EQ(got[i], x[i]);
  }
  const auto x = random_logits(40, 1);
  EXPECT_EQ(kept(to_vector(apply_top_k(to_tensor(x), 0))), std::vector<bool>(40, true));
  EXPECT_EQ(kept(to_vector(apply_top_k(to_tensor(x), 100))), std::vector<bool>(40, true));
}

TEST(Sampler, TopPMaskMatchesReference) {
  int checked = 0;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const int64_t vocab = 200 + static_cast<int64_t>(seed) * 13;
    const auto x = random_logits(vocab, 200 + seed, 1.0 + 0.3 * seed);
    for (double p : {0.05, 0.3, 0.5, 0.8, 0.9, 0.95, 0.999}) {
      const auto ref = ref_top_p(x, p);
      if (ref.margin <= fp32_cum_error(vocab)) continue;  // a decision fp32 cannot make with certainty
      ++checked;
      EXPECT_EQ(kept(to_vector(apply_top_p(to_tensor(x), p))), ref.keep) << "seed " << seed << " p " << p;
    }
  }
  EXPECT_GE(checked, 70);  // nearly all cases are far from the threshold
  // A dominant token: top-p keeps at least it, even when its own mass exceeds p.
  std::vector<double> y(30, 0.0);
  y[9] = 30.0;
  const auto dominant = kept(to_vector(apply_top_p(to_tensor(y), 0.01)));
  EXPECT_EQ(std::count(dominant.begin(), dominant.end(), true), 1);
  EXPECT_TRUE(dominant[9]);
}

TEST(Sampler, MinPMaskMatchesReference) {
  int checked = 0;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const auto x = random_logits(300, 300 + seed, 0.5 + 0.4 * seed);
    for (double m : {0.001, 0.01, 0.05, 0.1, 0.3, 0.7, 1.0}) {
      const auto ref = ref_min_p(x, m);
      if (ref.margin <= 16 * kEps32) continue;  // softmax in fp32: a few roundings, relative to the top prob
      ++checked;
      EXPECT_EQ(kept(to_vector(apply_min_p(to_tensor(x), m))), ref.keep) << "seed " << seed << " min_p " << m;
    }
  }
  EXPECT_GE(checked, 70);
}

// The whole pipeline in HF's order (penalty, temperature, top-k, top-p, min-p) equals the reference chain.
struct RefChain {
  std::vector<double> logits;  // masked with -inf
  bool certain = true;         // every threshold decision had a margin beyond fp32 error
};

RefChain ref_chain(const std::vector<double>& x0, std::span<const int64_t> history, const SamplingParams& p) {
  std::vector<double> x = x0;
  std::vector<bool> seen(x.size(), false);
  for (int64_t id : history) seen[id] = true;
  for (size_t i = 0; i < x.size(); ++i)
    if (seen[i] && p.repetition_penalty != 1.0)
      x[i] = static_cast<float>(x[i] < 0 ? x[i] * p.repetition_penalty : x[i] / p.repetition_penalty);
  for (auto& v : x) v = static_cast<float>(v / p.temperature);
  RefChain r;
  if (p.top_k > 0) x = apply_mask(x, ref_top_k(x, p.top_k).keep);
  if (p.top_p < 1.0) {
    auto m = ref_top_p(x, p.top_p);
    r.certain &= m.margin > fp32_cum_error(static_cast<int64_t>(x.size()));
    x = apply_mask(x, m.keep);
  }
  if (p.min_p > 0.0) {
    auto m = ref_min_p(x, p.min_p);
    r.certain &= m.margin > 16 * kEps32;
    x = apply_mask(x, m.keep);
  }
  r.logits = x;
  return r;
}

TEST(Sampler, ProcessorChainMatchesReferenceInHfOrder) {
  int checked = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const auto x = random_logits(128, 400 + seed, 2.0);
    const std::vector<int64_t> history = {1, 2, 3, static_cast<int64_t>(seed % 128), 77};
    SamplingParams p{.temperature = 0.6 + 0.05 * static_cast<double>(seed), .top_k = 10 + static_cast<int64_t>(seed),
                     .top_p = 0.85, .min_p = 0.02, .repetition_penalty = 1.2, .seed = seed};
    const auto ref = ref_chain(x, history, p);
    if (!ref.certain) continue;
    ++checked;
    const auto got = to_vector(process_logits(to_tensor(x), history, p));
    ASSERT_EQ(kept(got), kept(ref.logits)) << "seed " << seed;
    for (size_t i = 0; i < got.size(); ++i)
      if (got[i] > -kInf) EXPECT_NEAR(got[i], ref.logits[i], std::abs(ref.logits[i]) * 4 * kEps32);
  }
  EXPECT_GE(checked, 25);
}

// Upper (1 - alpha) quantile of chi-square with `df` degrees of freedom, Wilson-Hilferty approximation (accurate
// to a few percent for df >= 3, far inside the slack between a correct sampler and a wrong one).
double chi2_quantile(int64_t df, double z) {
  const double k = static_cast<double>(df);
  const double a = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}
constexpr double kZ1e6 = 4.7534;  // standard normal quantile at 1 - 1e-6: a correct sampler fails once in a million

TEST(Sampler, EmpiricalFrequenciesMatchFilteredSoftmax) {
  const auto x = random_logits(24, 7, 1.5);
  const SamplingParams p{.temperature = 0.8, .top_k = 14, .top_p = 0.9, .min_p = 0.03, .seed = 1234};
  const auto ref = ref_chain(x, {}, p);
  ASSERT_TRUE(ref.certain);
  const auto probs = softmax(ref.logits);
  const int64_t n = 20000;
  std::vector<int64_t> counts(x.size(), 0);
  Sampler sampler(p);
  const at::Tensor logits = to_tensor(x);
  for (int64_t i = 0; i < n; ++i) ++counts.at(sampler.next(logits, {}));

  double chi2 = 0;
  int64_t support = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (probs[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "masked token " << i << " was sampled";
      continue;
    }
    ++support;
    const double e = static_cast<double>(n) * probs[i];
    ASSERT_GE(e, 5.0) << "chi-square needs expected counts >= 5";
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  ASSERT_GE(support, 4);
  const double bound = chi2_quantile(support - 1, kZ1e6);
  EXPECT_LT(chi2, bound) << "support " << support;

  // The same counts tested against the unfiltered softmax must be rejected: the test can tell the two apart.
  std::vector<double> scaled = x;
  for (auto& v : scaled) v /= p.temperature;
  const auto wide = softmax(scaled);
  double chi2_wide = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = static_cast<double>(n) * wide[i];
    chi2_wide += (counts[i] - e) * (counts[i] - e) / e;
  }
  EXPECT_GT(chi2_wide, chi2_quantile(static_cast<int64_t>(x.size()) - 1, kZ1e6));
}

TEST(Sampler, InverseCdfSkipsMaskedTokens) {
  std::vector<double> x = {-kInf, 0.0, -kInf, 0.0, -kInf};
  const at::Tensor t = to_tensor(x);
  EXPECT_EQ(sample_from_processed(t, 0.0), 1);
  EXPECT_EQ(sample_from_processed(t, 0.49), 1);
  EXPECT_EQ(sample_from_processed(t, 0.51), 3);
  EXPECT_EQ(sample_from_processed(t, std::nextafter(1.0, 0.0)), 3);
  EXPECT_THROW(sample_from_processed(to_tensor(std::vector<double>(4, -kInf)), 0.5), std::exception);
}

// The batched draw (only kept entries leave the device) chooses what the row-by-row draw chooses: rows with top-k
// and top-p masks, a row with NaN entries, a row with one kept token, and a row with everything kept.
void expect_rows_match_one_by_one(at::Device device) {
  const int64_t n = 7, vocab = 300;
  at::Tensor x = at::randn({n, vocab}, at::detail::createCPUGenerator(5), at::kFloat);
  x.slice(0, 0, 3) = apply_top_p(apply_top_k(x.slice(0, 0, 3), 40), 0.9);
  x[3].index_put_({at::arange(0, vocab, 3)}, std::numeric_limits<float>::quiet_NaN());
  x[4].fill_(-kInf);
  x[4][123] = 2.0f;
  x.slice(0, 5, 6) = apply_top_p(x.slice(0, 5, 6), 0.5);
  std::vector<double> u = {0.0, 0.3, 0.999, 0.5, 0.7, std::nextafter(1.0, 0.0), 0.25};
  const std::vector<int64_t> rows = sample_rows_from_processed(x.to(device), u);
  ASSERT_EQ(rows.size(), static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const auto i = static_cast<size_t>(r);
    EXPECT_EQ(rows[i], sample_from_processed(x[r], u[i])) << "row " << r;
  }
  EXPECT_EQ(rows[4], 123);
  at::Tensor empty = x.clone();
  empty[2].fill_(-kInf);
  EXPECT_THROW(sample_rows_from_processed(empty.to(device), u), std::exception);
  EXPECT_THROW(sample_rows_from_processed(x.to(device), std::vector<double>(3, 0.5)), std::exception);
}

TEST(Sampler, RowsFromProcessedEqualOneByOne) { expect_rows_match_one_by_one(at::kCPU); }

TEST(Sampler, RowsFromProcessedOnCudaEqualOneByOne) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_rows_match_one_by_one(at::Device(at::kCUDA));
}

std::vector<int64_t> draw(const SamplingParams& p, int n, at::Device device) {
  Sampler sampler(p);
  std::vector<int64_t> ids;
  for (int i = 0; i < n; ++i) {
    const auto x = random_logits(500, 9000 + i, 1.0);  // the logits change every step, like a real decode
    ids.push_back(sampler.next(to_tensor(x).to(device), ids));
  }
  return ids;
}

TEST(Sampler, SameSeedSameTokens) {
  const SamplingParams p{.temperature = 1.1, .top_k = 50, .top_p = 0.95, .repetition_penalty = 1.1, .seed = 42};
  const auto a = draw(p, 200, at::kCPU);
  EXPECT_EQ(a, draw(p, 200, at::kCPU));
  SamplingParams q = p;
  q.seed = 43;
  EXPECT_NE(a, draw(q, 200, at::kCPU));
}

TEST(Sampler, CudaDrawsTheSameTokensAsCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  // Temperature and top-k only: both are exact up to one rounding of the division, so processed logits agree
  // to an ulp and the host-side draw lands on the same token unless a uniform falls within an ulp of a boundary.
  const SamplingParams p{.temperature = 0.9, .top_k = 40, .seed = 7};
  EXPECT_EQ(draw(p, 200, at::kCPU), draw(p, 200, at::Device(at::kCUDA)));
  const SamplingParams g{.temperature = 0.0};
  EXPECT_EQ(draw(g, 50, at::kCPU), draw(g, 50, at::Device(at::kCUDA)));
}

TEST(Sampler, RejectsInvalidParameters) {
  EXPECT_THROW(Sampler(SamplingParams{.temperature = -1.0}), std::exception);
  EXPECT_THROW(Sampler(SamplingParams{.top_k = -2}), std::exception);
  EXPECT_THROW(Sampler(SamplingParams{.top_p = 0.0}), std::exception);
  EXPECT_THROW(Sampler(SamplingParams{.min_p = 1.5}), std::exception);
  EXPECT_THROW(Sampler(SamplingParams{.repetition_penalty = 0.0}), std::exception);
}

}  // namespace
}  // namespace hylo
