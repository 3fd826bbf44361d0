#include "hylo/infer/engine/engine.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <tuple>
#include <unordered_set>

#include "hylo/core/result.h"
#include "hylo/infer/engine/cache_pool.h"
#include "hylo/infer/engine/prefix_cache.h"
#include "hylo/infer/engine/runner.h"
#include "hylo/infer/engine/scheduler.h"
#include "hylo/infer/engine/sequence.h"

namespace hylo::engine {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

// Bucketed decode (CUDA graphs) sets one live slot aside for padding rows; the pools get one more so that
// max_sequences sequences still run at once.
static EngineOptions with_scratch_slot(const CausalLM& model, EngineOptions o) {
  if (uses_bucketed_decode(model, o)) o.max_sequences += 1;
  return o;
}

int64_t pool_bytes_needed(const CausalLM& model, EngineOptions options, int64_t tokens_per_sequence,
                          int64_t sequences) {
  options.memory_bytes = int64_t{1} << 40;  // a probe budget: only the unit sizes are read
  const MemoryPlan unit = CachePools::plan(model, options);
  const bool scratch = uses_bucketed_decode(model, options);  // reserve_scratch takes one slot and one page
  const int64_t pages_per_sequence = (tokens_per_sequence + options.page_size - 1) / options.page_size;
  const int64_t pages = sequences * pages_per_sequence + (scratch && unit.bytes_per_page > 0 ? 1 : 0);
  const int64_t slots = sequences + (scratch ? 1 : 0) + options.prefix_snapshots;
  return pages * unit.bytes_per_page + slots * unit.bytes_per_slot;
}

struct Engine::Impl {
  Impl(CausalLM& m, const EngineOptions& o)
      : model(m), options(o), pools(m, with_scratch_slot(m, o)),
        prefix(o.prefix_snapshots > 0 ? std::make_unique<PrefixCache>(pools, pools.has_recurrent_layers()) : nullptr),
        scheduler(pools, prefix.get(), o), runner(m, pools, o) {}

  CausalLM& model;
  EngineOptions options;
  CachePools pools;
  std::unique_ptr<PrefixCache> prefix;
  Scheduler scheduler;
  Runner runner;
  std::map<SeqId, std::unique_ptr<Sequence>> seqs;
  std::unordered_set<SeqId> cancelled;
  SeqId next_id = 1;
  int64_t steps = 0, prompt_tokens = 0, generated_tokens = 0;

