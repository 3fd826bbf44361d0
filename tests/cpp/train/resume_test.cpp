// End to end on tiny random models and a random-token dataset (written by the data pipeline's own writer):
// a recipe with an ILD stage and a KD stage. A run stopped after k steps (stop_after: a planned kill right after a
// checkpoint) and resumed, twice, ends with parameters bit-identical to an uninterrupted run; the stage outputs
// (final checkpoint, metrics, loss plot) are where the docs say; a non-empty --out without --resume is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/checkpoint.h"
#include "hylo/train/data_format.h"
#include "hylo/train/recipe.h"
#include "hylo/train/trainer.h"
#include "tiny_models.h"

namespace hylo::train {
namespace {

namespace fs = std::filesystem;

fs::path temp_root(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("hylo-train-" + tag + "-" + std::to_string(::getpid()));
  (void)remove_tree(p);
  fs::create_directories(p);
  return p;
}

// A word-level tokenizer.json over 101 made-up tokens: the checkpoints need a tokenizer to carry along.
void write_tokenizer(const fs::path& dir) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < 101; ++i) vocab["w" + std::to_string(i)] = i;
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", nlohmann::json::array()},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", {{"type", "Whitespace"}}},
                      {"post_processor", nullptr},
                      {"decoder", nullptr},
                      {"model", {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", "w0"}}}};
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << j.dump();
}

void write_dataset(const fs::path& dir) {
  DatasetContents c;
  c.sources.push_back({"random", "text"});
  std::mt19937 rng(5);
  auto doc = [&](int len) {
    Document d;
    for (int i = 0; i < len; ++i) d.tokens.push_back(static_cast<uint32_t>(rng() % 101));
    d.text = "random";
    return d;
  };
  for (int i = 0; i < 40; ++i) c.train.push_back(doc(5 + static_cast<int>(rng() % 20)));
  for (int i = 0; i < 6; ++i) c.heldout.push_back(doc(20));
  c.tokenizer = {{"vocab_size", 101}, {"fingerprint", "test"}, {"bos_id", nullptr}, {"bos_added", false},
                 {"doc_end_id", nullptr}, {"source", "test"}};
  c.heldout_rule = {{"rule", "test"}};
  c.build = {{"seed", 0}};
  write_token_dataset(dir, c).value_or_throw();
}

struct Fixture {
  fs::path root;
  Recipe recipe;
  explicit Fixture(const std::string& tag) : root(temp_root(tag)) {
    write_tokenizer(root / "tok");
    auto teacher = CausalLM::random(testing::tiny_teacher_config(), 1);
    auto student = CausalLM::random(testing::tiny_student_config(), 2);
    save_checkpoint(*teacher, root / "teacher", root / "tok").value_or_throw();
    save_checkpoint(*student, root / "student", root / "tok").value_or_throw();
    write_dataset(root / "data");
    const std::string text = R"(
name: tiny
defaults: {teacher: teacher, data: data, seq_len: 12, batch: 4, micro_batch: 2, precision: fp32,
           adamw: {weight_decay: 0.01}, log_every: 1, eval_every: 2, eval_batches: 1, checkpoint_every: 2,
           kd: {vocab_tile: 40, seq_tile: 10}}
stages:
  - {name: ild, kind: ild, student: student, tokens: 144, lr: 1.0e-3}
  - {name: kd, kind: kd, student: {stage: ild}, tokens: 240, lr: 1.0e-3, warmup_ratio: 0.2}
)";
    recipe = parse_recipe(text, (root / "recipe.yaml").string(), root).value_or_throw();
  }
  ~Fixture() { (void)remove_tree(root); }

  RunSummary run(const fs::path& out, bool resume, std::optional<int64_t> stop_after,
                 std::vector<std::string> only = {}, const std::atomic<bool>* stop_requested = nullptr) {
    TrainOptions o;
    o.out = out;
    o.resume = resume;
    o.stop_after = stop_after;
    o.progress = false;
    o.only_stages = std::move(only);
    o.stop_requested = stop_requested;
    RunSummary s;
    run_recipe(recipe, o, &s).value_or_throw();
    return s;
  }
};

