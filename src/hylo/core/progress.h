// A terminal progress bar with rate and ETA for long work (SVDs, evaluation, training steps). Writes to
// stderr, redraws at most every 100 ms, and prints plain lines instead when stderr is not a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace hylo {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "it");
  ~ProgressBar();
  void advance(int64_t n = 1);
  void set(int64_t done);
  void finish();
  // Text shown after the bar (e.g. "loss 2.31 lr 6e-05"), drawn with the next update.
  void set_status(std::string status) { status_ = std::move(status); }

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  int64_t total_ = 0, done_ = 0, drawn_ = -1;  // drawn_: done_ at the last line printed
  bool tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.2 KiB", "3.4 GiB"
std::string format_bytes(double bytes);
// "12s", "3m04s", "1h02m"
std::string format_duration(double seconds);

}  // namespace hylo