  void finish(Sequence& s, FinishReason reason, std::vector<Event>& events, const std::string& error = {});
  void record_rows(Sequence& s, const ScheduledChunk& c, const StepOutput& out, size_t k);
  void choose_next(const std::vector<ScheduledChunk>& chunks, const StepOutput& out, std::vector<Event>& events);
  // The sampled choice of each picker's row of logits [R, V]; -1 for the greedy rows without a penalty.
  std::vector<int64_t> sample_rows(const std::vector<Sequence*>& pickers, const at::Tensor& logits);
};

void Engine::Impl::finish(Sequence& s, FinishReason reason, std::vector<Event>& events, const std::string& error) {
  scheduler.release(&s);
  s.phase = SeqPhase::kFinished;
  s.result.finish = reason;
  if (s.has_first_token) s.result.decode_seconds = seconds_between(s.first_token, Clock::now());
  if (s.request.keep_logits && !s.logits_rows.empty()) {
    // Rows of every position the model ran, in order (a preempted sequence recomputed some; the last copy stays).
    std::vector<at::Tensor> rows;
    for (const auto& r : s.logits_rows)
      if (r.defined()) rows.push_back(r);
    s.result.logits = at::stack(rows);
    s.logits_rows.clear();
  }
  Event e;
  e.seq = s.id;
  e.finish = reason;
  e.error = error;
  events.push_back(std::move(e));
}

void Engine::Impl::record_rows(Sequence& s, const ScheduledChunk& c, const StepOutput& out, size_t k) {
  const int64_t first = out.first_row[k];
  if (first < 0) return;
  at::Tensor rows = out.logits.narrow(0, first, c.count);  // [count, V] positions num_cached .. + count - 1
  const int64_t start = s.num_cached;
  if (s.request.keep_logits) {
    at::Tensor cpu = rows.to(at::kCPU);
    if (static_cast<int64_t>(s.logits_rows.size()) < start + c.count) s.logits_rows.resize(start + c.count);
    for (int64_t i = 0; i < c.count; ++i) s.logits_rows[static_cast<size_t>(start + i)] = cpu[i].clone();
  }
  if (s.request.prompt_logprobs) {
    // log p(prompt[p + 1] | prompt[..p]) for the chunk's positions p that have a next prompt token.
    const int64_t n = std::min(c.count, s.prompt_len() - 1 - start);
    if (n > 0) {
      std::vector<int64_t> next(s.request.prompt.begin() + start + 1, s.request.prompt.begin() + start + 1 + n);
      at::Tensor targets = at::tensor(next, at::kLong).to(rows.device()).unsqueeze(1);                // [n, 1]
      // In fp64: the head gives fp32 logits, and a perplexity over many windows should not add fp32 rounding.
      at::Tensor lp = at::log_softmax(rows.narrow(0, 0, n).to(at::kDouble), -1).gather(1, targets).squeeze(1).to(at::kCPU);
      auto& dst = s.result.prompt_logprobs;
      if (static_cast<int64_t>(dst.size()) < start + n) dst.resize(start + n);
      auto acc = lp.accessor<double, 1>();
      for (int64_t i = 0; i < n; ++i) dst[static_cast<size_t>(start + i)] = acc[i];
    }
  }
}

// Rows sampled without a repetition penalty (the one processor that reads the history) are processed in blocks
// of equal parameters, [G, V] at a time with the same infer/sampler.h processors, and come to the host in one copy
// per block; each row then draws with its own Sampler's next uniform (Sampler::draw_uniform), so it picks the
// token Sampler::next would pick from the same logits, without a device round trip per sequence. Rows with a
// repetition penalty go through Sampler::next one by one.
std::vector<int64_t> Engine::Impl::sample_rows(const std::vector<Sequence*>& pickers, const at::Tensor& logits) {
  std::vector<int64_t> token(pickers.size(), -1);
  std::map<std::tuple<double, int64_t, double, double>, std::vector<int64_t>> blocks;  // parameters -> rows
  for (size_t i = 0; i < pickers.size(); ++i) {
    Sequence& s = *pickers[i];
    const SamplingParams& sp = s.request.sampling;
    if (sp.repetition_penalty != 1.0)
      token[i] = s.sampler->next(logits[static_cast<int64_t>(i)], s.tokens);
    else if (!sp.greedy())
      blocks[{sp.temperature, sp.top_k, sp.top_p, sp.min_p}].push_back(static_cast<int64_t>(i));
  }
  for (const auto& [key, rows] : blocks) {
    const auto& [temperature, top_k, top_p, min_p] = key;
    at::Tensor x = logits.index_select(0, at::tensor(rows, at::kLong).to(logits.device())).to(at::kFloat);  // [G, V]
    if (temperature != 1.0) x = x / temperature;
    x = apply_min_p(apply_top_p(apply_top_k(x, top_k), top_p), min_p);
    std::vector<double> u(rows.size());
    for (size_t g = 0; g < rows.size(); ++g) u[g] = pickers[static_cast<size_t>(rows[g])]->sampler->draw_uniform();
    const std::vector<int64_t> chosen = sample_rows_from_processed(x, u);
    for (size_t g = 0; g < rows.size(); ++g) token[static_cast<size_t>(rows[g])] = chosen[g];
  }
  return token;
}

void Engine::Impl::choose_next(const std::vector<ScheduledChunk>& chunks, const StepOutput& out,
                               std::vector<Event>& events) {
  // The sequences whose chunk reached the end of their tokens pick their next token from their last row.
  std::vector<Sequence*> pickers;
  std::vector<int64_t> rows;
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (out.last_row[k] < 0) continue;
    Sequence& s = *chunks[k].seq;
    if (static_cast<int64_t>(s.result.output.size()) >= s.request.max_new_tokens) {
      finish(s, FinishReason::kLength, events);  // max_new_tokens 0: a prefill only (prompt log-probs)
      continue;
    }
    pickers.push_back(&s);
    rows.push_back(out.last_row[k]);
  }
  if (pickers.empty()) return;
  // One pass over all rows for the greedy choice and the log-normaliser, one copy to the host: a decode step of
  // many sequences must not synchronise once per sequence.
  at::Tensor logits = out.logits.index_select(0, at::tensor(rows, at::kLong).to(out.logits.device()));  // [R, V]
  at::Tensor lse = at::logsumexp(logits, -1);                                                               // [R]
  at::Tensor argmax = logits.argmax(-1);                                                                    // [R]
  at::Tensor greedy_lp = logits.gather(1, argmax.unsqueeze(1)).squeeze(1) - lse;                            // [R]
  at::Tensor host = at::stack({argmax.to(at::kDouble), greedy_lp.to(at::kDouble)}).to(at::kCPU);           // [2, R]
  auto h = host.accessor<double, 2>();
  const std::vector<int64_t> sampled = sample_rows(pickers, logits);  // -1 for the greedy rows of h
  at::Tensor sampled_lp;                                              // [R] fp64 host: log p of sampled[i]
  if (std::any_of(sampled.begin(), sampled.end(), [](int64_t t) { return t >= 0; })) {
    std::vector<int64_t> ids(sampled.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = std::max<int64_t>(sampled[i], 0);
    at::Tensor chosen = at::tensor(ids, at::kLong).to(logits.device()).unsqueeze(1);               // [R, 1]
    sampled_lp = (logits.gather(1, chosen).squeeze(1) - lse).to(at::kCPU, at::kDouble).contiguous();  // [R]
  }
  for (size_t i = 0; i < pickers.size(); ++i) {
    Sequence& s = *pickers[i];
    const auto r = static_cast<int64_t>(i);
    Event e;
    e.seq = s.id;
    if (sampled[i] < 0) {
      e.token = static_cast<int64_t>(h[0][r]);
      e.logprob = h[1][r];
    } else {
      e.token = sampled[i];
      e.logprob = sampled_lp.data_ptr<double>()[r];
    }
    if (s.request.top_logprobs > 0) {
      auto [values, indices] = at::topk(logits[r] - lse[r], std::min<int64_t>(s.request.top_logprobs, logits.size(1)));
      at::Tensor v = values.to(at::kCPU, at::kDouble), ix = indices.to(at::kCPU);
      for (int64_t j = 0; j < v.size(0); ++j) e.top.push_back({ix[j].item<int64_t>(), v[j].item<double>()});
    }
    if (!s.has_first_token) {
      s.has_first_token = true;
      s.first_token = Clock::now();
      s.result.time_to_first_token_s = seconds_between(s.submitted, s.first_token);
    }
    const int64_t token = e.token;
    s.tokens.push_back(token);
    s.result.output.push_back(token);
    ++generated_tokens;
    events.push_back(std::move(e));
    const auto& stops = s.request.stop_ids;
    if (std::find(stops.begin(), stops.end(), token) != stops.end())
      finish(s, FinishReason::kEos, events);
    else if (static_cast<int64_t>(s.result.output.size()) >= s.request.max_new_tokens)
      finish(s, FinishReason::kLength, events);
  }
}

Engine::Engine(CausalLM& model, const EngineOptions& options) {
  options.validate();
  impl_ = std::make_unique<Impl>(model, options);
}

Engine::~Engine() = default;

const MemoryPlan& Engine::memory_plan() const { return impl_->pools.plan(); }
const EngineOptions& Engine::options() const { return impl_->options; }
CausalLM& Engine::model() { return impl_->model; }

SeqId Engine::submit(Request request) {
  const int64_t vocab = impl_->model.config().vocab_size;
  if (request.prompt.empty()) throw Error("engine: request has an empty prompt (at least one token id is needed)");
  for (size_t i = 0; i < request.prompt.size(); ++i)
    if (request.prompt[i] < 0 || request.prompt[i] >= vocab)
      throw Error("engine: prompt token " + std::to_string(i) + " is id " + std::to_string(request.prompt[i]) +
                  ", outside the model's vocabulary of " + std::to_string(vocab));
  if (request.max_new_tokens < 0)
    throw Error("engine: max_new_tokens must be >= 0, got " + std::to_string(request.max_new_tokens));
  if (request.top_logprobs < 0) throw Error("engine: top_logprobs must be >= 0");
  request.sampling.validate();
  const MemoryPlan& plan = impl_->pools.plan();
  const int64_t need = static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens;
  if (need > plan.max_tokens_per_sequence)
    throw Error("engine: the request needs " + std::to_string(request.prompt.size()) + " prompt + " +
                std::to_string(request.max_new_tokens) + " new = " + std::to_string(need) +
                " tokens of cache, but at most " + std::to_string(plan.max_tokens_per_sequence) +
                " tokens fit in one sequence (" + plan.describe() + ")");
  auto s = std::make_unique<Sequence>();
  s->id = impl_->next_id++;
  s->tokens = request.prompt;
  s->sampler = std::make_unique<Sampler>(request.sampling);
  s->request = std::move(request);
  s->result.prompt_tokens = s->prompt_len();
  s->submitted = Clock::now();
  Sequence* raw = s.get();
  impl_->seqs.emplace(raw->id, std::move(s));
  impl_->scheduler.enqueue(raw);
  return raw->id;
}

void Engine::cancel(SeqId seq) {
  auto it = impl_->seqs.find(seq);
  if (it != impl_->seqs.end() && it->second->phase != SeqPhase::kFinished) impl_->cancelled.insert(seq);
}

bool Engine::has_work() const {
  return !impl_->scheduler.waiting().empty() || !impl_->scheduler.running().empty() || !impl_->cancelled.empty();
}

std::vector<Event> Engine::step() {
  c10::InferenceMode guard;
  Impl& m = *impl_;
  std::vector<Event> events;
  for (SeqId id : m.cancelled) {
    Sequence& s = *m.seqs.at(id);
    if (s.phase != SeqPhase::kFinished) m.finish(s, FinishReason::kCancelled, events);
  }
  m.cancelled.clear();

  const StepPlan plan = m.scheduler.schedule();
  if (plan.empty()) {
    // Nothing runs and nothing can be admitted although the pools are free: the head request can never start
    // (submit's size check makes this unreachable unless memory was taken elsewhere). End it instead of spinning.
    if (m.scheduler.running().empty() && !m.scheduler.waiting().empty()) {
      Sequence& s = *m.scheduler.waiting().front();
      m.finish(s, FinishReason::kError, events,
               "engine: request " + std::to_string(s.id) + " cannot be admitted: " + std::to_string(s.tokens.size()) +
                   " tokens need pages or a state slot that the free pools (" + m.pools.plan().describe() +
                   ") cannot provide");
    }
    return events;
  }
  StepOutput out = m.runner.run(plan);
  ++m.steps;

  std::vector<ScheduledChunk> chunks(plan.decode.begin(), plan.decode.end());
  chunks.insert(chunks.end(), plan.prefill.begin(), plan.prefill.end());
  // Rows first (they read num_cached before it advances), then the caches count the step's tokens.
  for (size_t k = 0; k < chunks.size(); ++k) m.record_rows(*chunks[k].seq, chunks[k], out, k);
  for (const auto& c : chunks) {
    Sequence& s = *c.seq;
    const int64_t prompt_left = std::max<int64_t>(0, std::min(s.prompt_len(), s.num_cached + c.count) - s.num_cached);
    m.prompt_tokens += prompt_left;
    s.num_cached += c.count;
  }
  m.scheduler.remember_prefixes(plan);
  m.choose_next(chunks, out, events);
  return events;
}

void Engine::run_until_done(const std::function<void(const Event&)>& on_event) {
  while (has_work())
    for (const Event& e : step())
      if (on_event) on_event(e);
}

const SequenceResult& Engine::result(SeqId seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) throw Error("engine: no sequence " + std::to_string(seq));
  return it->second->result;
}

