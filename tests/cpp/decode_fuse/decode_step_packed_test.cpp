// The packed input projections (ops/packed_linear.h) inside the decode step: a GDN layer, an MLA layer, the
// SwiGLU MLP and a whole hybrid model give the same outputs with packing on (one GEMM per input) and off (the
// separate at::linear calls, the reference); a parameter changed in place is used by the very next packed step;
// and the GEMMs per decode step drop by the number of projections merged.
#include <gtest/gtest.h>

#include <ATen/record_function.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <iostream>
#include <limits>
#include <map>
#include <string>
#include <utility>

#include "hylo/model/causal_lm.h"
#include "hylo/model/mixers/gated_deltanet.h"
#include "hylo/model/mixers/mla.h"
#include "hylo/ops/packed_linear.h"
#include "hylo/ops/swiglu.h"
#include "shared/tiny_models.h"

namespace hylo {
namespace {

// Packing switched on or off for one scope (the process-wide switch is restored after).
struct Packing {
  bool was;
  explicit Packing(bool on) : was(ops::PackedLinear::enabled()) { ops::PackedLinear::set_enabled(on); }
  ~Packing() { ops::PackedLinear::set_enabled(was); }
};

// Tolerance of a packed-vs-separate comparison. The packed GEMM computes each output from the same D products as
// the separate GEMM, so any difference is reduction-order rounding: each projection within 2 gamma_D of its
// magnitude (Higham 3.1), carried through a layer whose other ops run the same code on both sides. On this CPU
// the rows are bitwise equal (the tests assert that exactly when `exact`), but BLAS builds may split the reduction
// differently for different output widths, so the general bound is D u times a few (the layer's gain on O(1)
// activations) relative to the output's scale.
double tolerance(const at::Tensor& ref, int64_t D) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  return 8.0 * D * u * (ref.abs().max().item<double>() + 1.0);
}

void expect_same(const at::Tensor& packed, const at::Tensor& separate, int64_t D, const std::string& what) {
  ASSERT_EQ(packed.sizes(), separate.sizes()) << what;
  const double diff = (packed.to(at::kDouble) - separate.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(diff, tolerance(separate.to(at::kDouble), D)) << what;
  ::testing::Test::RecordProperty(what, std::to_string(diff));
}

// A mixer's outputs for a prefill chunk `prompt` [B, T, D] (positions 0..T-1) and then one decode token `step`
// [B, 1, D] (position T), both into `state`, with packing on or off for the two calls.
std::pair<at::Tensor, at::Tensor> prefill_then_step(Mixer& mixer, bool packed, const at::Tensor& prompt,
                                                    const at::Tensor& step, MixerState* state) {
  Packing scope(packed);
  const int64_t T = prompt.size(1);
  at::Tensor y_prefill = mixer.forward(prompt, at::arange(T, at::kLong), state);
  at::Tensor y_step = mixer.forward(step, at::full({1}, T, at::kLong), state);
  return {y_prefill, y_step};
}

TEST(DecodeStepPacked, GdnLayerEqualsSeparateProjections) {
  ModelConfig config = mixed_config();
  auto model = CausalLM::random(config, /*seed=*/5);
  Mixer& gdn = model->mixer(2);
  ASSERT_EQ(gdn.kind(), MixerKind::kGdn);
  const int64_t B = 2, D = config.hidden_size;
  at::manual_seed(3);
  at::Tensor prompt = at::randn({B, 5, D}), step = at::randn({B, 1, D});
  auto st_packed = gdn.new_state(B, 16, model->options()), st_sep = gdn.new_state(B, 16, model->options());
  c10::InferenceMode inference;  // the packed path is for inference only
  // The prefill chunk runs the packed GEMM over 5 rows, the decode step over 1.
  auto [yp0, yp] = prefill_then_step(gdn, /*packed=*/true, prompt, step, st_packed.get());
  auto [ys0, ys] = prefill_then_step(gdn, /*packed=*/false, prompt, step, st_sep.get());
  expect_same(yp0, ys0, D, "gdn prefill");
  expect_same(yp, ys, D, "gdn decode");
  auto& a = dynamic_cast<GatedDeltaNetState&>(*st_packed);
  auto& b = dynamic_cast<GatedDeltaNetState&>(*st_sep);
  expect_same(a.recurrent, b.recurrent, D, "gdn recurrent state");
  expect_same(a.conv_v, b.conv_v, D, "gdn conv_v state");
}

TEST(DecodeStepPacked, MlaLayerEqualsSeparateProjections) {
  ModelConfig config = mixed_config();
  for (int64_t q_rank : {16, 0}) {  // low-rank queries (q_a with kv_a) and full-rank (q_proj with kv_a)
    config.layers[1].mla = tiny_mla(q_rank, /*kv_rank=*/12);
    auto model = CausalLM::random(config, /*seed=*/7);
    Mixer& mla = model->mixer(1);
    ASSERT_EQ(mla.kind(), MixerKind::kMla);
    const int64_t B = 2, D = config.hidden_size;
    at::manual_seed(4);
    at::Tensor prompt = at::randn({B, 6, D}), step = at::randn({B, 1, D});
    auto st_packed = mla.new_state(B, 16, model->options()), st_sep = mla.new_state(B, 16, model->options());
    c10::InferenceMode inference;  // the packed path is for inference only
    auto [yp0, yp] = prefill_then_step(mla, /*packed=*/true, prompt, step, st_packed.get());
    auto [ys0, ys] = prefill_then_step(mla, /*packed=*/false, prompt, step, st_sep.get());
    const std::string tag = "mla q_rank " + std::to_string(q_rank);
    expect_same(yp0, ys0, D, tag + " prefill");
    expect_same(yp, ys, D, tag + " decode");
    expect_same(dynamic_cast<MlaState&>(*st_packed).cache(), dynamic_cast<MlaState&>(*st_sep).cache(), D,
                tag + " latent cache");
  }
}

TEST(DecodeStepPacked, SwigluMlpEqualsSeparateProjections) {
  at::manual_seed(8);
  const int64_t D = 48, F = 64;
  at::Tensor x = at::randn({1, 3, D});
  at::Tensor gw = 0.1 * at::randn({F, D}), uw = 0.1 * at::randn({F, D}), dw = 0.1 * at::randn({D, F});
  at::Tensor gb = at::randn({F}), ub = at::randn({F}), db = at::randn({D});
  ops::PackedLinear packed;
  c10::InferenceMode inference;
  for (bool bias : {false, true}) {
    const at::Tensor none;
    at::Tensor want = ops::swiglu_mlp(x, gw, uw, dw, bias ? gb : none, bias ? ub : none, bias ? db : none);
    at::Tensor got = ops::swiglu_mlp(packed, x, gw, uw, dw, bias ? gb : none, bias ? ub : none, bias ? db : none);
    expect_same(got, want, D, bias ? "mlp with bias" : "mlp");
  }
}

// Whole-model decode steps (every block's MLP, the MLA and GDN layers packed) against the separate projections,
// then one parameter of each packed group is changed in place and the next packed step must see it.
TEST(DecodeStepPacked, ModelStepsEqualSeparateAndFollowInPlaceUpdates) {
  ModelConfig config = mixed_config();
  auto packed_model = CausalLM::random(config, /*seed=*/9);
  auto sep_model = CausalLM::random(config, /*seed=*/9);
  const int64_t D = config.hidden_size;
  at::Tensor ids = at::randint(0, config.vocab_size, {1, 7}, at::kLong);
  auto sp = packed_model->new_state(1, 32), ss = sep_model->new_state(1, 32);
  c10::InferenceMode inference;  // the packed path is for inference only
  auto step = [&](const at::Tensor& tok, const std::string& what) {
    at::Tensor lp, ls;
    {
      Packing on(true);
      lp = packed_model->forward(tok, sp.get());
    }
    {
      Packing off(false);
      ls = sep_model->forward(tok, ss.get());
    }
    expect_same(lp, ls, D, what);
    return lp;
  };
  step(ids, "prefill logits");
  at::Tensor before = step(ids.narrow(1, 6, 1), "decode logits");
  // Change one weight per packed group in place in both models (an optimiser step writes parameters in place).
  for (auto* m : {packed_model.get(), sep_model.get()}) {
    m->visit_parameters([](const std::string& name, at::Tensor& t) {
      if (name.ends_with("gdn.v_proj.weight") || name.ends_with("mla.kv_a_proj_with_mqa.weight") ||
          name.ends_with("mlp.up_proj.weight"))
        t.mul_(-1.5);
    });
  }
  at::Tensor after = step(ids.narrow(1, 5, 1), "decode logits after an in-place update");
  // A stale packed copy would show: the same three calls on a model without the update differ by far more than
  // the tolerance, so the equality above holds only if the packed model used the new weights.
  auto stale_model = CausalLM::random(config, /*seed=*/9);
  auto st = stale_model->new_state(1, 32);
  stale_model->forward(ids, st.get());
  stale_model->forward(ids.narrow(1, 6, 1), st.get());
  at::Tensor stale = stale_model->forward(ids.narrow(1, 5, 1), st.get());
  EXPECT_GT((after - stale).abs().max().item<double>(), 100 * tolerance(after, D)) << "the update must matter";
  (void)before;
}

// GEMMs per decode step: counted as the aten::mm / addmm / bmm / baddbmm calls that one decode step of the whole
// model dispatches (each is one GEMM kernel on a GPU). Packing merges, per block, the MLP's gate and up (one fewer),
// per GDN layer q, k, v, a, b, g (five fewer), per MLA layer q_a and kv_a (one fewer).
std::atomic<int64_t> g_gemms{0};

int64_t gemms_of_decode_step(CausalLM& model, bool packing) {
  auto state = model.new_state(1, 16);
  c10::InferenceMode inference;  // the packed path is for inference only
  Packing p(packing);
  model.forward(at::tensor({3, 4, 5}, at::kLong).view({1, 3}), state.get());
  g_gemms = 0;
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback([](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
        const std::string name = fn.name();
        if (name == "aten::mm" || name == "aten::addmm" || name == "aten::bmm" || name == "aten::baddbmm") ++g_gemms;
        return nullptr;
      }).scopes({at::RecordScope::FUNCTION}));
  model.forward(at::full({1, 1}, 6, at::kLong), state.get());
  at::removeCallback(handle);
  return g_gemms;
}

TEST(DecodeStepPacked, FewerGemmsPerDecodeStep) {
  ModelConfig config = mixed_config();  // blocks: gqa, mla (low-rank q), gdn (with gate), mamba2
  auto model = CausalLM::random(config, /*seed=*/1);
  const int64_t separate = gemms_of_decode_step(*model, false), packed = gemms_of_decode_step(*model, true);
  const int64_t blocks = config.num_layers(), gdn_layers = 1, mla_layers = 1;
  RecordProperty("gemms_separate", std::to_string(separate));
  RecordProperty("gemms_packed", std::to_string(packed));
  std::cout << "GEMMs per decode step (tiny mixed model): separate " << separate << ", packed " << packed << "\n";
  EXPECT_EQ(separate - packed, blocks * 1 + gdn_layers * 5 + mla_layers * 1);
}

}  // namespace
}  // namespace hylo
