#include "hylo/train/data_generate.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/infer/engine/engine.h"
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

// The engine for `o`: `o.batch` sequences at once; on the CPU without a budget, exactly the pools `o.batch`
// sequences of `tokens_per_sequence` tokens need.
engine::EngineOptions teacher_engine_options(const CausalLM& teacher, const TeacherSampleOptions& o,
                                             int64_t tokens_per_sequence) {
  engine::EngineOptions e = o.engine;
  e.max_sequences = o.batch;
  e.max_step_tokens = std::max(e.max_step_tokens, o.batch);  // one decode token per running sequence fits a step
  if (e.memory_bytes == 0 && !teacher.options().device().is_cuda())
    e.memory_bytes = std::max<int64_t>(1, engine::pool_bytes_needed(teacher, e, tokens_per_sequence, o.batch));
  e.validate();
  return e;
}

Document teacher_document(const std::vector<int64_t>& prompt, const std::vector<int64_t>& generated, bool ended,
                          const DocConvention& conv, bool mask_prompt) {
  Document d;
  d.tokens.assign(prompt.begin(), prompt.end());
  d.tokens.insert(d.tokens.end(), generated.begin(), generated.end());
  if (mask_prompt) {
    d.mask.assign(prompt.size(), 0);
    d.mask.insert(d.mask.end(), generated.size(), 1);
  }
  if (!ended && conv.doc_end_id) {
    d.tokens.push_back(static_cast<uint32_t>(*conv.doc_end_id));
    if (mask_prompt) d.mask.push_back(0);  // the teacher did not end here: not a target
  }
  return d;
}

}  // namespace

std::vector<Document> generate_teacher_documents(CausalLM& teacher, const tok::Tokenizer& tokenizer,
                                                 const DocConvention& conv, const PromptCorpus& corpus,
                                                 const TeacherSampleOptions& o, int32_t source,
                                                 GenerationStats* stats) {
  if (o.num_samples < 0) throw Error("--num-samples must be >= 0");
  if (o.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (o.max_seconds < 0) throw Error("--gen-seconds must be >= 0 seconds, got " + std::to_string(o.max_seconds));
  o.sampling.validate();
  const std::vector<std::vector<int32_t>> slices = draw_prompts(corpus, o);
  std::set<int64_t> eos_set(teacher.config().eos_token_ids.begin(), teacher.config().eos_token_ids.end());
  for (int32_t id : tokenizer.eos_ids()) eos_set.insert(id);
  const std::vector<int64_t> eos(eos_set.begin(), eos_set.end());

  const auto n = static_cast<size_t>(o.num_samples);
  std::vector<std::vector<int64_t>> prompts(n);
  int64_t longest = 0;
  for (size_t i = 0; i < n; ++i) {
    if (conv.bos_added && conv.bos_id) prompts[i].push_back(*conv.bos_id);
    prompts[i].insert(prompts[i].end(), slices[i].begin(), slices[i].end());
    longest = std::max(longest, static_cast<int64_t>(prompts[i].size()));
  }

  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>("teacher samples", o.num_samples * o.max_new_tokens, "tok");
  GenerationStats st;
  const auto t0 = Clock::now();
  std::vector<Document> docs(n);
  if (n == 0) {
    if (bar) bar->finish();
    if (stats) *stats = st;
    return docs;
  }
  engine::Engine eng(teacher, teacher_engine_options(teacher, o, longest + o.max_new_tokens));
  // At most `batch` requests are in the engine: a model without recurrent layers has no state slots, and the
  // scheduler admits sequences while prompt pages are free, so queued requests would run beyond `batch` (and be
  // preempted when their decode pages run out). A request submitted after a step that ended a sequence is
  // admitted by the next step, as a queued one would be.
  std::map<engine::SeqId, size_t> sample_of;
  size_t submitted = 0, done = 0;
  auto out_of_time = [&] {
    return o.max_seconds > 0 && static_cast<int64_t>(submitted) >= o.batch &&
           std::chrono::duration<double>(Clock::now() - t0).count() >= o.max_seconds;
  };
  auto submit_more = [&] {
    while (submitted < n && static_cast<int64_t>(sample_of.size()) < o.batch && !out_of_time()) {
      engine::Request r;
      r.prompt = prompts[submitted];
      r.sampling = o.sampling;
      r.sampling.seed = derive_seed(o.sampling.seed, kStreamSampler + static_cast<uint64_t>(submitted));
      r.max_new_tokens = o.max_new_tokens;
      r.stop_ids = eos;
      sample_of.emplace(eng.submit(std::move(r)), submitted++);
    }
  };
  submit_more();
  while (eng.has_work()) {
    for (const engine::Event& e : eng.step()) {
      if (e.token >= 0 && bar) bar->advance(1);
      if (e.finish == engine::FinishReason::kNone) continue;
      const size_t i = sample_of.at(e.seq);
      if (e.finish == engine::FinishReason::kError)
        throw Error("teacher sample " + std::to_string(i) + ": the engine failed: " + e.error);
      const std::vector<int64_t>& generated = eng.result(e.seq).output;
      const bool ended = e.finish == engine::FinishReason::kEos;
      if (bar) bar->advance(o.max_new_tokens - static_cast<int64_t>(generated.size()));  // unused budget
      Document d = teacher_document(prompts[i], generated, ended, conv, o.mask_prompt);
      std::vector<int32_t> ids32(d.tokens.begin(), d.tokens.end());
      d.text = tokenizer.decode(ids32, /*skip_special_tokens=*/true);
      d.origin = DocumentOrigin{source, static_cast<int64_t>(i), -1, -1, -1, -1};
      if (ended) ++st.eos_stops;
      st.prompt_tokens += static_cast<int64_t>(prompts[i].size());
      st.generated_tokens += static_cast<int64_t>(generated.size());
      docs[i] = std::move(d);
      eng.release(e.seq);
      sample_of.erase(e.seq);
      ++done;
      if (bar) bar->set_status(std::to_string(done) + "/" + std::to_string(n) + " samples");
    }
    submit_more();
  }
  if (bar) bar->finish();
  docs.resize(submitted);  // every submitted sample ran to its end; the rest never started
  st.samples = static_cast<int64_t>(submitted);
  st.preemptions = eng.stats().preemptions;
  st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stats) *stats = st;
  return docs;
}

}  // namespace hylo::train
