// Recipe parsing: a complete recipe parses with its values; each bad recipe fails before any work with a
// message naming the file and the field; the shipped recipes (recipes/train/*.yaml) all parse.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "hylo/train/recipe.h"

namespace hylo::train {
namespace {

namespace fs = std::filesystem;

const char* kGood = R"(
name: test
defaults: {teacher: /models/teacher, data: /data/ds, seq_len: 64, batch: 8, micro_batch: 4, tokens: 5120}
stages:
  - {name: ild-mla, kind: ild, student: stage1-mla, train: mixers, ild: {hidden_weight: 1, mixer_weight: 0.5}}
  - {name: ild-linear, kind: ild, student: stage1-linear}
  - {name: asm, kind: assemble, from_mla: {stage: ild-mla}, from_linear: {stage: ild-linear}, plan: plan.yaml}
  - name: kd
    kind: kd
    student: {stage: asm}
    teacher: ${HYLO_RECIPE_TEST_T}/big
    lr: 6.0e-5
    min_lr: 0
    warmup_ratio: 0.02
    adamw: {beta1: 0.9, beta2: 0.999, eps: 1.0e-8, weight_decay: 0.01}
    grad_clip: 0.5
    kd: {temperature: 2, ce_weight: 0.1, vocab_tile: 4096, seq_tile: 1024}
    mla_yarn: {factor: 4, original_max_position_embeddings: 2048}
    activation_checkpointing: false
    precision: fp32
    checkpoint_every: 7
    eval_every: 3
    log_every: 1
    seed: 9
)";

Result<Recipe> parse(const std::string& text) { return parse_recipe(text, "r.yaml", "/base"); }

TEST(Recipe, ParsesACompleteRecipe) {
  ::setenv("HYLO_RECIPE_TEST_T", "/teachers", 1);
  auto r = parse(kGood);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->stages.size(), 4u);
  const Stage& ild = r->stages[0];
  EXPECT_EQ(ild.kind, StageKind::kIld);
  EXPECT_EQ(ild.student.path, fs::path("/base/stage1-mla"));
  EXPECT_EQ(ild.teacher.path, fs::path("/models/teacher"));
  EXPECT_TRUE(ild.train_mixers_only);
  EXPECT_EQ(ild.ild.mixer, 0.5);
  EXPECT_EQ(ild.lr, 2e-4);  // the ILD default (HYLO.md 4.1)
  EXPECT_EQ(ild.micro_batch, 4);
  const Stage& a = r->stages[2];
  EXPECT_EQ(a.kind, StageKind::kAssemble);
  EXPECT_EQ(a.from_mla.stage, "ild-mla");
  EXPECT_EQ(a.plan, fs::path("/base/plan.yaml"));
  const Stage& kd = r->stages[3];
  EXPECT_EQ(kd.student.stage, "asm");
  EXPECT_EQ(kd.teacher.path, fs::path("/teachers/big"));
  EXPECT_EQ(kd.lr, 6e-5);
  EXPECT_EQ(kd.adamw.beta2, 0.999);
  EXPECT_EQ(kd.kd.temperature, 2.0);
  EXPECT_EQ(kd.kd.vocab_tile, 4096);
  EXPECT_EQ(*kd.mla_yarn_factor, 4.0);
  EXPECT_EQ(*kd.mla_original_max_position_embeddings, 2048);
  EXPECT_FALSE(kd.activation_checkpointing);
  EXPECT_EQ(kd.precision, at::kFloat);
  EXPECT_EQ(kd.seed, 9u);
  EXPECT_EQ(stage_steps(kd), 10);  // 5120 / (8 x 64)
}

// Replaces the first occurrence of `from` in the good recipe.
std::string good_with(const std::string& from, const std::string& to) {
  std::string s = kGood;
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

void expect_error(const std::string& text, const std::string& field, const std::string& what = "") {
  ::setenv("HYLO_RECIPE_TEST_T", "/teachers", 1);
  auto r = parse(text);
  ASSERT_FALSE(r.ok()) << "accepted a recipe with a bad " << field;
  EXPECT_NE(r.error().find("r.yaml"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find(field), std::string::npos) << r.error();
  if (!what.empty()) EXPECT_NE(r.error().find(what), std::string::npos) << r.error();
}

TEST(Recipe, BadRecipesFailNamingFileAndField) {
  expect_error(good_with("grad_clip: 0.5", "grad_clipping: 0.5"), "stages[3].grad_clipping", "unknown key");
  expect_error(good_with("beta2: 0.999", "beta2: 1.5"), "stages[3].adamw.beta2", "must be in");
  expect_error(good_with("micro_batch: 4", "micro_batch: 3"), "stages[0].micro_batch", "not a multiple");
  expect_error(good_with("kind: ild, student: stage1-mla", "kind: distill, student: stage1-mla"), "stages[0].kind");
  expect_error(good_with("from_mla: {stage: ild-mla}", "from_mla: {stage: kd}"), "stages[2].from_mla.stage",
               "not an earlier stage");
  expect_error(good_with("tokens: 5120", "tokens: 100"), "stages[0].tokens", "less than one step");
  expect_error(good_with("{factor: 4, original_max_position_embeddings: 2048}", "{factor: 4}"),
               "stages[3].mla_yarn.original_max_position_embeddings");
  expect_error(good_with("precision: fp32", "precision: fp8"), "stages[3].precision");
  expect_error(good_with("temperature: 2", "temperature: 0"), "stages[3].kd.temperature");
  expect_error(good_with("lr: 6.0e-5", "lr: fast"), "stages[3].lr", "expected a number");
  expect_error(good_with("seed: 9", "seed: 9\n    reset_state_at_doc_start: true"), "stages[3].reset_state_at_doc_start",
               "not supported");
  expect_error(good_with("name: ild-linear", "name: ild-mla"), "stages[1].name", "used twice");
  expect_error(good_with("${HYLO_RECIPE_TEST_T}", "${HYLO_RECIPE_TEST_UNSET_VAR}"), "stages[3].teacher",
               "HYLO_RECIPE_TEST_UNSET_VAR");
  expect_error(good_with("min_lr: 0", "min_lr: 1"), "stages[3].min_lr", "above lr");
  expect_error(good_with("defaults: {", "defaults: {colour: red, "), "colour", "unknown key");
  expect_error(good_with("plan: plan.yaml", "plan: plan.yaml, lr: 1"), "stages[2].lr", "unknown key");
  // No teacher anywhere: drop it from the defaults.
  expect_error(good_with("teacher: /models/teacher, ", ""), "stages[0].teacher", "missing key");
}

TEST(Recipe, MissingPathsFailBeforeWork) {
  ::setenv("HYLO_RECIPE_TEST_T", "/teachers", 1);
  auto r = parse(kGood);
  ASSERT_TRUE(r.ok()) << r.error();
  auto st = check_recipe_paths(*r);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().find("r.yaml: stages[0].student"), std::string::npos) << st.error();
  EXPECT_NE(st.error().find("/base/stage1-mla"), std::string::npos) << st.error();
}

TEST(Recipe, ShippedRecipesParse) {
  for (const char* var : {"HYLO_MODELS", "HYLO_TRAIN_DATA", "HYLO_TEACHER_GGUF", "HYLO_RUN", "HYLO_DEMO_STUDENT", "HYLO_DEMO_DATA"}) ::setenv(var, "/x", 0);
  const fs::path dir = fs::path(HYLO_SOURCE_DIR) / "recipes" / "train";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    auto r = load_recipe(e.path());
    EXPECT_TRUE(r.ok()) << r.error();
    ++n;
  }
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace hylo::train
