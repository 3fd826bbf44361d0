// Server counters and latency histograms, rendered as Prometheus text (/metrics) together with the engine's
// pool and prefix-cache statistics. Thread-safe: HTTP threads record, the scraper renders.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "hylo/infer/engine/engine.h"

namespace hylo::serve {

// Cumulative histogram with fixed bucket bounds in seconds (Prometheus `le` buckets plus +Inf).
class LatencyHistogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1.0,   2.5,  5.0,   10.0, 30.0, 60.0, 120.0};
  void observe(double seconds);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::array<int64_t, kBounds.size() + 1> counts_{};  // last: above every bound
  double sum_ = 0.0;
  int64_t count_ = 0;
};

// The engine-side numbers a scrape shows besides the server's own.
struct EngineGauges {
  engine::EngineStats stats;
  int64_t in_flight = 0;
  int64_t cancelled_total = 0;
  int64_t stop_string_total = 0;
  bool healthy = true;
};

class Metrics {
 public:
  void record_request(const std::string& endpoint, int status);
  void record_tokens(int64_t prompt_tokens, int64_t completion_tokens);
  void record_latency(double total_seconds, double first_token_seconds);  // first < 0: no token came
  std::string render(const EngineGauges& engine) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  LatencyHistogram latency_, first_token_;
};

}  // namespace hylo::serve