std::map<std::string, at::Tensor> params_of(const fs::path& model) {
  auto m = CausalLM::load(model);
  std::map<std::string, at::Tensor> out;
  m->visit_parameters([&](const std::string& n, at::Tensor& t) { out[n] = t.clone(); });
  return out;
}

TEST(Resume, StoppedAndResumedRunIsBitIdentical) {
  Fixture f("resume");
  ASSERT_EQ(stage_steps(f.recipe.stages[0]), 3);
  ASSERT_EQ(stage_steps(f.recipe.stages[1]), 5);
  // Uninterrupted.
  RunSummary a = f.run(f.root / "a", false, std::nullopt);
  EXPECT_FALSE(a.stopped);
  EXPECT_EQ(a.finished_stages, (std::vector<std::string>{"ild", "kd"}));
  // Stopped after 2 ILD steps; resumed and stopped after ILD's last step plus 3 KD steps; resumed to the end.
  EXPECT_TRUE(f.run(f.root / "b", false, 2).stopped);
  EXPECT_TRUE(fs::exists(f.root / "b" / "ild" / "train_state" / "state.json"));
  EXPECT_FALSE(fs::exists(f.root / "b" / "ild" / "final"));
  RunSummary b2 = f.run(f.root / "b", true, 3);
  EXPECT_TRUE(b2.stopped);
  EXPECT_EQ(b2.finished_stages, (std::vector<std::string>{"ild"}));
  EXPECT_FALSE(fs::exists(f.root / "b" / "ild" / "train_state"));  // removed once final/ is written
  RunSummary b3 = f.run(f.root / "b", true, std::nullopt);
  EXPECT_EQ(b3.finished_stages, (std::vector<std::string>{"kd"}));

  for (const char* stage : {"ild", "kd"}) {
    auto pa = params_of(f.root / "a" / stage / "final");
    auto pb = params_of(f.root / "b" / stage / "final");
    ASSERT_EQ(pa.size(), pb.size());
    for (const auto& [name, t] : pa) EXPECT_TRUE(at::equal(t, pb.at(name))) << stage << " " << name;
  }
  // Training moved the student away from its start.
  auto p0 = params_of(f.root / "student"), p1 = params_of(f.root / "a" / "kd" / "final");
  EXPECT_FALSE(at::equal(p0.at("model.layers.0.mlp.up_proj.weight"), p1.at("model.layers.0.mlp.up_proj.weight")));

  // Metrics: one training line per step, no step twice after the resumes, held-out losses, and the plot.
  for (const fs::path run : {f.root / "a", f.root / "b"}) {
    std::ifstream in(run / "kd" / "metrics.jsonl");
    std::string line;
    std::set<int64_t> train_steps;
    int heldout = 0;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) EXPECT_TRUE(train_steps.insert(j["step"].get<int64_t>()).second) << line;
      if (j.contains("heldout_loss")) ++heldout;
    }
    EXPECT_EQ(train_steps, (std::set<int64_t>{1, 2, 3, 4, 5}));
    EXPECT_GE(heldout, 3);  // steps 0, 2, 4, 5
    EXPECT_TRUE(fs::exists(run / "kd" / "loss.svg"));
  }
}

void expect_same_params(const fs::path& a, const fs::path& b) {
  auto pa = params_of(a), pb = params_of(b);
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& [name, t] : pa) EXPECT_TRUE(at::equal(t, pb.at(name))) << a << " " << name;
}

// A signal's flag set from inside the trainer's loop: after_step() runs after the optimizer step and before the
// step's all-reduce that carries the flag, so setting it at the n-th call stops the run at that step.
struct FlagAtStep : SyncHooks {
  std::atomic<bool>* flag = nullptr;
  int at = 0, steps = 0;
  void after_step() override {
    if (++steps == at) flag->store(true);
  }
};

