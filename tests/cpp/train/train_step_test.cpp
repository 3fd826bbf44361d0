// The trainer's step functions on tiny random models: KD is exactly zero (value and every gradient) when the
// student is the teacher; activation checkpointing gives the gradients of the plain backward; ILD and KD losses
// fall under AdamW on a fixed batch; the schedule and clipping do what they say.
#include <gtest/gtest.h>

#include <cfloat>
#include <map>

#include "hylo/model/causal_lm.h"
#include "hylo/train/adamw.h"
#include "hylo/train/losses.h"
#include "hylo/train/trainer.h"
#include "tiny_models.h"

namespace hylo::train {
namespace {

PackedBatch fixed_batch(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  PackedBatch batch;
  batch.ids = at::randint(0, vocab, {b, t}, g, at::TensorOptions().dtype(at::kLong));
  batch.loss_mask = at::ones({b, t}, at::kFloat);
  batch.loss_mask.narrow(1, 0, 3).zero_();  // a masked prompt
  batch.doc_start = at::zeros({b, t}, at::kBool);
  return batch;
}

Stage kd_stage() {
  Stage st;
  st.kind = StageKind::kKd;
  st.kd.vocab_tile = 40;  // 101 = 2 x 40 + 21
  st.kd.seq_tile = 7;
  st.precision = at::kFloat;
  return st;
}

Stage ild_stage() {
  Stage st = kd_stage();
  st.kind = StageKind::kIld;
  return st;
}

double max_grad(const std::vector<NamedParam>& params) {
  double m = 0;
  for (const auto& p : params)
    if (p.tensor.grad().defined()) m = std::max(m, p.tensor.grad().abs().max().item<double>());
  return m;
}

void make_trainable(std::vector<NamedParam>& params) {
  for (auto& p : params) p.tensor.requires_grad_(true);
}

TEST(TrainStep, KdIsZeroWhenStudentIsTeacher) {
  auto teacher = CausalLM::random(testing::tiny_student_config(), 11);
  auto student = CausalLM::random(testing::tiny_student_config(), 11);
  Stage st = kd_stage();
  auto params = trainable_parameters(*student, st);
  make_trainable(params);
  PackedBatch b = fixed_batch(2, 19, 101, 1);
  for (bool ckpt : {true, false}) {
    st.activation_checkpointing = ckpt;
    const double loss = kd_forward_backward(*student, *teacher, b, counted_tokens(st, b), st, true);
    EXPECT_EQ(loss, 0.0);
    EXPECT_EQ(max_grad(params), 0.0);
    for (auto& p : params) p.tensor.mutable_grad() = at::Tensor();
  }
}

TEST(TrainStep, ActivationCheckpointingGivesThePlainGradients) {
  auto teacher = CausalLM::random(testing::tiny_teacher_config(), 1);
  auto student = CausalLM::random(testing::tiny_student_config(), 2);
  PackedBatch b = fixed_batch(2, 13, 101, 3);
  std::vector<std::vector<at::Tensor>> grads;
  double losses[2];
  for (int k = 0; k < 2; ++k) {
    Stage st = kd_stage();
    st.activation_checkpointing = k == 0;
    auto params = trainable_parameters(*student, st);
    make_trainable(params);
    losses[k] = kd_forward_backward(*student, *teacher, b, counted_tokens(st, b), st, true);
    grads.emplace_back();
    for (auto& p : params) {
      ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
      grads.back().push_back(p.tensor.grad().clone());
      p.tensor.mutable_grad() = at::Tensor();
    }
  }
  EXPECT_EQ(losses[0], losses[1]);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  // The recomputation repeats the forward's operations exactly; only the order of gradient accumulation into a
  // parameter used by several ops may differ, so allow fp32 rounding of the gradient's scale.
  for (size_t i = 0; i < grads[0].size(); ++i) {
    const double scale = grads[1][i].abs().max().item<double>();
    EXPECT_LE((grads[0][i] - grads[1][i]).abs().max().item<double>(), 16 * FLT_EPSILON * scale + 1e-12) << i;
  }
}

TEST(TrainStep, CheckpointingWithFrozenEmbeddingStillTrainsMixers) {
  auto teacher = CausalLM::random(testing::tiny_teacher_config(), 1);
  auto student = CausalLM::random(testing::tiny_student_config(), 2);
  Stage st = kd_stage();
  st.train_mixers_only = true;
  auto params = trainable_parameters(*student, st);
  make_trainable(params);
  for (const auto& p : params) EXPECT_EQ(p.name.find("mlp"), std::string::npos) << p.name;
  PackedBatch b = fixed_batch(1, 9, 101, 5);
  kd_forward_backward(*student, *teacher, b, counted_tokens(st, b), st, true);
  for (const auto& p : params) EXPECT_TRUE(p.tensor.grad().defined()) << p.name;
}

// A few AdamW steps on one fixed batch: the loss must fall clearly (to below 80% of the start).
template <class Step>
void expect_loss_falls(CausalLM& student, const Stage& st, Step step) {
  auto params = trainable_parameters(student, st);
  make_trainable(params);
  AdamWOptions ao;
  AdamW opt(params, ao);
  double first = 0, last = 0;
  for (int i = 0; i < 12; ++i) {
    const double loss = step();
    if (i == 0) first = loss;
    last = loss;
    clip_grad_norm(params, 1.0);
    opt.step(3e-3);
    opt.zero_grad();
  }
  EXPECT_GT(first, 0.0);
  EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
}

TEST(TrainStep, KdLossFalls) {
  auto teacher = CausalLM::random(testing::tiny_teacher_config(), 1);
  auto student = CausalLM::random(testing::tiny_student_config(), 2);
  Stage st = kd_stage();
  PackedBatch b = fixed_batch(2, 16, 101, 4);
  expect_loss_falls(*student, st, [&] { return kd_forward_backward(*student, *teacher, b, counted_tokens(st, b), st, true); });
}

TEST(TrainStep, IldLossFalls) {
  auto teacher = CausalLM::random(testing::tiny_teacher_config(), 1);
  auto student = CausalLM::random(testing::tiny_student_config(), 2);
  Stage st = ild_stage();
  PackedBatch b = fixed_batch(2, 16, 101, 4);
  expect_loss_falls(*student, st, [&] { return ild_forward_backward(*student, *teacher, b, counted_tokens(st, b), st, true); });
}

TEST(TrainStep, IldIsZeroWhenStudentIsTeacher) {
  auto teacher = CausalLM::random(testing::tiny_student_config(), 5);
  auto student = CausalLM::random(testing::tiny_student_config(), 5);
  Stage st = ild_stage();
  auto params = trainable_parameters(*student, st);
  make_trainable(params);
  PackedBatch b = fixed_batch(2, 11, 101, 2);
  EXPECT_EQ(ild_forward_backward(*student, *teacher, b, counted_tokens(st, b), st, true), 0.0);
  // The gradient of an un-squared norm at zero is taken as zero (a subgradient), never NaN.
  EXPECT_EQ(max_grad(params), 0.0);
}

TEST(TrainStep, IldTrainsBlocksOnly) {
  auto student = CausalLM::random(testing::tiny_student_config(), 2);
  Stage st = ild_stage();
  for (const auto& p : trainable_parameters(*student, st)) EXPECT_EQ(p.name.rfind("model.layers.", 0), 0u) << p.name;
}

TEST(Schedule, WarmupThenCosine) {
  Stage st;
  st.lr = 1e-3;
  st.min_lr = 1e-4;
  st.warmup_ratio = 0.1;
  const int64_t total = 100;  // 10 warmup steps
  EXPECT_DOUBLE_EQ(learning_rate(st, 0, total), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(st, 9, total), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(st, 10, total), 1e-3);
  EXPECT_NEAR(learning_rate(st, 55, total), 0.5 * (1e-3 + 1e-4), 1e-12);
  EXPECT_GT(learning_rate(st, 99, total), 1e-4);
  EXPECT_LT(learning_rate(st, 99, total), 1.01e-4);
}

TEST(ClipGradNorm, ScalesToTheLimit) {
  at::Tensor a = at::zeros({2, 2}).requires_grad_(true), b = at::zeros({3}).requires_grad_(true);
  a.mutable_grad() = at::full({2, 2}, 3.0);  // norm 6
  b.mutable_grad() = at::full({3}, 0.0);
  std::vector<NamedParam> ps = {{"a", a}, {"b", b}};
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 2.0), 6.0);
  EXPECT_NEAR(a.grad().norm().item<double>(), 2.0, 1e-5);
  EXPECT_NEAR(clip_grad_norm(ps, 0.0), 2.0, 1e-5);  // 0: no clipping, still reports
}

}  // namespace
}  // namespace hylo::train

