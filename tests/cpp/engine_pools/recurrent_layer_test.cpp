// The GDN and Mamba2 engine layers over the pools' state slots: several sequences of different lengths, prompts
// fed as prefill chunks of random lengths beside batched decode steps of the others, in non-contiguous slots,
// give each sequence the output of the mixer's stateless forward over the whole sequence -- fp64 to rounding,
// fp32 and a bf16 state pool within bounds derived from the dtypes. A snapshot copied at a chunk boundary
// continues into two branches that each equal their own whole-sequence forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include <ATen/core/grad_mode.h>

#include "hylo/core/result.h"
#include "pools_test_util.h"

namespace hylo::engine {
namespace {

using test::max_rel_error;
using test::SimSequence;

struct Rig {
  std::unique_ptr<CausalLM> model;
  std::unique_ptr<CachePools> pools;
  std::vector<std::unique_ptr<EngineLayer>> layers;  // [gdn, mamba2]

  Rig(at::ScalarType model_dtype, at::ScalarType state_dtype, int64_t max_sequences, int64_t snapshots = 0) {
    LoadOptions lo;
    lo.dtype = model_dtype;
    model = CausalLM::random(test::recurrent_config(), 7, lo);
    test::randomize_recurrent_mixers(*model, 8);
    EngineOptions o;
    o.memory_bytes = 1 << 20;
    o.max_sequences = max_sequences;
    o.prefix_snapshots = snapshots;
    o.state_dtype = state_dtype;
    pools = std::make_unique<CachePools>(*model, o);
    layers.push_back(make_gdn_layer(model->mixer(0), pools->layer(0)));
    layers.push_back(make_mamba2_layer(model->mixer(1), pools->layer(1)));
  }
  std::vector<EngineLayer*> layer_ptrs() { return {layers[0].get(), layers[1].get()}; }
  // The mixer's stateless forward over a whole sequence: the reference. x [1, L, D].
  at::Tensor reference(size_t layer, const at::Tensor& x) {
    return model->mixer(static_cast<int64_t>(layer)).forward(x, at::arange(x.size(1), at::kLong), nullptr);
  }
};

// Sequences with the given (length, prompt) in slots handed out in a scrambled order (not 0, 1, 2, ...).
std::vector<SimSequence> make_sequences(CachePools& pools, const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                        at::ScalarType dtype, uint64_t seed) {
  std::vector<int64_t> all;
  while (auto s = pools.alloc_slot()) all.push_back(*s);
  std::mt19937_64 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  for (int64_t s : all) pools.free_slot(s);  // LIFO: handed out again in reverse shuffled order
  at::manual_seed(seed);
  std::vector<SimSequence> seqs;
  for (const auto& [length, prompt] : shapes) {
    SimSequence s;
    s.x = at::randn({1, length, 16}, at::kDouble).to(dtype);
    s.prompt = prompt;
    s.slot = *pools.alloc_slot();
    seqs.push_back(std::move(s));
  }
  return seqs;
}

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{23, 17}, {7, 1}, {31, 9}, {12, 12}, {19, 4}, {5, 3}};

bool slots_are_scrambled(const std::vector<SimSequence>& seqs) {
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seqs[i].slot != static_cast<int64_t>(i)) return true;
  return false;
}

// fp64: the packed, chunked, batched path reassociates the same sums as the whole-sequence forward, so the
// difference is rounding: bounded by c * (L + D) * u64 of the output scale with a generous c = 16 (a wrong state,
// slot or row order gives O(1)).
TEST(RecurrentEngineLayers, Fp64PackedStepsEqualWholeSequenceForward) {
  at::NoGradGuard no_grad;
  for (bool decode_rows_last : {false, true}) {
    Rig s(at::kDouble, at::kDouble, 8);
    std::vector<SimSequence> seqs = make_sequences(*s.pools, kShapes, at::kDouble, 21);
    ASSERT_TRUE(slots_are_scrambled(seqs));
    test::SimOptions o;
    o.seed = 5;
    o.decode_rows_last = decode_rows_last;
    const int64_t steps = test::simulate(s.layer_ptrs(), seqs, o);
    EXPECT_GT(steps, 12);
    double largest = 0.0;
    for (size_t l = 0; l < 2; ++l)
      for (size_t i = 0; i < seqs.size(); ++i) {
        const int64_t L = seqs[i].x.size(1);
        const double err = max_rel_error(test::output_of(seqs[i], l), s.reference(l, seqs[i].x));
        largest = std::max(largest, err);
        EXPECT_LE(err, 16.0 * static_cast<double>(L + 16) * test::unit_roundoff(at::kDouble))
            << (l == 0 ? "gdn" : "mamba2") << " sequence " << i << " (length " << L << "), decode_rows_last "
            << decode_rows_last;
      }
    std::printf("[fp64, %d steps, decode rows %s] largest relative error %.3g\n", static_cast<int>(steps),
                decode_rows_last ? "last" : "first", largest);
  }
}

