#include "hylo/train/data_generate.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <set>

#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/infer/generate.h"
#include "hylo/train/data_shuffle.h"

namespace hylo::train {

namespace fs = std::filesystem;

PromptCorpus tokenize_prompt_files(const tok::Tokenizer& tokenizer, const std::vector<fs::path>& files) {
  PromptCorpus corpus;
  for (const fs::path& f : files) {
    auto text = read_text_file(f);
    if (!text.ok()) throw Error("--prompts-from: " + text.error());
    corpus.files.push_back(tokenizer.encode(*text, /*add_special_tokens=*/false));
  }
  return corpus;
}

std::vector<std::vector<int32_t>> draw_prompts(const PromptCorpus& corpus, const TeacherSampleOptions& o) {
  if (o.min_prompt_tokens < 1 || o.max_prompt_tokens < o.min_prompt_tokens)
    throw Error("prompt lengths: need 1 <= min (" + std::to_string(o.min_prompt_tokens) + ") <= max (" +
                std::to_string(o.max_prompt_tokens) + ")");
  if (o.batch < 1) throw Error("generation batch must be >= 1, got " + std::to_string(o.batch));
  // Lengths (one per group) and starts (one per sample) come from separate streams, so that with a fixed length
  // the prompts do not depend on the batch size.
  uint64_t length_state = derive_seed(o.sampling.seed, kStreamPrompts);
  uint64_t state = derive_seed(o.sampling.seed, kStreamPrompts + 1);
  std::vector<std::vector<int32_t>> prompts;
  prompts.reserve(static_cast<size_t>(o.num_samples));
  int64_t length = 0;
  for (int64_t i = 0; i < o.num_samples; ++i) {
    if (i % o.batch == 0)
      length = o.min_prompt_tokens +
               static_cast<int64_t>(uniform_below(length_state, static_cast<uint64_t>(o.max_prompt_tokens - o.min_prompt_tokens + 1)));
    // Start positions that keep the slice inside one file, counted over all files.
    uint64_t starts = 0;
    for (const auto& f : corpus.files)
      starts += static_cast<int64_t>(f.size()) >= length ? f.size() - static_cast<size_t>(length) + 1 : 0;
    if (starts == 0)
      throw Error("--prompts-from: no prompt file has " + std::to_string(length) + " tokens for a prompt slice");
    uint64_t u = uniform_below(state, starts);
    for (const auto& f : corpus.files) {
      const uint64_t here = static_cast<int64_t>(f.size()) >= length ? f.size() - static_cast<size_t>(length) + 1 : 0;
      if (u < here) {
        prompts.emplace_back(f.begin() + static_cast<std::ptrdiff_t>(u), f.begin() + static_cast<std::ptrdiff_t>(u + length));
        break;
      }
      u -= here;
    }
  }
  return prompts;
}

namespace {

using Clock = std::chrono::steady_clock;

// Decodes rows of equal-length prompts together; returns each row's generated ids (EOS included, as generate()).
std::vector<std::vector<int64_t>> generate_batch(CausalLM& teacher, const std::vector<std::vector<int64_t>>& prompts,
                                                 const std::vector<uint64_t>& seeds, const TeacherSampleOptions& o,
                                                 const std::set<int64_t>& eos, ProgressBar* bar) {
  c10::InferenceMode inference_mode;
  const auto B = static_cast<int64_t>(prompts.size());
  const auto L = static_cast<int64_t>(prompts[0].size());
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(teacher.options().device());
  std::vector<Sampler> samplers;
  std::vector<std::vector<int64_t>> history(prompts), out(static_cast<size_t>(B));
  std::vector<int64_t> flat;
  for (int64_t b = 0; b < B; ++b) {
    SamplingParams p = o.sampling;
    p.seed = seeds[static_cast<size_t>(b)];
    samplers.emplace_back(p);
    flat.insert(flat.end(), prompts[static_cast<size_t>(b)].begin(), prompts[static_cast<size_t>(b)].end());
  }
  std::unique_ptr<ModelState> state = teacher.new_state(B, L + o.max_new_tokens);
  at::Tensor ids = at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({B, L}).to(long_options);  // [B, L]
  at::Tensor hidden = teacher.forward_hidden(ids, state.get());                                       // [B, L, D]
  at::Tensor logits = teacher.lm_head(hidden.select(1, L - 1));                                       // [B, V] fp32
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<int64_t> last(static_cast<size_t>(B), 0);
  // Without a repetition penalty (the only history-dependent processor) the processors run once on the whole
  // [B, V] block and the rows are drawn on the host in parallel: one device round trip per step instead of B.
  // Each row draws its uniform exactly as Sampler::next does, from an engine seeded like that row's Sampler, so
  // both paths choose the same tokens from the same logits (tested against one-at-a-time generation).
  const SamplingParams& sp = o.sampling;
  const bool block = sp.repetition_penalty == 1.0;
  std::vector<std::mt19937_64> engines;
  for (int64_t b = 0; b < B; ++b) engines.emplace_back(seeds[static_cast<size_t>(b)]);
  std::vector<int64_t> chosen(static_cast<size_t>(B), 0);
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    if (block) {
      at::Tensor x = logits.to(at::kFloat);  // [B, V] fp32
      if (sp.greedy()) {
        at::Tensor arg = x.argmax(-1).to(at::kCPU);  // [B]
        for (int64_t b = 0; b < B; ++b) chosen[static_cast<size_t>(b)] = arg[b].item<int64_t>();
      } else {
        if (sp.temperature != 1.0) x = x / sp.temperature;
        x = apply_min_p(apply_top_p(apply_top_k(x, sp.top_k), sp.top_p), sp.min_p);
        at::Tensor host = x.to(at::kCPU).contiguous();  // [B, V] fp32
        std::vector<double> u(static_cast<size_t>(B), 0.0);
        for (int64_t b = 0; b < B; ++b)
          if (!done[static_cast<size_t>(b)]) u[static_cast<size_t>(b)] = static_cast<double>(engines[static_cast<size_t>(b)]() >> 11) * 0x1.0p-53;
        at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
          for (int64_t b = begin; b < end; ++b)
            if (!done[static_cast<size_t>(b)]) chosen[static_cast<size_t>(b)] = sample_from_processed(host[b], u[static_cast<size_t>(b)]);
        });
      }
    }
    int64_t active = 0;
    for (int64_t b = 0; b < B; ++b) {
      const auto bi = static_cast<size_t>(b);
      if (done[bi]) continue;
      const int64_t next = block ? chosen[bi] : samplers[bi].next(logits[b], history[bi]);
      history[bi].push_back(next);
      out[bi].push_back(next);
      last[bi] = next;
      ++active;
      if (eos.count(next)) {
        done[bi] = true;
        if (bar) bar->advance(o.max_new_tokens - static_cast<int64_t>(out[bi].size()));  // unused budget
      }
    }
    if (bar) bar->advance(active);
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }) || step + 1 == o.max_new_tokens) break;
    at::Tensor step_ids = at::tensor(last, at::TensorOptions().dtype(at::kLong)).view({B, 1}).to(long_options);  // [B, 1]
    logits = teacher.forward(step_ids, state.get()).select(1, 0);                                             // [B, V]
  }
  return out;
}

}  // namespace

