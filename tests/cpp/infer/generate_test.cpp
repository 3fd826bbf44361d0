// Generation loop tests: the stop-string filter on hand-made streams, and greedy generation with the KV cache
// (one prefill, then one token per step) equal to greedy decoding by full stateless forwards on a random model.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <map>
#include <string>
#include <vector>

#include "hylo/infer/generate.h"

namespace hylo {
namespace {

std::string feed(StopStringFilter& f, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) {
    out += f.push(p);
    if (f.stopped()) return out;
  }
  return out + f.flush();
}

TEST(StopStringFilter, CutsBeforeTheStopStringAcrossPieces) {
  StopStringFilter f({"</end>"});
  EXPECT_EQ(f.push("Hello <"), "Hello ");  // "<" could begin the stop string: held back
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.push("/en"), "");
  EXPECT_EQ(f.push("d> trailing"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("more"), "");
  EXPECT_EQ(f.flush(), "");
}

TEST(StopStringFilter, ReleasesHeldTextThatTurnsOutNotToStop) {
  StopStringFilter f({"</end>"});
  EXPECT_EQ(f.push("a </en"), "a ");
  EXPECT_EQ(f.push("x"), "</enx");
  EXPECT_EQ(f.push("<"), "");
  EXPECT_EQ(f.flush(), "<");
  EXPECT_FALSE(f.stopped());
}

TEST(StopStringFilter, EarliestOfSeveralStopsWins) {
  StopStringFilter f({"World", "lo W", "\n\n"});
  EXPECT_EQ(feed(f, {"Hel", "lo World\n\nx"}), "Hel");
  StopStringFilter g({"\n\n", "xyz"});
  EXPECT_EQ(feed(g, {"one\n", "\ntwo"}), "one");
  StopStringFilter none({});
  EXPECT_EQ(feed(none, {"a", "b"}), "ab");
  StopStringFilter empty_ignored({""});
  EXPECT_EQ(feed(empty_ignored, {"a", "b"}), "ab");
}

TEST(StopStringFilter, EveryPieceSplitGivesTheSameText) {
  const std::string text = "The answer is 42.\nQuestion: what?";
  for (size_t a = 0; a <= text.size(); ++a)
    for (size_t b = a; b <= text.size(); b += 3) {
      StopStringFilter f({"\nQuestion:"});
      EXPECT_EQ(feed(f, {text.substr(0, a), text.substr(a, b - a), text.substr(b)}), "The answer is 42.")
          << a << " " << b;
    }
}

ModelConfig tiny_llama() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 128;
  for (int i = 0; i < 2; ++i) {
    LayerSpec l;
    l.mixer = MixerKind::kGqa;
    l.gqa.num_heads = 4;
    l.gqa.num_kv_heads = 2;
    l.gqa.head_dim = 8;
    l.intermediate_size = 48;
    c.layers.push_back(l);
  }
  return c;
}

TEST(Generate, GreedyWithKvCacheEqualsFullRecomputation) {
  auto model = CausalLM::random(tiny_llama(), 5);
  const std::vector<int64_t> prompt = {1, 17, 40, 3, 88, 12, 60};
  GenerateOptions opts;
  opts.sampling.temperature = 0.0;
  opts.max_new_tokens = 20;
  const GenerateResult r = generate(*model, nullptr, prompt, opts);
  ASSERT_EQ(r.ids.size(), 20u);
  EXPECT_EQ(r.stop_reason, StopReason::kLength);
  EXPECT_EQ(r.prompt_tokens, 7);
  EXPECT_EQ(r.decode_steps, 19);

  // Reference: the argmax of a stateless forward over the whole sequence so far, every step.
  std::vector<int64_t> seq = prompt;
  for (int step = 0; step < 20; ++step) {
    at::Tensor ids = at::tensor(seq, at::kLong).view({1, -1});   // [1, T]
    at::Tensor logits = model->forward(ids);                      // [1, T, V]
    seq.push_back(logits[0][-1].argmax().item<int64_t>());
  }
  EXPECT_EQ(r.ids, std::vector<int64_t>(seq.begin() + 7, seq.end()));
}

TEST(Generate, StopsAtEosAndIncludesIt) {
  auto model = CausalLM::random(tiny_llama(), 5);
  const std::vector<int64_t> prompt = {1, 17, 40, 3, 88, 12, 60};
  GenerateOptions opts;
  opts.sampling.temperature = 0.0;
  opts.max_new_tokens = 20;
  const auto full = generate(*model, nullptr, prompt, opts).ids;
  opts.extra_eos_ids = {full[5]};
  const auto r = generate(*model, nullptr, prompt, opts);
  EXPECT_EQ(r.stop_reason, StopReason::kEos);
  // Generation ends at the first occurrence of that id.
  size_t first = 0;
  while (full[first] != full[5]) ++first;
  EXPECT_EQ(r.ids, std::vector<int64_t>(full.begin(), full.begin() + first + 1));
}

TEST(Generate, SeededSamplingIsReproducible) {
  auto model = CausalLM::random(tiny_llama(), 9);
  const std::vector<int64_t> prompt = {4, 5, 6};
  GenerateOptions opts;
  opts.sampling = SamplingParams{.temperature = 1.0, .top_k = 30, .top_p = 0.95, .seed = 3};
  opts.max_new_tokens = 24;
  const auto a = generate(*model, nullptr, prompt, opts).ids;
  EXPECT_EQ(a, generate(*model, nullptr, prompt, opts).ids);
  opts.sampling.seed = 4;
  EXPECT_NE(a, generate(*model, nullptr, prompt, opts).ids);
}

TEST(Generate, CudaGreedyEqualsCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  auto cpu = CausalLM::random(tiny_llama(), 5);
  LoadOptions on_cuda;
  on_cuda.device = at::Device(at::kCUDA);
  auto cuda = CausalLM::random(tiny_llama(), 5, on_cuda);
  std::map<std::string, at::Tensor> weights;
  cpu->visit_parameters([&](const std::string& name, at::Tensor& t) { weights[name] = t; });
  cuda->visit_parameters([&](const std::string& name, at::Tensor& t) {
    c10::NoGradGuard no_grad;
    t.copy_(weights.at(name));
  });
  const std::vector<int64_t> prompt = {1, 17, 40, 3, 88, 12, 60};
  GenerateOptions opts;
  opts.sampling.temperature = 0.0;
  opts.max_new_tokens = 24;
  EXPECT_EQ(generate(*cuda, nullptr, prompt, opts).ids, generate(*cpu, nullptr, prompt, opts).ids);
}

TEST(Generate, RejectsBadInput) {
  auto model = CausalLM::random(tiny_llama(), 1);
  GenerateOptions opts;
  EXPECT_THROW(generate(*model, nullptr, std::vector<int64_t>{}, opts), std::exception);
  EXPECT_THROW(generate(*model, nullptr, std::vector<int64_t>{97}, opts), std::exception);
  opts.stop_strings = {"x"};
  EXPECT_THROW(generate(*model, nullptr, std::vector<int64_t>{1}, opts), std::exception);
}

}  // namespace
}  // namespace hylo