// fp32 model and state: the engine's error against the fp64 model (same weights) is within 4x the error of the
// fp32 stateless forward plus one fp32 rounding -- the chunking adds no error of its own beyond rounding.
TEST(RecurrentEngineLayers, Fp32WithinTheStatelessForwardsError) {
  at::NoGradGuard no_grad;
  Rig s(at::kFloat, at::kFloat, 8);
  Rig ref(at::kDouble, at::kDouble, 1);
  for (int64_t l = 0; l < 2; ++l) {  // the fp64 mixers get the fp32 weights exactly
    std::map<std::string, at::Tensor> w;
    s.model->mixer(l).visit_parameters("", [&](const std::string& n, at::Tensor& t) { w[n] = t; });
    ref.model->mixer(l).visit_parameters("", [&](const std::string& n, at::Tensor& t) { t.copy_(w.at(n)); });
  }
  std::vector<SimSequence> seqs = make_sequences(*s.pools, kShapes, at::kFloat, 22);
  test::SimOptions o;
  o.seed = 6;
  test::simulate(s.layer_ptrs(), seqs, o);
  for (size_t l = 0; l < 2; ++l)
    for (size_t i = 0; i < seqs.size(); ++i) {
      const at::Tensor x64 = seqs[i].x.to(at::kDouble);
      const at::Tensor r64 = ref.reference(l, x64);
      const double whole = max_rel_error(s.reference(l, seqs[i].x), r64);
      const double err = max_rel_error(test::output_of(seqs[i], l), r64);
      EXPECT_LE(err, 4 * whole + test::unit_roundoff(at::kFloat))
          << (l == 0 ? "gdn" : "mamba2") << " sequence " << i << ": engine " << err << ", stateless fp32 " << whole;
    }
}

// A bf16 state pool on an fp64 model: every step that writes a slot rounds its recurrent state to bf16 (relative
// error <= u_bf16 = 2^-8 per write; conv state stays fp64). The outputs depend linearly on the state through one
// normalisation, so the error after w writes is bounded by 4 * w * u_bf16 of the output scale; it must also be
// visibly above fp64 rounding (the bf16 path is really taken).
TEST(RecurrentEngineLayers, Bf16StatePoolWithinDerivedBound) {
  at::NoGradGuard no_grad;
  Rig s(at::kDouble, at::kBFloat16, 8);
  EXPECT_EQ(dynamic_cast<GatedDeltaNetState&>(*s.pools->layer(0).slots).recurrent.scalar_type(), at::kBFloat16);
  EXPECT_EQ(dynamic_cast<Mamba2State&>(*s.pools->layer(1).slots).ssm.scalar_type(), at::kBFloat16);
  std::vector<SimSequence> seqs = make_sequences(*s.pools, kShapes, at::kDouble, 23);
  test::SimOptions o;
  o.seed = 7;
  test::simulate(s.layer_ptrs(), seqs, o);
  double largest = 0.0;
  for (size_t l = 0; l < 2; ++l)
    for (size_t i = 0; i < seqs.size(); ++i) {
      const double err = max_rel_error(test::output_of(seqs[i], l), s.reference(l, seqs[i].x));
      const double bound = 4.0 * static_cast<double>(seqs[i].state_writes) * test::unit_roundoff(at::kBFloat16);
      largest = std::max(largest, err);
      EXPECT_LE(err, bound) << (l == 0 ? "gdn" : "mamba2") << " sequence " << i << ", " << seqs[i].state_writes
                            << " state writes";
    }
  std::printf("[bf16 state pool] largest relative error %.3g\n", largest);
  EXPECT_GT(largest, 1e3 * test::unit_roundoff(at::kDouble));
}