void Engine::release(SeqId seq) {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return;
  if (it->second->phase != SeqPhase::kFinished)
    throw Error("engine: sequence " + std::to_string(seq) + " is still running; cancel it first");
  impl_->seqs.erase(it);
}

EngineStats Engine::stats() const {
  const Impl& m = *impl_;
  EngineStats st;
  st.steps = m.steps;
  st.waiting = static_cast<int64_t>(m.scheduler.waiting().size());
  st.running = static_cast<int64_t>(m.scheduler.running().size());
  const MemoryPlan& plan = m.pools.plan();
  st.pages_total = plan.num_pages;
  st.pages_used = plan.num_pages - m.pools.free_pages();
  st.slots_total = m.pools.live_slots();
  st.slots_used = m.pools.live_slots() - m.pools.free_slots();
  // The scratch page and slot of bucketed decode are not the requests' memory.
  const auto [scratch_slot, scratch_page] = m.runner.scratch();
  if (scratch_slot >= 0) --st.slots_total, --st.slots_used;
  if (scratch_page >= 0) --st.pages_total, --st.pages_used;
  st.snapshots_total = m.pools.snapshot_slots();
  st.snapshots_used = m.pools.snapshot_slots() - m.pools.free_snapshots();
  st.prefix_lookups = m.scheduler.prefix_lookups;
  st.prefix_hits = m.scheduler.prefix_hits;
  st.prefix_tokens_reused = m.scheduler.prefix_tokens_reused;
  st.preemptions = m.scheduler.preemptions;
  st.prompt_tokens = m.prompt_tokens;
  st.generated_tokens = m.generated_tokens;
  st.cuda_graph_replays = m.runner.graph_replays();
  return st;
}

void Engine::clear_prefix_cache() {
  if (impl_->prefix) impl_->prefix->clear();
}

SequenceResult run_one(Engine& engine, Request request, const std::function<void(const Event&)>& on_event) {
  const SeqId id = engine.submit(std::move(request));
  bool done = false;
  while (!done && engine.has_work())
    for (const Event& e : engine.step()) {
      if (e.seq != id) continue;
      if (on_event) on_event(e);
      if (e.finish != FinishReason::kNone) done = true;
    }
  SequenceResult result = engine.result(id);
  engine.release(id);
  return result;
}

}  // namespace hylo::engine
