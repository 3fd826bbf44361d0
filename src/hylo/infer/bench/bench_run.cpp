// The sweeps of bench.h: one engine per point, sized to the point, so that each point's peak memory is its own.
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>

#include "hylo/core/progress.h"
#include "hylo/core/result.h"
#include "hylo/infer/bench/bench.h"
#include "hylo/infer/bench/device_memory.h"
#include "hylo/infer/engine/cache_pool.h"

namespace hylo::bench {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Prompts this long or longer show a prefill progress bar.
constexpr int64_t kProgressTokens = 32768;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

double median(std::vector<double> v) {
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string layer_summary(const ModelConfig& c) {
  std::vector<std::pair<MixerKind, int64_t>> counts;  // in order of first appearance
  for (const auto& l : c.layers) {
    auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& p) { return p.first == l.mixer; });
    if (it == counts.end())
      counts.push_back({l.mixer, 1});
    else
      ++it->second;
  }
  std::string s;
  for (const auto& [kind, n] : counts) s += (s.empty() ? "" : " + ") + std::to_string(n) + " " + mixer_kind_name(kind);
  return s;
}

// The model's own formula (model_config.h): cached values per token of every paged layer, times the cache dtype's
// size (the engine caches in the model's dtype).
int64_t formula_bytes_per_token(const ModelConfig& c, at::ScalarType cache_dtype) {
  int64_t elems = 0;
  for (const auto& l : c.layers) elems += layer_footprint(c, l).kv_elems_per_token;
  return elems * static_cast<int64_t>(at::elementSize(cache_dtype));
}

std::vector<int64_t> random_prompt(int64_t tokens, int64_t vocab, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  at::Tensor ids = at::randint(0, vocab, {tokens}, g, at::TensorOptions().dtype(at::kLong));
  const int64_t* p = ids.data_ptr<int64_t>();
  return {p, p + tokens};
}

// Pools for `sequences` sequences of `tokens` tokens: pages plus one live state slot each.
int64_t pool_need(const engine::MemoryPlan& unit, int64_t page_size, int64_t tokens, int64_t sequences) {
  return sequences * (ceil_div(tokens, page_size) * unit.bytes_per_page + unit.bytes_per_slot);
}

// The point's engine options: exactly the pools it needs (the engine's own scratch page and slot counted), no
// prefix cache.
engine::EngineOptions point_options(const CausalLM& model, const BenchOptions& o, int64_t tokens, int64_t sequences) {
  engine::EngineOptions e = o.engine;
  e.max_sequences = sequences;
  e.prefix_snapshots = 0;
  e.max_step_tokens = std::max(e.max_step_tokens, sequences);
  e.memory_bytes = engine::pool_bytes_needed(model, e, tokens, sequences);
  return e;
}

// Runs engine steps until no work is left, timing each step; on_step(events, ms) sees every step.
void run_steps(engine::Engine& eng, const std::function<void(const std::vector<engine::Event>&, double)>& on_step) {
  while (eng.has_work()) {
    const auto t = Clock::now();
    std::vector<engine::Event> events = eng.step();
    const double ms = ms_since(t);
    for (const auto& e : events)
      if (e.finish == engine::FinishReason::kError) throw Error("sequence " + std::to_string(e.seq) + ": " + e.error);
    on_step(events, ms);
  }
}

ContextPoint run_context(CausalLM& model, const std::string& name, const BenchOptions& o,
                         const engine::MemoryPlan& unit, int64_t max_tokens, int64_t context) {
  ContextPoint p;
  p.context = context;
  p.max_context = max_tokens == INT64_MAX ? INT64_MAX : std::max<int64_t>(0, max_tokens - o.decode_tokens);
  p.fits = context + o.decode_tokens <= max_tokens;
  if (!p.fits) return p;
  const at::Device dev = model.options().device();
  try {
    release_cached_memory(dev);
    synchronize(dev);
    reset_peak_memory(dev);
    engine::Engine eng(model, point_options(model, o, context + o.decode_tokens, 1));
    p.pool_bytes = eng.memory_plan().pool_bytes;
    engine::Request request;
    request.prompt = random_prompt(context, model.config().vocab_size, o.seed + static_cast<uint64_t>(context));
    request.sampling.temperature = 0.0;
    request.max_new_tokens = o.decode_tokens;
    std::unique_ptr<ProgressBar> bar;
    if (o.progress && context >= kProgressTokens)
      bar = std::make_unique<ProgressBar>(name + " prefill " + format_count(context), context, "tok");
    std::vector<double> decode_ms;
    const auto t0 = Clock::now();
    const engine::SeqId seq = eng.submit(std::move(request));
    run_steps(eng, [&](const std::vector<engine::Event>& events, double ms) {
      const bool token = std::any_of(events.begin(), events.end(),
                                     [&](const engine::Event& e) { return e.seq == seq && e.token >= 0; });
      if (token && p.decoded++ == 0) {
        p.prefill_seconds = ms_since(t0) / 1e3;
        if (bar) bar->finish();
      } else if (token) {
        decode_ms.push_back(ms);
      } else if (bar && p.decoded == 0) {
        bar->set(std::min(context, eng.stats().prompt_tokens));
      }
    });
    synchronize(dev);
    p.tpot_ms = median(decode_ms);
    p.tpot_mean_ms = mean(decode_ms);
    p.sequence_bytes = pool_need(unit, eng.options().page_size, context + p.decoded, 1);
    p.peak_bytes = peak_memory_bytes(dev);
  } catch (const std::exception& e) {
    p.error = first_line(e.what());
  }
  release_cached_memory(dev);
  return p;
}