std::vector<Document> generate_teacher_documents(CausalLM& teacher, const tok::Tokenizer& tokenizer,
                                                 const DocConvention& conv, const PromptCorpus& corpus,
                                                 const TeacherSampleOptions& o, int32_t source,
                                                 GenerationStats* stats) {
  if (o.num_samples < 0) throw Error("--num-samples must be >= 0");
  if (o.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1, got " + std::to_string(o.max_new_tokens));
  o.sampling.validate();
  const std::vector<std::vector<int32_t>> prompts = draw_prompts(corpus, o);
  std::set<int64_t> eos(teacher.config().eos_token_ids.begin(), teacher.config().eos_token_ids.end());
  for (int32_t id : tokenizer.eos_ids()) eos.insert(id);

  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>("teacher samples", o.num_samples * o.max_new_tokens, "tok");
  GenerationStats st;
  const auto t0 = Clock::now();
  std::vector<Document> docs;
  for (int64_t g0 = 0; g0 < o.num_samples; g0 += o.batch) {
    const int64_t B = std::min(o.batch, o.num_samples - g0);
    std::vector<std::vector<int64_t>> group_prompts;
    std::vector<uint64_t> seeds;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> p;
      if (conv.bos_added && conv.bos_id) p.push_back(*conv.bos_id);
      const auto& slice = prompts[static_cast<size_t>(g0 + b)];
      p.insert(p.end(), slice.begin(), slice.end());
      group_prompts.push_back(std::move(p));
      seeds.push_back(derive_seed(o.sampling.seed, kStreamSampler + static_cast<uint64_t>(g0 + b)));
    }
    std::vector<std::vector<int64_t>> generated;
    if (o.batch == 1) {
      GenerateOptions go;
      go.sampling = o.sampling;
      go.sampling.seed = seeds[0];
      go.max_new_tokens = o.max_new_tokens;
      const GenerateResult r = generate(teacher, &tokenizer, group_prompts[0], go);
      generated.push_back(r.ids);
      if (bar) bar->advance(o.max_new_tokens);
    } else {
      generated = generate_batch(teacher, group_prompts, seeds, o, eos, bar.get());
    }
    for (int64_t b = 0; b < B; ++b) {
      const auto& p = group_prompts[static_cast<size_t>(b)];
      const auto& g = generated[static_cast<size_t>(b)];
      Document d;
      d.tokens.assign(p.begin(), p.end());
      d.tokens.insert(d.tokens.end(), g.begin(), g.end());
      if (o.mask_prompt) {
        d.mask.assign(p.size(), 0);
        d.mask.insert(d.mask.end(), g.size(), 1);
      }
      const bool ended = !g.empty() && eos.count(g.back());
      if (ended) ++st.eos_stops;
      if (!ended && conv.doc_end_id) {
        d.tokens.push_back(static_cast<uint32_t>(*conv.doc_end_id));
        if (o.mask_prompt) d.mask.push_back(0);  // the teacher did not end here: not a target
      }
      std::vector<int32_t> ids32(d.tokens.begin(), d.tokens.end());
      d.text = tokenizer.decode(ids32, /*skip_special_tokens=*/true);
      d.origin = DocumentOrigin{source, g0 + b, -1, -1, -1, -1};
      st.prompt_tokens += static_cast<int64_t>(p.size());
      st.generated_tokens += static_cast<int64_t>(g.size());
      docs.push_back(std::move(d));
    }
  }
  if (bar) bar->finish();
  st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stats) *stats = st;
  return docs;
}

}  // namespace hylo::train