// What SIGINT/SIGTERM does in `hylo train` (the handler sets the flag): the step in flight ends, a checkpoint is
// written, the stage stays unfinished, and --resume continues to the same parameters as a run never stopped. A
// flag that finds a stage boundary stops before the next stage; one set before any work stops before the first.
TEST(Resume, StopRequestCheckpointsAndResumesBitIdentical) {
  Fixture f("signal");
  f.run(f.root / "a", false, std::nullopt);
  auto run_with_flag = [&](const fs::path& out, bool resume, int at) {
    std::atomic<bool> stop{false};
    FlagAtStep hooks;
    hooks.flag = &stop;
    hooks.at = at;
    TrainOptions o;
    o.out = out;
    o.resume = resume;
    o.progress = false;
    o.stop_requested = &stop;
    o.hooks = &hooks;
    RunSummary s;
    run_recipe(f.recipe, o, &s).value_or_throw();
    return s;
  };
  // Mid-stage: at ild's first step.
  RunSummary b1 = run_with_flag(f.root / "b", false, 1);
  EXPECT_TRUE(b1.stopped);
  EXPECT_TRUE(b1.finished_stages.empty());
  EXPECT_EQ(nlohmann::json::parse(read_text_file(f.root / "b" / "ild" / "train_state" / "state.json").value_or_throw())
                .at("step")
                .get<int64_t>(),
            1);
  // At ild's last step (its 2nd after resuming): ild finishes, kd does not start.
  RunSummary b2 = run_with_flag(f.root / "b", true, 2);
  EXPECT_TRUE(b2.stopped);
  EXPECT_EQ(b2.finished_stages, (std::vector<std::string>{"ild"}));
  EXPECT_FALSE(fs::exists(f.root / "b" / "kd"));
  // Before any work: nothing runs.
  std::atomic<bool> early{true};
  RunSummary b3 = f.run(f.root / "b", true, std::nullopt, {}, &early);
  EXPECT_TRUE(b3.stopped);
  EXPECT_FALSE(fs::exists(f.root / "b" / "kd"));
  RunSummary b4 = f.run(f.root / "b", true, std::nullopt);
  EXPECT_EQ(b4.finished_stages, (std::vector<std::string>{"kd"}));
  expect_same_params(f.root / "a" / "ild" / "final", f.root / "b" / "ild" / "final");
  expect_same_params(f.root / "a" / "kd" / "final", f.root / "b" / "kd" / "final");
}

// --stage: a stage run on its own (as two independent Stage-I stages run side by side) gives what the whole run
// gives; a stage whose input stage is not done, or an unknown name, is refused before any work.
TEST(Resume, OnlyStagesRunAloneEqualTheWholeRun) {
  Fixture f("only");
  f.run(f.root / "a", false, std::nullopt);
  auto refused = [&](std::vector<std::string> only, const std::string& what) {
    TrainOptions o;
    o.out = f.root / "b";
    o.progress = false;
    o.only_stages = std::move(only);
    auto st = run_recipe(f.recipe, o);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().find(what), std::string::npos) << st.error();
  };
  refused({"kd"}, "takes a model from stage ild");
  refused({"nope"}, "--stage nope: no such stage (the recipe has ild, kd)");
  EXPECT_EQ(f.run(f.root / "b", false, std::nullopt, {"ild"}).finished_stages, (std::vector<std::string>{"ild"}));
  EXPECT_FALSE(fs::exists(f.root / "b" / "kd"));
  refused({"ild"}, "exists and is not empty");  // ild/ is there: only --resume may touch it (it is done: skipped)
  EXPECT_EQ(f.run(f.root / "b", false, std::nullopt, {"kd"}).finished_stages, (std::vector<std::string>{"kd"}));
  expect_same_params(f.root / "a" / "kd" / "final", f.root / "b" / "kd" / "final");
}

TEST(Resume, NonEmptyOutWithoutResumeIsRefused) {
  Fixture f("refuse");
  fs::create_directories(f.root / "out" / "something");
  TrainOptions o;
  o.out = f.root / "out";
  o.progress = false;
  auto st = run_recipe(f.recipe, o);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().find("--resume"), std::string::npos) << st.error();
}

}  // namespace
}  // namespace hylo::train
