// 2 (and 3) Gloo ranks train a tiny CausalLM to the same parameters as 1 rank at the same global batch, with
// and without ZeRO-1, and a run resumed with a different number of ranks continues the same trajectory.
//
// TEST HARNESS, not a trainer: train_steps() below is the smallest loop that follows the SyncHooks contract
// (train/sync_hooks.h) -- global target-token count through all_reduce_sum, loss = sum of token CE / N,
// before_backward / after_backward per micro-step, an AdamW step on owned parameters only, after_step -- so
// DataParallel is tested on a real model before `hylo train` uses it. Its AdamW is the textbook update.
//
// Tolerance, derived: a 1-rank fp32 run and an N-rank fp32 run do the same math and differ only in rounding
// (the gradient is summed in another order: per-rank partial sums, then the all-reduce). Both are compared
// with the same run in fp64. The N-rank run's largest parameter error must be at most 3x the 1-rank run's
// largest error (same math in the same dtype; 3 covers where in the summation the extra roundings fall), plus
// 2 ulp of the largest parameter (the final rounding of a stored fp32 value). A negative control shows that
// the bound separates: a run whose ranks skip the all-reduce (each steps on its own half of the batch) is far
// outside it.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <limits>

#include "dist_test_util.h"
#include "hylo/config/hf_config.h"
#include "hylo/model/causal_lm.h"
#include "hylo/train/distributed_data_parallel.h"

namespace hylo::train {
namespace {

using namespace hylo::train::testing;

constexpr int64_t kRowsPerMicro = 6;  // divides unevenly over 4 ranks, evenly over 1, 2, 3
constexpr int kAccum = 2;
constexpr int64_t kSeqLen = 8;
constexpr int64_t kVocab = 61;

ModelConfig tiny_config() {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", kVocab}, {"hidden_size", 32},
                      {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5},
                      {"max_position_embeddings", 64}, {"tie_word_embeddings", false},
                      {"rope_theta", 10000.0}};
  return model_config_from_hf_json(j, "tiny").value_or_throw();
}

struct Trainee {
  std::unique_ptr<CausalLM> model;
  std::vector<NamedParam> params;
  at::Tensor head;  // [V, D]
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> moments;  // AdamW m, v by parameter name
  int64_t step = 0;
};

// The same initial values in every dtype: drawn once in fp32, then widened exactly.
Trainee make_trainee(at::ScalarType dtype) {
  auto init = CausalLM::random(tiny_config(), /*seed=*/11, LoadOptions{at::kFloat, at::Device(at::kCPU)});
  std::map<std::string, at::Tensor> values;
  init->visit_parameters([&](const std::string& name, at::Tensor& t) { values[name] = t; });
  Trainee tr;
  tr.model = CausalLM::random(tiny_config(), /*seed=*/11, LoadOptions{dtype, at::Device(at::kCPU)});
  tr.model->visit_parameters([&](const std::string& name, at::Tensor& t) {
    if (name.ends_with("rotary_emb.inv_freq")) return;
    t.copy_(values.at(name));
    t.requires_grad_(true);
    tr.params.push_back({name, t});
    if (name == "lm_head.weight") tr.head = t;
  });
  if (!tr.head.defined()) throw std::runtime_error("tiny model has no lm_head.weight");
  return tr;
}

// Global batch of optimizer step `step`, micro-step `micro`: [kRowsPerMicro, kSeqLen + 1] token ids.
at::Tensor global_rows(int64_t step, int micro) {
  at::Generator g = at::detail::createCPUGenerator(static_cast<uint64_t>(7919 * step + micro + 1));
  return at::randint(kVocab, {kRowsPerMicro, kSeqLen + 1}, g, at::TensorOptions().dtype(at::kLong));
}

// This rank's rows of a micro-batch: r, r + world, ... (as PackedLoader slices a global batch).
at::Tensor my_rows(const at::Tensor& rows, int rank, int world) {
  return rows.index_select(0, at::arange(rank, rows.size(0), world, at::kLong));
}

void adamw_step(Trainee& tr, const std::vector<bool>& owned) {
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  ++tr.step;
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < tr.params.size(); ++i) {
    if (!owned[i]) continue;
    at::Tensor p = tr.params[i].tensor.detach();
    at::Tensor g = tr.params[i].tensor.grad();
    auto [it, fresh] = tr.moments.try_emplace(tr.params[i].name, at::zeros_like(p), at::zeros_like(p));
    auto& [m, v] = it->second;
    m.mul_(b1).add_(g, 1 - b1);
    v.mul_(b2).addcmul_(g, g, 1 - b2);
    double c1 = 1 - std::pow(b1, static_cast<double>(tr.step)), c2 = 1 - std::pow(b2, static_cast<double>(tr.step));
    p.mul_(1 - lr * wd);
    p.addcdiv_(m / c1, (v / c2).sqrt_().add_(eps), -lr);
  }
}