// Prefix snapshot: run a prompt prefix to a chunk boundary, copy its slot into a snapshot slot, continue the
// original sequence with one continuation, then restore the snapshot into a fresh live slot and continue with a
// different continuation. Both equal their whole-sequence forwards, and the snapshot is untouched by either.
TEST(RecurrentEngineLayers, SnapshotAtChunkBoundaryContinuesTwoBranches) {
  at::NoGradGuard no_grad;
  Rig s(at::kDouble, at::kDouble, 3, /*snapshots=*/2);
  CachePools& pools = *s.pools;
  at::manual_seed(31);
  const int64_t P = 16;
  at::Tensor prefix = at::randn({1, P, 16}, at::kDouble);
  at::Tensor tail_a = at::randn({1, 9, 16}, at::kDouble), tail_b = at::randn({1, 13, 16}, at::kDouble);

  ASSERT_EQ(*pools.alloc_slot(), 0);  // occupy slot 0 so the branches run in slots 1 and 2
  SimSequence a;
  a.x = prefix;
  a.prompt = P;
  a.slot = *pools.alloc_slot();
  std::vector<SimSequence> run = {a};
  test::SimOptions o;
  o.seed = 9;
  o.max_chunk = 8;
  test::simulate(s.layer_ptrs(), run, o);
  const int64_t snap = *pools.alloc_snapshot();
  EXPECT_GE(snap, pools.live_slots());
  pools.copy_slot(run[0].slot, snap);
  std::vector<at::Tensor> snapshot;
  for (int64_t l = 0; l < 2; ++l)
    for (const at::Tensor& t : pools.layer(l).slot_tensors) snapshot.push_back(t.select(0, snap).clone());

  // Branch A continues in its own slot: prompt tail as chunks, then decode steps.
  SimSequence cont_a;
  cont_a.x = tail_a;
  cont_a.prompt = 5;
  cont_a.slot = run[0].slot;
  cont_a.first_position = P;
  // Branch B starts from the snapshot in a new live slot, side by side with A.
  SimSequence cont_b;
  cont_b.x = tail_b;
  cont_b.prompt = 6;
  cont_b.slot = *pools.alloc_slot();
  cont_b.first_position = P;
  pools.copy_slot(snap, cont_b.slot);
  std::vector<SimSequence> both = {cont_a, cont_b};
  o.seed = 10;
  test::simulate(s.layer_ptrs(), both, o);

  size_t j = 0;
  for (int64_t l = 0; l < 2; ++l)
    for (const at::Tensor& t : pools.layer(l).slot_tensors)
      EXPECT_TRUE(at::equal(t.select(0, snap), snapshot[j++])) << "snapshot changed in layer " << l;
  for (size_t l = 0; l < 2; ++l)
    for (int b = 0; b < 2; ++b) {
      const at::Tensor& tail = b == 0 ? tail_a : tail_b;
      at::Tensor ref = s.reference(l, at::cat({prefix, tail}, 1)).narrow(1, P, tail.size(1));
      const double err = max_rel_error(test::output_of(both[static_cast<size_t>(b)], l), ref);
      EXPECT_LE(err, 16.0 * static_cast<double>(P + tail.size(1) + 16) * test::unit_roundoff(at::kDouble))
          << (l == 0 ? "gdn" : "mamba2") << " branch " << b;
    }
}

TEST(RecurrentEngineLayers, RejectsMismatchedMixerOrStep) {
  at::NoGradGuard no_grad;
  Rig s(at::kDouble, at::kDouble, 2);
  EXPECT_THROW(make_gdn_layer(s.model->mixer(1), s.pools->layer(1)), Error);     // a mamba2 mixer
  EXPECT_THROW(make_mamba2_layer(s.model->mixer(1), s.pools->layer(0)), Error);  // a gdn cache
  StepBatch b;
  b.seqs.resize(1);
  b.seqs[0].count = 3;
  b.seqs[0].slot = 7;  // outside the 2 slots
  b.num_tokens = 3;
  at::Tensor x = at::zeros({1, 3, 16}, at::kDouble);
  try {
    s.layers[0]->forward(x, b);
    ADD_FAILURE() << "slot 7 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("slot 7"), std::string::npos) << e.what();
  }
  b.seqs[0].slot = 1;
  b.num_tokens = 4;
  EXPECT_THROW(s.layers[1]->forward(at::zeros({1, 4, 16}, at::kDouble), b), Error);  // rows not covered
}

}  // namespace
}  // namespace hylo::engine
