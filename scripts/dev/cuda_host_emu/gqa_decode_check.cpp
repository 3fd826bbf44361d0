// Host-emulated run of the paged GQA decode kernel (run_gqa.sh) against the fp64 ATen form on small cases: ragged
// lengths around a page, length 0, forced and automatic splits, windows, rep 12 (two head blocks), page sizes 1, 8,
// 12 (not a power of two), 16 and 64, bf16/fp16/fp32 pages. NaN fills every page row outside a sequence's attended
// range and the outputs and partials (set_poison_outputs), so reads outside a range and unwritten results show. Prints one line per case; exits 1 on
// a failure. A development aid for the indexing and the merges; tests/cpp/kernels_gqa on a GPU is the acceptance.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "hylo/kernels/common/cuda_check.h"
#include "hylo/kernels/gqa_decode/gqa_decode.h"
#include "hylo/ops/paged_decode.h"
#include "hylo/ops/tensor_util.h"

namespace {

struct Case {
  int64_t hq, hkv, d, page_size;
  std::vector<int64_t> lens;
  at::ScalarType type;
  int64_t window, splits;
};

bool run(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> need;
  int64_t total = 0, most = 0;
  for (int64_t l : c.lens) {
    need.push_back((l + c.page_size - 1) / c.page_size);
    total += need.back(), most = std::max(most, need.back());
  }
  const int64_t num_pages = total + 2, s = int64_t(c.lens.size()), max_pages = most + 1;
  std::vector<int32_t> ids(size_t(num_pages - 1));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  at::Tensor table = at::full({s, max_pages}, int32_t(num_pages - 1), at::kInt);  // the last page: all NaN
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(s), std::vector<int32_t>{});
  size_t next = 0;
  for (int64_t r = 0; r < most; ++r)
    for (int64_t i = 0; i < s; ++i)
      if (r < need[i]) rows[i].push_back(ids[next++]), table[i][r] = rows[i].back();
  at::Tensor k = at::randn({num_pages, c.page_size, c.hkv, c.d}, at::kDouble), v = at::randn_like(k);
  k[num_pages - 1].fill_(NAN), v[num_pages - 1].fill_(NAN);
  for (int64_t i = 0; i < s; ++i) {
    const int64_t len = c.lens[i], lo = c.window > 0 ? std::max<int64_t>(0, len - c.window) : 0;
    for (int64_t t = 0; t < need[i] * c.page_size; ++t)
      if (t < lo || t >= len) {
        const int64_t pg = rows[i][size_t(t / c.page_size)];
        k[pg][t % c.page_size].fill_(NAN), v[pg][t % c.page_size].fill_(NAN);
      }
  }
  k = k.to(c.type), v = v.to(c.type);
  const at::Tensor q = at::randn({s, c.hq, c.d}, at::kDouble).to(c.type);
  const at::Tensor lengths = at::tensor(std::vector<int>(c.lens.begin(), c.lens.end()), at::kInt);
  const double scale = 1.0 / std::sqrt(double(c.d));
  const std::optional<int64_t> w = c.window > 0 ? std::optional<int64_t>(c.window) : std::nullopt;
  const at::Tensor truth = hylo::ops::gqa_decode_paged_reference(q.to(at::kDouble), k.to(at::kDouble),
                                                                 v.to(at::kDouble), table, lengths, scale, w);
  const at::Tensor aten = hylo::ops::gqa_decode_paged_reference(q, k, v, table, lengths, scale, w);
  hylo::kernels::set_poison_outputs(true);
  const at::Tensor got = hylo::kernels::gqa_decode_paged_cuda(q, k, v, table, lengths, scale, c.window, c.splits);
  const bool nan = at::isnan(got).any().item<bool>();
  const double rel = hylo::relative_rms_error(got, truth), ref = hylo::relative_rms_error(aten, truth);
  const bool ok = !nan && got.scalar_type() == q.scalar_type() && rel <= 2.0 * ref + 1e-5;
  std::printf("%s Hq/Hkv/D %ld/%ld/%ld page %ld window %ld splits %ld %s: rel rms %.3g (ATen %.3g)%s\n",
              ok ? "ok  " : "FAIL", long(c.hq), long(c.hkv), long(c.d), long(c.page_size), long(c.window),
              long(c.splits), c10::toString(c.type), rel, ref, nan ? " NaN in output" : "");
  return ok;
}

}  // namespace

int main() {
  at::manual_seed(1);
  const std::vector<Case> cases = {
      {9, 3, 64, 16, {1, 15, 16, 17, 70}, at::kBFloat16, 0, 0},
      {9, 3, 64, 16, {1, 15, 16, 17, 70}, at::kBFloat16, 0, 3},
      {8, 2, 128, 8, {0, 33, 200}, at::kFloat, 50, 5},
      {8, 2, 128, 8, {0, 33, 200}, at::kHalf, 0, 7},
      {8, 2, 128, 12, {1, 11, 12, 13, 150}, at::kBFloat16, 40, 0},
      {24, 2, 64, 1, {100, 3}, at::kBFloat16, 0, 2},
      {4, 4, 64, 64, {300}, at::kFloat, 0, 64},
  };
  bool all = true;
  uint64_t seed = 10;
  for (const Case& c : cases) all = run(c, seed++) && all;
  return all ? 0 : 1;
}
