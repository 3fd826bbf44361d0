// The hand-written chunked backward (gdn_chunk_backward_ref.h, the decomposition the CUDA backward implements)
// equals autograd through ops::gated_delta_chunk in fp64, for every input: lengths shorter than, equal to and
// longer than a chunk, odd lengths, with and without an initial state and an upstream final-state gradient.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "gdn_chunk_backward_ref.h"
#include "gdn_test_util.h"
#include "hylo/ops/gated_delta.h"

namespace hylo {
namespace {

struct Shape {
  int64_t B, T, H, Dk, Dv, C;
  bool state, d_final;
};

void check(const Shape& s, uint64_t seed) {
  const gdn_test::DeltaInputs in = gdn_test::random_inputs(s.B, s.T, s.H, s.Dk, s.Dv, s.state, seed);
  const double scale = 1.0 / std::sqrt(double(s.Dk));
  at::manual_seed(seed + 1000);
  const at::Tensor d_o = at::randn(in.v.sizes(), at::kDouble);
  const at::Tensor d_final = s.d_final ? at::randn({s.B, s.H, s.Dv, s.Dk}, at::kDouble) : at::Tensor();

  std::vector<at::Tensor> leaves = {in.q, in.k, in.v, in.g, in.beta};
  if (s.state) leaves.push_back(in.state);
  for (auto& l : leaves) l = l.detach().clone().requires_grad_();
  const GatedDeltaOutput r = gated_delta_chunk(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], scale,
                                               s.state ? leaves[5] : at::Tensor(), s.C);
  at::Tensor loss = (r.o * d_o).sum();
  if (d_final.defined()) loss = loss + (r.final_state * d_final).sum();
  loss.backward();

  const gdn_test::DeltaGrads got = gdn_test::chunk_backward_reference(in.q, in.k, in.v, in.g, in.beta, scale,
                                                                       in.state, d_o, d_final, s.C);
  const std::vector<at::Tensor> mine = {got.dq, got.dk, got.dv, got.dg, got.dbeta, got.dstate};
  const char* names[] = {"dq", "dk", "dv", "dg", "dbeta", "dstate"};
  const std::string tag = "T=" + std::to_string(s.T) + " C=" + std::to_string(s.C) + " state=" +
                          std::to_string(s.state) + " d_final=" + std::to_string(s.d_final);
  for (size_t i = 0; i < leaves.size(); ++i) {
    const at::Tensor ref = leaves[i].grad();
    ASSERT_TRUE(mine[i].defined()) << names[i] << " " << tag;
    ASSERT_EQ(mine[i].sizes(), ref.sizes()) << names[i] << " " << tag;
    const double err = gdn_test::max_abs_diff(mine[i], ref) / std::max(gdn_test::max_abs(ref), 1e-300);
    EXPECT_LT(err, 1e-10) << names[i] << " " << tag;
  }
  if (!s.state) EXPECT_FALSE(got.dstate.defined()) << tag;
}

TEST(GatedDeltaChunkBackward, HandWrittenEqualsAutogradFp64) {
  uint64_t seed = 500;
  for (int64_t T : {1, 7, 8, 9, 23})
    for (bool st : {false, true}) check({1, T, 2, 4, 6, 8, st, st}, seed++);
  check({2, 37, 3, 5, 3, 16, true, false}, seed++);
  check({1, 65, 2, 16, 8, 64, false, true}, seed++);
  check({1, 130, 1, 8, 8, 64, true, true}, seed++);
}

}  // namespace
}  // namespace hylo
