// The process-wide "poison outputs" switch of kernels/common/cuda_check.h.
#include <atomic>

#include "hylo/kernels/common/cuda_check.h"

namespace hylo::kernels {

namespace {
std::atomic<bool> g_poison{false};
}

void set_poison_outputs(bool on) { g_poison.store(on); }
bool poison_outputs() { return g_poison.load(); }

}  // namespace hylo::kernels
