// Mixed precision for training: fp32 master weights (the model's own parameters, which AdamW updates) and bf16
// compute through ATen's autocast (matmuls and linears run in bf16; reductions and our norms stay fp32).
// The autocast weight-cast cache is turned off: it would keep bf16 copies of the weights across optimizer
// steps unless cleared by hand, and re-casting per use is cheap next to the matmuls.
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

namespace hylo::train {

// Enables autocast to `dtype` on `device` for its lifetime (no-op when dtype is fp32), restoring the previous
// thread-local state on exit.
class AutocastScope {
 public:
  AutocastScope(at::DeviceType device, at::ScalarType dtype)
      : device_(device),
        was_enabled_(at::autocast::is_autocast_enabled(device)),
        was_dtype_(at::autocast::get_autocast_dtype(device)),
        was_cache_(at::autocast::is_autocast_cache_enabled()) {
    const bool on = dtype != at::kFloat;
    at::autocast::set_autocast_cache_enabled(false);
    if (on) at::autocast::set_autocast_dtype(device_, dtype);
    at::autocast::set_autocast_enabled(device_, on);
  }
  ~AutocastScope() {
    at::autocast::set_autocast_enabled(device_, was_enabled_);
    at::autocast::set_autocast_dtype(device_, was_dtype_);
    at::autocast::set_autocast_cache_enabled(was_cache_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  at::DeviceType device_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
  bool was_cache_;
};

// The autocast dtype in force on `device` (fp32 when autocast is off).
inline at::ScalarType current_autocast_dtype(at::DeviceType device) {
  return at::autocast::is_autocast_enabled(device) ? at::autocast::get_autocast_dtype(device) : at::kFloat;
}

}  // namespace hylo::train