namespace hylo::train {
namespace {

TEST(TrainStep, MlaYarnSetsTheMlaRopeAndKeepsParameters) {
  auto student = CausalLM::random(testing::tiny_student_config(), 2);
  std::map<std::string, at::Tensor> before;
  student->visit_parameters([&](const std::string& n, at::Tensor& t) { before[n] = t.clone(); });
  auto y = with_mla_yarn(std::move(student), 4.0, 64);
  const auto& l0 = y->config().layers[0];
  ASSERT_EQ(l0.mixer, MixerKind::kMla);
  EXPECT_EQ(l0.mla.rope.type, "yarn");
  EXPECT_EQ(l0.mla.rope.factor, 4.0);
  EXPECT_EQ(l0.mla.rope.original_max_position_embeddings, 64);
  EXPECT_EQ(y->config().layers[1].mixer, MixerKind::kGdn);
  size_t n = 0;
  y->visit_parameters([&](const std::string& name, at::Tensor& t) {
    EXPECT_TRUE(at::equal(t, before.at(name))) << name;
    ++n;
  });
  EXPECT_EQ(n, before.size());
  // The model still runs.
  EXPECT_EQ(y->forward(at::zeros({1, 5}, at::kLong)).size(2), 101);
}

}  // namespace
}  // namespace hylo::train
