// CachePools allocation and allocators: tensor shapes per layer kind (bytes equal to the plan), the recurrent part
// in state_dtype, pages handed out lowest first and reference-counted, exhaustion as nullopt, live slots and
// snapshot slots as separate ranges, alloc_slot zeroing, copy_slot / zero_slot over every recurrent layer.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "hylo/core/result.h"
#include "pools_test_util.h"

namespace hylo::engine {
namespace {

EngineOptions options(int64_t memory_bytes) {
  EngineOptions o;
  o.page_size = 16;
  o.prefill_chunk = 32;
  o.max_sequences = 3;
  o.max_step_tokens = 64;
  o.prefix_snapshots = 2;
  o.memory_bytes = memory_bytes;
  return o;
}

struct Fixture {
  std::unique_ptr<CausalLM> model;
  std::unique_ptr<CachePools> pools;
  Fixture(int64_t pages, at::ScalarType state_dtype = at::kFloat) {
    model = CausalLM::random(test::mixed_config(), 3);
    EngineOptions o = options(1 << 20);
    o.state_dtype = state_dtype;
    const MemoryPlan p = CachePools::plan(*model, o);
    o.memory_bytes = p.num_slots * p.bytes_per_slot + pages * p.bytes_per_page;  // exactly `pages` pages
    pools = std::make_unique<CachePools>(*model, o);
  }
};

TEST(CachePools, TensorsHaveTheLayoutAndTheBytesOfThePlan) {
  for (at::ScalarType state_dtype : {at::kFloat, at::kBFloat16}) {
    Fixture f(5, state_dtype);
    CachePools& p = *f.pools;
    const ModelConfig& c = f.model->config();
    ASSERT_EQ(p.plan().num_pages, 5);
    ASSERT_EQ(p.num_layers(), 4);
    EXPECT_TRUE(p.has_paged_layers());
    EXPECT_TRUE(p.has_recurrent_layers());
    int64_t bytes = 0;
    const LayerCache& gqa = p.layer(0);
    EXPECT_EQ(gqa.kind, MixerKind::kGqa);
    EXPECT_EQ(gqa.k_pages.sizes().vec(), (std::vector<int64_t>{5, 16, c.layers[0].gqa.num_kv_heads, c.layers[0].gqa.head_dim}));
    EXPECT_EQ(gqa.v_pages.sizes(), gqa.k_pages.sizes());
    EXPECT_EQ(gqa.k_pages.scalar_type(), at::kFloat);  // the model dtype
    bytes += gqa.k_pages.nbytes() + gqa.v_pages.nbytes();
    const LayerCache& mla = p.layer(1);
    EXPECT_EQ(mla.kind, MixerKind::kMla);
    EXPECT_EQ(mla.pages.sizes().vec(), (std::vector<int64_t>{5, 16, c.layers[1].mla.cache_width()}));
    bytes += mla.pages.nbytes();
    for (int64_t i : {2, 3}) {
      const LayerCache& r = p.layer(i);
      ASSERT_TRUE(r.slots) << i;
      EXPECT_FALSE(r.pages.defined() || r.k_pages.defined()) << i;
      EXPECT_EQ(r.slot_tensors.size(), i == 2 ? 4u : 2u) << i;  // gdn: conv q, k, v + recurrent; mamba2: conv + ssm
      for (const at::Tensor& t : r.slot_tensors) {
        EXPECT_EQ(t.size(0), 5) << i;  // 3 live + 2 snapshots
        EXPECT_TRUE(t.is_contiguous());
        bytes += t.nbytes();
      }
    }
    auto& gdn = dynamic_cast<GatedDeltaNetState&>(*p.layer(2).slots);
    auto& m2 = dynamic_cast<Mamba2State&>(*p.layer(3).slots);
    EXPECT_EQ(gdn.recurrent.scalar_type(), state_dtype);
    EXPECT_EQ(m2.ssm.scalar_type(), state_dtype);
    EXPECT_EQ(gdn.conv_q.scalar_type(), at::kFloat);  // conv state keeps the model dtype
    EXPECT_EQ(m2.conv.scalar_type(), at::kFloat);
    // slot_tensors alias the state object's tensors (writes through either are the same memory).
    EXPECT_TRUE(p.layer(2).slot_tensors.back().is_same(gdn.recurrent));
    EXPECT_EQ(bytes, p.plan().pool_bytes) << at::toString(state_dtype);
  }
}

TEST(CachePools, PagesLowestFirstRefcountedAndExhaustible) {
  Fixture f(4);
  CachePools& p = *f.pools;
  EXPECT_EQ(p.free_pages(), 4);
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    auto page = p.alloc_page();
    ASSERT_TRUE(page.has_value());
    got.push_back(*page);
    EXPECT_EQ(p.page_refs(*page), 1);
  }
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(p.free_pages(), 0);
  EXPECT_FALSE(p.alloc_page().has_value());  // exhausted: nullopt, not an error