// `steps` optimizer steps from tr.step on. `skip_sync` is the negative control: each rank steps on its own
// rows' gradient as if it were the whole batch's.
void train_steps(Trainee& tr, SyncHooks& hooks, int steps, bool skip_sync = false, int fake_rank = 0,
                 int fake_world = 1) {
  int rank = skip_sync ? fake_rank : hooks.rank(), world = skip_sync ? fake_world : hooks.world();
  hooks.attach(tr.params);
  std::vector<bool> owned = hooks.owned(tr.params);
  for (int s = 0; s < steps; ++s) {
    std::vector<at::Tensor> micro;
    double tokens = 0;
    for (int m = 0; m < kAccum; ++m) {
      micro.push_back(my_rows(global_rows(tr.step, m), rank, world));
      tokens += static_cast<double>(micro.back().size(0) * kSeqLen);
    }
    at::Tensor n = at::full({1}, tokens, at::kDouble);
    if (!skip_sync) hooks.all_reduce_sum(n);
    for (int m = 0; m < kAccum; ++m) {
      at::Tensor ids = micro[static_cast<size_t>(m)];
      hooks.before_backward(m, m == kAccum - 1);
      if (ids.size(0) > 0) {
        at::Tensor logits = at::linear(tr.model->forward_hidden(ids.narrow(1, 0, kSeqLen)), tr.head);  // [b, T, V]
        at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, kVocab}), ids.narrow(1, 1, kSeqLen).reshape({-1}),
                                                 {}, at::Reduction::Sum) / n.item<double>();
        loss.backward();
      }
      hooks.after_backward();
    }
    adamw_step(tr, owned);
    hooks.after_step();
    for (auto& p : tr.params) p.tensor.mutable_grad() = at::Tensor();
  }
  hooks.detach();
}

at::Tensor flat_params(const Trainee& tr) {
  std::vector<at::Tensor> parts;
  for (const auto& p : tr.params) parts.push_back(p.tensor.detach().reshape({-1}).to(at::kDouble));
  return at::cat(parts);
}

// Checkpoint of the harness (by parameter name, like the trainer's): rank 0 writes the parameters, every rank
// the AdamW moments it owns.
void save(const Trainee& tr, const fs::path& dir, int rank) {
  fs::create_directories(dir);
  if (rank == 0) {
    for (const auto& p : tr.params) write_tensor(dir / ("param." + p.name), p.tensor.detach());
    write_text(dir / "step", std::to_string(tr.step));
  }
  for (const auto& [name, mv] : tr.moments) {
    write_tensor(dir / ("m." + name), mv.first);
    write_tensor(dir / ("v." + name), mv.second);
  }
}

void load(Trainee& tr, const fs::path& dir, const std::vector<bool>& owned) {
  at::NoGradGuard no_grad;
  tr.step = std::stoll(read_text(dir / "step"));
  for (size_t i = 0; i < tr.params.size(); ++i) {
    at::Tensor p = tr.params[i].tensor;
    const std::string& name = tr.params[i].name;
    p.detach().copy_(read_tensor(dir / ("param." + name), at::kFloat).view(p.sizes()));
    if (!owned[i]) continue;
    ASSERT_TRUE(fs::exists(dir / ("m." + name))) << "no saved moments for " << name;
    tr.moments[name] = {read_tensor(dir / ("m." + name), at::kFloat).view(p.sizes()).clone(),
                        read_tensor(dir / ("v." + name), at::kFloat).view(p.sizes()).clone()};
  }
}

// Rank body. HYLO_TEST_ZERO1=0|1, HYLO_TEST_STEPS, optional HYLO_TEST_LOAD / HYLO_TEST_SAVE directories.
TEST(DistRank, DISABLED_TrainTiny) {
  auto group = rank_group();
  DataParallel dp(group, DataParallelOptions{.bucket_bytes = 4096, .zero1 = std::string(std::getenv("HYLO_TEST_ZERO1")) == "1"});
  Trainee tr = make_trainee(at::kFloat);
  if (const char* d = std::getenv("HYLO_TEST_LOAD")) load(tr, d, dp.owned(tr.params));
  train_steps(tr, dp, std::stoi(std::getenv("HYLO_TEST_STEPS")));
  if (const char* d = std::getenv("HYLO_TEST_SAVE")) {
    save(tr, d, group->rank());
    group->barrier("checkpoint");
  }
  write_tensor(rank_dir() / ("params.r" + std::to_string(group->rank())), flat_params(tr).to(at::kFloat));
  // ZeRO-1: AdamW moments exist only for the parameters this rank owns.
  write_text(rank_dir() / ("moments.r" + std::to_string(group->rank())), std::to_string(tr.moments.size()));
  // Overlap: with 4 KiB buckets most all-reduces start during backward.
  write_text(rank_dir() / ("overlapped.r" + std::to_string(group->rank())),
             std::to_string(dp.grad_stats().buckets_launched_in_backward));
}

struct Reference {
  at::Tensor fp64, fp32;  // parameters after the steps, flat, as fp64
  double err1 = 0, bound = 0;
};

