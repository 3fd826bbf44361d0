// `hylo bench` (infer/bench) on the tiny hybrid and its all-attention teacher on the CPU: the memory figures follow
// the models' own formulas, points beyond the budget are reported with what fits instead of run, the measured
// points carry consistent numbers, and the reports (markdown, JSON, SVG) say the same.
#include <gtest/gtest.h>

#include <cmath>

#include "hylo/infer/bench/bench.h"
#include "hylo/infer/bench/bench_report.h"
#include "hylo/infer/engine/cache_pool.h"
#include "shared/tiny_models.h"

namespace hylo::bench {
namespace {

// The teacher of the tiny hybrid: every layer the gqa layer 0.
ModelConfig teacher_config() {
  ModelConfig c = mixed_config();
  for (auto& l : c.layers) l = c.layers[0];
  return c;
}

BenchOptions tiny_options() {
  BenchOptions o;
  o.contexts = {24, 40, 4096};
  o.decode_tokens = 4;
  o.batches = {1, 3, 1000};
  o.batch_prompt_tokens = 16;
  o.engine.page_size = 8;
  o.engine.prefill_chunk = 16;
  o.engine.max_step_tokens = 32;
  o.engine.cuda_graphs = false;
  o.progress = false;
  return o;
}

// A budget of `pages` pages of `config` plus one state slot.
int64_t budget_for_pages(const CausalLM& model, const BenchOptions& o, int64_t pages) {
  engine::EngineOptions probe = o.engine;
  probe.max_sequences = 1;
  probe.memory_bytes = int64_t{1} << 30;
  const engine::MemoryPlan unit = engine::CachePools::plan(model, probe);
  return pages * unit.bytes_per_page + unit.bytes_per_slot;
}

TEST(Bench, MemoryFiguresFollowTheModelFormulaAndTheBudget) {
  auto hybrid = CausalLM::random(mixed_config(), 3);
  auto teacher = CausalLM::random(teacher_config(), 3);
  BenchOptions o = tiny_options();
  o.engine.memory_bytes = budget_for_pages(*hybrid, o, 64);  // 512 tokens of the hybrid
  const ModelReport h = bench_model(*hybrid, "hybrid", "hybrid", o);
  const ModelReport t = bench_model(*teacher, "teacher", "teacher", o);

  // Per token: gqa 2 x 2 KV heads x 12 = 48 values, MLA r_kv 12 + rope 4 = 16; fp32. The teacher: 4 gqa layers.
  EXPECT_EQ(h.bytes_per_token, (48 + 16) * 4);
  EXPECT_EQ(h.bytes_per_token_formula, h.bytes_per_token);
  EXPECT_EQ(t.bytes_per_token, 4 * 48 * 4);
  EXPECT_EQ(t.bytes_per_token_formula, t.bytes_per_token);
  EXPECT_GT(t.bytes_per_token, h.bytes_per_token);
  EXPECT_GT(h.bytes_per_slot, 0);   // GDN + Mamba2 state
  EXPECT_EQ(t.bytes_per_slot, 0);   // attention only
  EXPECT_EQ(h.layers, "1 gqa + 1 mla + 1 gdn + 1 mamba2");
  EXPECT_EQ(h.parameters, parameter_count(mixed_config()));
  EXPECT_TRUE(std::isnan(h.weight_bytes));  // no allocator statistics on the CPU

  // The same budget holds 64 pages of the hybrid; the teacher's pages are 3x larger, and it has no state slot.
  EXPECT_EQ(h.max_context, 64 * 8);
  EXPECT_EQ(t.max_context, o.engine.memory_bytes / (t.bytes_per_token * 8) * 8);
  for (const ModelReport* m : {&h, &t}) {
    SCOPED_TRACE(m->name);
    ASSERT_EQ(m->contexts.size(), 3u);
    for (const ContextPoint& p : m->contexts) {
      EXPECT_EQ(p.max_context, m->max_context - o.decode_tokens);
      EXPECT_EQ(p.fits, p.context + o.decode_tokens <= m->max_context);
      if (!p.fits) {
        EXPECT_TRUE(std::isnan(p.prefill_seconds));
        continue;
      }
      ASSERT_TRUE(p.error.empty()) << p.error;
      EXPECT_EQ(p.decoded, o.decode_tokens);
      EXPECT_GT(p.prefill_seconds, 0);
      EXPECT_GT(p.tpot_ms, 0);
      EXPECT_GE(p.tpot_mean_ms, 0);
      // The sequence holds its pages (prompt + generated) and one state slot; the point's pools hold at least that.
      const int64_t pages = (p.context + o.decode_tokens + 7) / 8;
      EXPECT_EQ(p.sequence_bytes, pages * 8 * m->bytes_per_token + m->bytes_per_slot);
      EXPECT_GE(p.pool_bytes, p.sequence_bytes);
      EXPECT_TRUE(std::isnan(p.peak_bytes));
    }
    EXPECT_TRUE(m->contexts[0].fits && m->contexts[1].fits);
    EXPECT_FALSE(m->contexts[2].fits);  // 4096 tokens: beyond both budgets
    // The untimed warm-up: one prefill chunk (16 tokens, under the smallest context 24), cold.
    EXPECT_EQ(m->warmup_tokens, 16);
    EXPECT_GT(m->warmup_prefill_seconds, 0);
    // Memory per sequence grows with the context, and the hybrid's more slowly.
    EXPECT_GT(m->contexts[1].sequence_bytes, m->contexts[0].sequence_bytes);
  }
  EXPECT_LT(h.contexts[1].sequence_bytes - h.contexts[0].sequence_bytes,
            t.contexts[1].sequence_bytes - t.contexts[0].sequence_bytes);

  // Batches: 1 and 3 fit and time full decode steps; 1000 does not, with the number that does.
  ASSERT_EQ(h.batches.size(), 3u);
  for (int i = 0; i < 2; ++i) {
    const BatchPoint& p = h.batches[static_cast<size_t>(i)];
    EXPECT_TRUE(p.fits);
    ASSERT_TRUE(p.error.empty()) << p.error;
    EXPECT_EQ(p.timed_steps, o.decode_tokens);
    EXPECT_GT(p.step_ms, 0);
    EXPECT_NEAR(p.decode_tokens_per_second, p.batch / (p.step_ms / 1e3), 1e-9 * p.decode_tokens_per_second);
  }
  EXPECT_FALSE(h.batches[2].fits);
  EXPECT_GE(h.batches[2].max_batch, 3);
  EXPECT_LT(h.batches[2].max_batch, 1000);
}

TEST(Bench, ReportsSayTheSame) {
  auto hybrid = CausalLM::random(mixed_config(), 3);
  BenchOptions o = tiny_options();
  o.batches = {1};
  o.engine.memory_bytes = budget_for_pages(*hybrid, o, 64);
  BenchReport r;
  r.device = "cpu";
  r.dtype = "fp32";
  r.options = o;
  r.models.push_back(bench_model(*hybrid, "tiny hybrid", "hybrid", o));
  BenchOptions cold = o;
  cold.warmup = false;
  r.models.push_back(bench_model(*hybrid, "tiny again", "model", cold));
  EXPECT_EQ(r.models[1].warmup_tokens, 0);

  const nlohmann::json j = to_json(r);
  ASSERT_EQ(j["models"].size(), 2u);
  const auto& m = j["models"][0];
  EXPECT_EQ(m["name"], "tiny hybrid");
  EXPECT_EQ(m["bytes_per_token"].get<int64_t>(), r.models[0].bytes_per_token);
  EXPECT_EQ(m["contexts"].size(), 3u);
  EXPECT_EQ(m["contexts"][2]["fits"], false);
  EXPECT_TRUE(m["contexts"][2]["prefill_seconds"].is_null());
  EXPECT_TRUE(m["contexts"][0]["peak_bytes"].is_null());  // CPU: n/a
  EXPECT_DOUBLE_EQ(m["contexts"][0]["tpot_ms"].get<double>(), r.models[0].contexts[0].tpot_ms);
  EXPECT_EQ(m["batches"][0]["timed_steps"].get<int64_t>(), o.decode_tokens);
  EXPECT_EQ(m["warmup_tokens"].get<int64_t>(), 16);
  EXPECT_TRUE(j["models"][1]["warmup_prefill_seconds"].is_null());

  const std::string md = to_markdown(r);
  EXPECT_NE(md.find("| tiny hybrid | 4K | does not fit (" + std::to_string(r.models[0].contexts[2].max_context) +
                    " tokens fit)"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("tiny hybrid against tiny again"), std::string::npos);
  EXPECT_NE(md.find("untimed warm-up request (cold prefill: tiny hybrid 16 tokens in "), std::string::npos) << md;

  const Result<std::string> svg = to_svg(r);
  ASSERT_TRUE(svg.ok()) << svg.error();
  EXPECT_NE(svg->find("tiny hybrid (pools)"), std::string::npos);
  EXPECT_NE(svg->find("plot-area-tpot"), std::string::npos);
  EXPECT_NE(svg->find("plot-area-memory"), std::string::npos);
  EXPECT_EQ(svg->find("id=\"plot-area\""), std::string::npos);  // the two charts' clip ids differ
}

TEST(Bench, CountListsAndBadOptions) {
  EXPECT_EQ(parse_count_list("4K,8K, 128K,1M,2M", "--contexts"),
            (std::vector<int64_t>{4096, 8192, 131072, 1 << 20, 2 << 20}));
  EXPECT_EQ(parse_count_list("100,1", "--batch"), (std::vector<int64_t>{100, 1}));
  EXPECT_EQ(parse_count_list("1.5K", "--contexts"), (std::vector<int64_t>{1536}));
  for (const char* bad : {"", "4K,,8K", "0", "-3", "4X", "1.5", "K"}) {
    try {
      parse_count_list(bad, "--contexts");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--contexts"), std::string::npos);
    }
  }
  EXPECT_EQ(format_count(4096), "4K");
  EXPECT_EQ(format_count(2 << 20), "2M");
  EXPECT_EQ(format_count(1000), "1000");

  auto model = CausalLM::random(mixed_config(), 3);
  BenchOptions o = tiny_options();
  o.decode_tokens = 1;  // TPOT needs two tokens
  o.engine.memory_bytes = int64_t{1} << 24;
  EXPECT_THROW(bench_model(*model, "m", "model", o), Error);
  o = tiny_options();
  o.engine.memory_bytes = 0;  // the CPU has no size to take a fraction of
  EXPECT_THROW(bench_model(*model, "m", "model", o), Error);
}

}  // namespace
}  // namespace hylo::bench
