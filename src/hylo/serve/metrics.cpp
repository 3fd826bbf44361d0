#include "hylo/serve/metrics.h"

#include <cstdio>

namespace hylo::serve {

namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
         number(value) + "\n";
}

}  // namespace

void LatencyHistogram::observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  ++counts_[i];
  sum_ += seconds;
  ++count_;
}

void LatencyHistogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(kBounds[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_[kBounds.size()];
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

void Metrics::record_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::record_tokens(int64_t prompt_tokens, int64_t completion_tokens) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt_tokens;
  completion_tokens_ += completion_tokens;
}

void Metrics::record_latency(double total_seconds, double first_token_seconds) {
  std::lock_guard lock(mutex_);
  latency_.observe(total_seconds);
  if (first_token_seconds >= 0) first_token_.observe(first_token_seconds);
}

std::string Metrics::render(const EngineGauges& g) const {
  std::string out;
  {
    std::lock_guard lock(mutex_);
    out += "# HELP hylo_requests_total HTTP requests answered, by endpoint and status\n"
           "# TYPE hylo_requests_total counter\n";
    for (const auto& [key, count] : requests_)
      out += "hylo_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(count) + "\n";
    metric(out, "hylo_prompt_tokens_total", "counter", "prompt tokens of finished generations", prompt_tokens_);
    metric(out, "hylo_generation_tokens_total", "counter", "generated tokens of finished generations",
           completion_tokens_);
    latency_.render(out, "hylo_request_duration_seconds", "time from request to last token of generations");
    first_token_.render(out, "hylo_time_to_first_token_seconds", "time from request to first generated token");
  }
  const auto& s = g.stats;
  metric(out, "hylo_requests_in_flight", "gauge", "generations accepted and not finished", g.in_flight);
  metric(out, "hylo_requests_cancelled_total", "counter", "generations cancelled (client gone, timeout, shutdown)",
         g.cancelled_total);
  metric(out, "hylo_stop_string_total", "counter", "generations ended by a stop string", g.stop_string_total);
  metric(out, "hylo_engine_healthy", "gauge", "1 while the engine steps without error", g.healthy ? 1 : 0);
  metric(out, "hylo_engine_waiting", "gauge", "sequences queued in the engine", s.waiting);
  metric(out, "hylo_engine_running", "gauge", "sequences running in the engine", s.running);
  metric(out, "hylo_engine_steps_total", "counter", "engine steps", s.steps);
  metric(out, "hylo_cache_pages_total", "gauge", "pages of the paged latent / KV cache", s.pages_total);
  metric(out, "hylo_cache_pages_used", "gauge", "pages held by sequences or the prefix cache", s.pages_used);
  metric(out, "hylo_cache_usage_ratio", "gauge", "pages_used / pages_total",
         s.pages_total ? double(s.pages_used) / double(s.pages_total) : 0.0);
  metric(out, "hylo_state_slots_total", "gauge", "recurrent-state slots", s.slots_total);
  metric(out, "hylo_state_slots_used", "gauge", "recurrent-state slots in use", s.slots_used);
  metric(out, "hylo_state_snapshots_total", "gauge", "prefix-cache state snapshot slots", s.snapshots_total);
  metric(out, "hylo_state_snapshots_used", "gauge", "prefix-cache state snapshots in use", s.snapshots_used);
  metric(out, "hylo_prefix_lookups_total", "counter", "prefix-cache lookups", s.prefix_lookups);
  metric(out, "hylo_prefix_hits_total", "counter", "prefix-cache hits", s.prefix_hits);
  metric(out, "hylo_prefix_hit_rate", "gauge", "prefix hits / lookups", s.prefix_hit_rate());
  metric(out, "hylo_prefix_tokens_reused_total", "counter", "prompt tokens taken from the prefix cache",
         s.prefix_tokens_reused);
  metric(out, "hylo_preemptions_total", "counter", "sequences preempted for lack of pages", s.preemptions);
  metric(out, "hylo_engine_prompt_tokens_total", "counter", "prompt tokens the engine computed", s.prompt_tokens);
  metric(out, "hylo_engine_generated_tokens_total", "counter", "tokens the engine generated", s.generated_tokens);
  return out;
}

}  // namespace hylo::serve