Reference one_rank_reference(int steps) {
  SyncHooks single;
  Trainee t64 = make_trainee(at::kDouble), t32 = make_trainee(at::kFloat);
  train_steps(t64, single, steps);
  train_steps(t32, single, steps);
  Reference r{flat_params(t64), flat_params(t32)};
  r.err1 = (r.fp32 - r.fp64).abs().max().item<double>();
  r.bound = 3 * r.err1 + 2 * std::numeric_limits<float>::epsilon() * r.fp64.abs().max().item<double>();
  return r;
}

void expect_ranks_match(const fs::path& dir, int nproc, const Reference& ref, const std::string& what,
                        bool zero1 = true) {
  at::Tensor first = read_tensor(dir / "params.r0", at::kFloat);
  ASSERT_EQ(first.numel(), ref.fp64.numel());
  double err = (first.to(at::kDouble) - ref.fp64).abs().max().item<double>();
  std::cout << "[ " << what << " ] max |theta - theta_fp64|: " << nproc << " ranks " << err << ", 1 rank "
            << ref.err1 << ", bound " << ref.bound << "\n";
  EXPECT_LE(err, ref.bound) << what;
  for (int r = 1; r < nproc; ++r) {
    EXPECT_TRUE(at::equal(read_tensor(dir / ("params.r" + std::to_string(r)), at::kFloat), first))
        << what << ": rank " << r << " holds other parameters than rank 0";
  }
  EXPECT_GT(std::stoll(read_text(dir / "overlapped.r0")), 0) << what << ": no bucket started during backward";
  // Optimizer state: with ZeRO-1 each parameter's moments on exactly one rank, every rank owning some.
  size_t total = make_trainee(at::kFloat).params.size(), sum = 0;
  for (int r = 0; r < nproc; ++r) {
    size_t mine = std::stoul(read_text(dir / ("moments.r" + std::to_string(r))));
    sum += mine;
    if (zero1) EXPECT_TRUE(mine > 0 && mine < total) << what << ": rank " << r << " owns " << mine << " of " << total;
    else EXPECT_EQ(mine, total) << what;
  }
  if (zero1) EXPECT_EQ(sum, total) << what;
}

TEST(TrainEquivalence, NegativeControlSkippingAllReduceIsOutsideTheBound) {
  Reference ref = one_rank_reference(3);
  SyncHooks single;
  Trainee t = make_trainee(at::kFloat);
  train_steps(t, single, 3, /*skip_sync=*/true, /*fake_rank=*/0, /*fake_world=*/2);
  double err = (flat_params(t) - ref.fp64).abs().max().item<double>();
  std::cout << "unsynchronised rank: " << err << " vs bound " << ref.bound << "\n";
  EXPECT_GT(err, 10 * ref.bound);
}

TEST(TrainEquivalence, TwoRanksEqualOneRankWithoutZero) {
  HYLO_REQUIRE_GLOO();
  Reference ref = one_rank_reference(3);
  fs::path dir = fresh_dir("equiv_plain");
  LaunchReport rep = run_ranks("TrainTiny", 2, dir, {"HYLO_TEST_ZERO1=0", "HYLO_TEST_STEPS=3"});
  ASSERT_EQ(rep.exit_code(), 0) << rep.message;
  expect_ranks_match(dir, 2, ref, "2 ranks, all-reduce only", /*zero1=*/false);
  fs::remove_all(dir);
}

TEST(TrainEquivalence, TwoAndThreeRanksEqualOneRankWithZero1) {
  HYLO_REQUIRE_GLOO();
  Reference ref = one_rank_reference(3);
  for (int nproc : {2, 3}) {
    fs::path dir = fresh_dir("equiv_zero" + std::to_string(nproc));
    LaunchReport rep = run_ranks("TrainTiny", nproc, dir, {"HYLO_TEST_ZERO1=1", "HYLO_TEST_STEPS=3"});
    ASSERT_EQ(rep.exit_code(), 0) << rep.message;
    expect_ranks_match(dir, nproc, ref, std::to_string(nproc) + " ranks, ZeRO-1");
    fs::remove_all(dir);
  }
}

// 2 steps on 2 ranks (ZeRO-1), checkpoint, 2 more steps on 3 ranks: ownership changes, every rank finds the
// moments of the parameters it now owns by name, and the result equals 4 steps on 1 rank.
TEST(TrainEquivalence, ResumeWithAnotherNumberOfRanks) {
  HYLO_REQUIRE_GLOO();
  Reference ref = one_rank_reference(4);
  fs::path dir = fresh_dir("resume"), ckpt = dir / "ckpt";
  LaunchReport a = run_ranks("TrainTiny", 2, dir, {"HYLO_TEST_ZERO1=1", "HYLO_TEST_STEPS=2", "HYLO_TEST_SAVE=" + ckpt.string()});
  ASSERT_EQ(a.exit_code(), 0) << a.message;
  LaunchReport b = run_ranks("TrainTiny", 3, dir, {"HYLO_TEST_ZERO1=1", "HYLO_TEST_STEPS=2", "HYLO_TEST_LOAD=" + ckpt.string()});
  ASSERT_EQ(b.exit_code(), 0) << b.message;
  expect_ranks_match(dir, 3, ref, "2 ranks then 3 ranks, ZeRO-1");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hylo::train
