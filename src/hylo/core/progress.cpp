#include "hylo/core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace hylo {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(::isatty(2) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_ - std::chrono::seconds(1)) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::advance(int64_t n) { set(done_ + n); }

void ProgressBar::set(int64_t done) {
  const int64_t before = done_;
  done_ = done;
  auto now = std::chrono::steady_clock::now();
  // Non-terminals get a line per 10% crossed (by steps of any size) so logs stay short.
  if (tty_ ? now - last_draw_ >= std::chrono::milliseconds(100)
           : (total_ > 0 && (done_ * 10 / total_) != (before * 10 / total_))) {
    draw(false);
    last_draw_ = now;
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  // A log (not a terminal) already has the line for the last step; a terminal needs its final newline.
  if (tty_ || drawn_ != done_) draw(true);
}

void ProgressBar::draw(bool final) {
  drawn_ = done_;
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 0.0;
  std::string eta = (rate > 0 && total_ > done_) ? format_duration(static_cast<double>(total_ - done_) / rate) : "0s";
  const int width = 30;
  int filled = static_cast<int>(std::lround(frac * width));
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %.1f %s/s ETA %s elapsed %s%s%s%s", tty_ ? "\r" : "", label_.c_str(),
               bar.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), rate, unit_.c_str(),
               eta.c_str(), format_duration(elapsed).c_str(), status_.empty() ? "" : " ", status_.c_str(),
               tty_ ? "\x1b[K" : "", (final || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(bytes) >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

std::string format_duration(double seconds) {
  char buf[32];
  long s = std::lround(seconds);
  if (s < 60) std::snprintf(buf, sizeof buf, "%lds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  return buf;
}

}  // namespace hylo