// Tokens each of `batch` sequences reserves: its prompt, and enough new tokens that decode_tokens steps with all
// of them decoding follow the last sequence's start. Sequences start decoding as their prefill completes, spread
// over about as many steps as the batch's prompts fill (each step also carries the running sequences' tokens).
int64_t batch_sequence_tokens(const BenchOptions& o, int64_t batch) {
  const int64_t step_tokens = std::max(o.engine.max_step_tokens, batch);
  const int64_t prefill_steps = ceil_div(batch * o.batch_prompt_tokens, std::max<int64_t>(1, step_tokens - batch)) +
                                ceil_div(o.batch_prompt_tokens, o.engine.prefill_chunk) + batch;
  return o.batch_prompt_tokens + o.decode_tokens + prefill_steps + 2;
}

// The most sequences of the batch sweep that fit the budget (each with batch_sequence_tokens of that count).
int64_t max_batch_in_budget(const BenchOptions& o, const engine::MemoryPlan& unit, int64_t budget) {
  auto fits = [&](int64_t b) {
    return b * pool_need(unit, o.engine.page_size, batch_sequence_tokens(o, b), 1) <= budget;
  };
  constexpr int64_t kCap = int64_t{1} << 24;
  if (!fits(1)) return 0;
  int64_t lo = 1, hi = 2;  // fits(lo); grow hi until it does not fit
  while (hi < kCap && fits(hi)) lo = hi, hi *= 2;
  if (hi >= kCap && fits(kCap)) return kCap;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

BatchPoint run_batch(CausalLM& model, const BenchOptions& o, const engine::MemoryPlan& unit, int64_t budget,
                     int64_t batch) {
  BatchPoint p;
  p.batch = batch;
  p.prompt_tokens = o.batch_prompt_tokens;
  const int64_t tokens = batch_sequence_tokens(o, batch);
  const int64_t max_new = tokens - o.batch_prompt_tokens;
  p.max_batch = max_batch_in_budget(o, unit, budget);
  p.fits = batch <= p.max_batch;
  if (!p.fits) return p;
  const at::Device dev = model.options().device();
  try {
    release_cached_memory(dev);
    synchronize(dev);
    reset_peak_memory(dev);
    engine::Engine eng(model, point_options(model, o, tokens, batch));
    std::set<engine::SeqId> seqs, started;
    for (int64_t b = 0; b < batch; ++b) {
      engine::Request request;
      request.prompt = random_prompt(o.batch_prompt_tokens, model.config().vocab_size,
                                     o.seed + 1000003ULL * static_cast<uint64_t>(b + 1));
      request.sampling.temperature = 0.0;
      request.max_new_tokens = max_new;
      seqs.insert(eng.submit(std::move(request)));
    }
    std::vector<double> full_steps_ms;
    bool cancelled = false;
    run_steps(eng, [&](const std::vector<engine::Event>& events, double ms) {
      if (cancelled) return;
      const bool all_running_before = static_cast<int64_t>(started.size()) == batch;
      int64_t tokens_now = 0;
      for (const auto& e : events)
        if (e.token >= 0 && seqs.count(e.seq)) {
          ++tokens_now;
          started.insert(e.seq);
        }
      if (all_running_before && tokens_now == batch) full_steps_ms.push_back(ms);
      if (static_cast<int64_t>(full_steps_ms.size()) >= o.decode_tokens) {
        for (engine::SeqId s : seqs) eng.cancel(s);
        cancelled = true;
      }
    });
    synchronize(dev);
    p.timed_steps = static_cast<int64_t>(full_steps_ms.size());
    p.step_ms = median(full_steps_ms);
    p.decode_tokens_per_second = static_cast<double>(batch) / (p.step_ms / 1e3);
    p.peak_bytes = peak_memory_bytes(dev);
    if (p.timed_steps == 0) p.error = "no step had every sequence decoding";
  } catch (const std::exception& e) {
    p.error = first_line(e.what());
  }
  release_cached_memory(dev);
  return p;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void check_options(const BenchOptions& o) {
  if (o.decode_tokens < 2)
    throw Error("bench: --decode-tokens must be >= 2 (TPOT is timed over the tokens after the first), got " +
                std::to_string(o.decode_tokens));
  for (int64_t c : o.contexts)
    if (c < 1) throw Error("bench: --contexts must be positive, got " + std::to_string(c));
  for (int64_t b : o.batches)
    if (b < 1) throw Error("bench: --batch must be positive, got " + std::to_string(b));
  if (!o.batches.empty() && o.batch_prompt_tokens < 1)
    throw Error("bench: --batch-prompt must be positive, got " + std::to_string(o.batch_prompt_tokens));
  engine::EngineOptions single = o.engine;  // every point sets its own max_sequences
  single.max_sequences = 1;
  single.validate();
}

}  // namespace

ModelReport bench_model(CausalLM& model, const std::string& name, const std::string& role, const BenchOptions& o) {
  check_options(o);
  c10::InferenceMode inference_mode;
  const at::Device dev = model.options().device();
  if (!dev.is_cuda() && o.engine.memory_bytes <= 0)
    throw Error("bench: on the CPU the pools need a budget in bytes (--memory-bytes)");
  ModelReport r;
  r.name = name;
  r.role = role;
  r.layers = layer_summary(model.config());
  r.parameters = parameter_count(model.config());
  r.page_size = o.engine.page_size;
  r.weight_bytes = allocated_memory_bytes(dev);

  // Unit sizes from a probe plan (nothing is allocated), the budget from the run's own memory settings.
  engine::EngineOptions single = o.engine;
  single.max_sequences = 1;
  single.prefix_snapshots = 0;
  engine::EngineOptions probe = single;
  probe.memory_bytes = int64_t{1} << 40;
  const engine::MemoryPlan unit = engine::CachePools::plan(model, probe);
  release_cached_memory(dev);
  const engine::MemoryPlan budget = engine::CachePools::plan(model, single);
  r.bytes_per_token = unit.bytes_per_token;
  r.bytes_per_token_formula = formula_bytes_per_token(model.config(), model.options().dtype().toScalarType());
  r.bytes_per_slot = unit.bytes_per_slot;
  r.budget_bytes = budget.budget_bytes;
  r.max_context = budget.max_tokens_per_sequence;
  if (o.progress)
    std::fprintf(stderr, "[bench] %s (%s): %s, %s per token, %s state per sequence, budget %s: %s tokens fit\n",
                 name.c_str(), r.layers.c_str(), describe_device(dev).c_str(),
                 format_bytes(static_cast<double>(r.bytes_per_token)).c_str(),
                 format_bytes(static_cast<double>(r.bytes_per_slot)).c_str(),
                 format_bytes(static_cast<double>(r.budget_bytes)).c_str(),
                 r.max_context == INT64_MAX ? "unlimited" : std::to_string(r.max_context).c_str());

  if (o.warmup && !o.contexts.empty()) {
    BenchOptions quiet = o;
    quiet.progress = false;
    quiet.decode_tokens = 4;
    const int64_t tokens = std::min(o.engine.prefill_chunk, *std::min_element(o.contexts.begin(), o.contexts.end()));
    const ContextPoint w = run_context(model, name, quiet, unit, r.max_context, tokens);
    if (w.fits && w.error.empty()) r.warmup_tokens = tokens, r.warmup_prefill_seconds = w.prefill_seconds;
    if (o.progress && r.warmup_tokens)
      std::fprintf(stderr, "[bench] %s warm-up: %s tokens, prefill %.3f s (cold, not counted)\n", name.c_str(),
                   format_count(tokens).c_str(), r.warmup_prefill_seconds);
  }
  for (int64_t context : o.contexts) {
    ContextPoint p = run_context(model, name, o, unit, r.max_context, context);
    if (o.progress) {
      if (!p.fits)
        std::fprintf(stderr, "[bench] %s %s: does not fit (%s tokens fit)\n", name.c_str(),
                     format_count(context).c_str(), std::to_string(p.max_context).c_str());
      else if (!p.error.empty())
        std::fprintf(stderr, "[bench] %s %s: failed: %s\n", name.c_str(), format_count(context).c_str(),
                     p.error.c_str());
      else
        std::fprintf(stderr, "[bench] %s %s: prefill %.3f s (%.0f tok/s), TPOT %.3f ms, sequence %s\n", name.c_str(),
                     format_count(context).c_str(), p.prefill_seconds, p.prefill_tokens_per_second(), p.tpot_ms,
                     format_bytes(static_cast<double>(p.sequence_bytes)).c_str());
    }
    r.contexts.push_back(std::move(p));
    if (o.on_point) o.on_point(r);
  }
  for (int64_t batch : o.batches) {
    BatchPoint p = run_batch(model, o, unit, r.budget_bytes, batch);
    if (o.progress) {
      if (!p.fits)
        std::fprintf(stderr, "[bench] %s batch %lld: does not fit (%lld sequences fit)\n", name.c_str(),
                     static_cast<long long>(batch), static_cast<long long>(p.max_batch));
      else if (!p.error.empty())
        std::fprintf(stderr, "[bench] %s batch %lld: failed: %s\n", name.c_str(), static_cast<long long>(batch),
                     p.error.c_str());
      else
        std::fprintf(stderr, "[bench] %s batch %lld x %s: %.1f tok/s (step %.3f ms)\n", name.c_str(),
                     static_cast<long long>(batch), format_count(p.prompt_tokens).c_str(),
                     p.decode_tokens_per_second, p.step_ms);
    }
    r.batches.push_back(std::move(p));
    if (o.on_point) o.on_point(r);
  }
  return r;
}

BenchReport run_bench(const std::vector<BenchModelSource>& models, const BenchOptions& o) {
  check_options(o);
  if (o.contexts.empty() && o.batches.empty() && (!o.teacher_contexts || o.teacher_contexts->empty()) &&
      (!o.teacher_batches || o.teacher_batches->empty()))
    throw Error("bench: give --contexts and/or --batch");
  if (models.empty()) throw Error("bench: no model to run");
  BenchReport report;
  report.options = o;
  report.date = utc_now();
  for (const auto& source : models) {
    if (o.progress) std::fprintf(stderr, "[bench] building %s\n", source.name.c_str());
    std::unique_ptr<CausalLM> model = source.make();
    const at::Device dev = model->options().device();
    if (report.device.empty()) {
      report.device = describe_device(dev);
      const at::ScalarType t = model->options().dtype().toScalarType();
      report.dtype = t == at::kBFloat16 ? "bf16" : t == at::kFloat ? "fp32" : c10::toString(t);
    }
    BenchOptions mo = o;
    if (source.role == "teacher") {
      if (o.teacher_contexts) mo.contexts = *o.teacher_contexts;
      if (o.teacher_batches) mo.batches = *o.teacher_batches;
    }
    mo.on_point = [&](const ModelReport& partial) {
      if (!o.on_update) return;
      BenchReport so_far = report;
      so_far.models.push_back(partial);
      o.on_update(so_far);
    };
    report.models.push_back(bench_model(*model, source.name, source.role, mo));
    if (o.on_update) o.on_update(report);
    model.reset();
    release_cached_memory(dev);
  }
  return report;
}

std::vector<int64_t> parse_count_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    const std::string unit = item.substr(used);
    double scale = 0;
    if (unit.empty()) scale = 1;
    else if (unit == "K" || unit == "k") scale = 1024.0;
    else if (unit == "M" || unit == "m") scale = 1024.0 * 1024;
    else if (unit == "G" || unit == "g") scale = 1024.0 * 1024 * 1024;
    const double n = v * scale;
    if (used == 0 || scale == 0 || !(n >= 1) || n != std::floor(n) || n > 1e15)
      throw Error(option + ": '" + item + "' is not a positive count (e.g. 4096, 4K, 1M)");
    out.push_back(static_cast<int64_t>(n));
    pos = comma + 1;
  }
  return out;
}

std::string format_count(int64_t n) {
  if (n >= (int64_t{1} << 30) && n % (int64_t{1} << 30) == 0) return std::to_string(n >> 30) + "G";
  if (n >= (int64_t{1} << 20) && n % (int64_t{1} << 20) == 0) return std::to_string(n >> 20) + "M";
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + "K";
  return std::to_string(n);
}

}  // namespace hylo::bench