  // A shared page (prefix cache + a sequence) survives the first unref.
  p.ref_page(2);
  EXPECT_EQ(p.page_refs(2), 2);
  p.unref_page(2);
  EXPECT_EQ(p.page_refs(2), 1);
  EXPECT_EQ(p.free_pages(), 0);
  p.unref_page(2);
  EXPECT_EQ(p.page_refs(2), 0);
  EXPECT_EQ(p.free_pages(), 1);
  p.unref_page(0);
  EXPECT_EQ(p.free_pages(), 2);
  // The freed pages come back (each exactly once), and then the pool is exhausted again.
  std::set<int32_t> again;
  for (int i = 0; i < 2; ++i) again.insert(*p.alloc_page());
  EXPECT_EQ(again, (std::set<int32_t>{0, 2}));
  EXPECT_FALSE(p.alloc_page().has_value());

  p.unref_page(1);
  EXPECT_THROW(p.unref_page(1), Error);  // already free
  EXPECT_THROW(p.ref_page(1), Error);    // a free page cannot gain a reference
  EXPECT_THROW(p.ref_page(4), Error);    // out of range
  EXPECT_THROW(p.unref_page(-1), Error);
}

TEST(CachePools, LiveSlotsAndSnapshotsAreSeparate) {
  Fixture f(2);
  CachePools& p = *f.pools;
  EXPECT_EQ(p.live_slots(), 3);
  EXPECT_EQ(p.snapshot_slots(), 2);
  EXPECT_EQ(p.free_slots(), 3);
  EXPECT_EQ(p.free_snapshots(), 2);
  EXPECT_EQ(*p.alloc_slot(), 0);
  EXPECT_EQ(*p.alloc_slot(), 1);
  EXPECT_EQ(*p.alloc_slot(), 2);
  EXPECT_FALSE(p.alloc_slot().has_value());  // snapshots are not handed out as live slots
  EXPECT_EQ(p.free_snapshots(), 2);
  EXPECT_EQ(*p.alloc_snapshot(), 3);
  EXPECT_EQ(*p.alloc_snapshot(), 4);
  EXPECT_FALSE(p.alloc_snapshot().has_value());
  EXPECT_THROW(p.free_slot(3), Error);      // a snapshot id is not a live slot
  EXPECT_THROW(p.free_snapshot(1), Error);  // and the reverse
  p.free_slot(1);
  EXPECT_THROW(p.free_slot(1), Error);  // double free
  p.free_snapshot(4);
  EXPECT_THROW(p.free_snapshot(4), Error);
  EXPECT_EQ(*p.alloc_slot(), 1);
  EXPECT_EQ(*p.alloc_snapshot(), 4);
}

// Fills every recurrent tensor's row `slot` with distinct nonzero values.
void scribble(CachePools& p, int64_t slot, double base) {
  for (int64_t i = 0; i < p.num_layers(); ++i)
    for (at::Tensor& t : p.layer(i).slot_tensors)
      t.select(0, slot).copy_(base + at::rand(t.select(0, slot).sizes(), t.options()));
}

TEST(CachePools, AllocSlotZeroesAndCopyZeroCoverEveryRecurrentLayer) {
  Fixture f(2, at::kBFloat16);
  CachePools& p = *f.pools;
  for (int64_t s = 0; s < 5; ++s) scribble(p, s, 1.0 + s);
  auto row = [&](int64_t layer, size_t k, int64_t slot) { return p.layer(layer).slot_tensors[k].select(0, slot); };
  auto slot_equal = [&](int64_t a, int64_t b) {
    for (int64_t i : {2, 3})
      for (size_t k = 0; k < p.layer(i).slot_tensors.size(); ++k)
        if (!at::equal(row(i, k, a), row(i, k, b))) return false;
    return true;
  };
  auto slot_zero = [&](int64_t s) {
    for (int64_t i : {2, 3})
      for (size_t k = 0; k < p.layer(i).slot_tensors.size(); ++k)
        if (row(i, k, s).abs().max().item<double>() != 0.0) return false;
    return true;
  };
  std::vector<at::Tensor> before;
  for (int64_t i : {2, 3})
    for (const at::Tensor& t : p.layer(i).slot_tensors) before.push_back(t.clone());

  // alloc_slot hands out slot 0 zeroed; the other rows are untouched.
  ASSERT_EQ(*p.alloc_slot(), 0);
  EXPECT_TRUE(slot_zero(0));
  EXPECT_FALSE(slot_zero(1));

  // copy_slot: live -> snapshot and snapshot -> live, in every layer and every part, nothing else changes.
  p.copy_slot(1, 4);
  EXPECT_TRUE(slot_equal(1, 4));
  p.copy_slot(3, 2);
  EXPECT_TRUE(slot_equal(3, 2));
  EXPECT_FALSE(slot_equal(1, 3));
  size_t j = 0;
  for (int64_t i : {2, 3})
    for (const at::Tensor& t : p.layer(i).slot_tensors) {
      for (int64_t s : {1, 3}) EXPECT_TRUE(at::equal(t.select(0, s), before[j].select(0, s))) << i << " " << s;
      ++j;
    }
  p.zero_slot(3);
  EXPECT_TRUE(slot_zero(3));
  EXPECT_FALSE(slot_zero(2));  // the copy made before is its own memory
  EXPECT_THROW(p.copy_slot(0, 5), Error);
  EXPECT_THROW(p.zero_slot(-1), Error);
}

}  // namespace
}  // namespace hylo::engine
