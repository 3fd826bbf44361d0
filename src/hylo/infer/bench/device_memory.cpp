#include "hylo/infer/bench/device_memory.h"

#include <limits>

#ifdef HYLO_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "hylo/core/progress.h"

namespace hylo::bench {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

#ifdef HYLO_HAVE_CUDA
c10::DeviceIndex index_of(at::Device device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
const c10::CachingAllocator::Stat& allocated(at::Device device) {
  static thread_local c10::CachingDeviceAllocator::DeviceStats stats;
  stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}
#endif
}  // namespace

std::string describe_device(at::Device device) {
#ifdef HYLO_HAVE_CUDA
  if (device.is_cuda()) {
    const auto idx = index_of(device);
    const cudaDeviceProp* p = at::cuda::getDeviceProperties(idx);
    return "cuda:" + std::to_string(idx) + " " + p->name + " (" +
           format_bytes(static_cast<double>(p->totalGlobalMem)) + ")";
  }
#endif
  return device.str();
}

void synchronize(at::Device device) {
#ifdef HYLO_HAVE_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
  (void)device;
}

void reset_peak_memory(at::Device device) {
#ifdef HYLO_HAVE_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index_of(device));
#endif
  (void)device;
}

double peak_memory_bytes(at::Device device) {
#ifdef HYLO_HAVE_CUDA
  if (device.is_cuda()) return static_cast<double>(allocated(device).peak);
#endif
  (void)device;
  return kNaN;
}

double allocated_memory_bytes(at::Device device) {
#ifdef HYLO_HAVE_CUDA
  if (device.is_cuda()) return static_cast<double>(allocated(device).current);
#endif
  (void)device;
  return kNaN;
}

void release_cached_memory(at::Device device) {
#ifdef HYLO_HAVE_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  (void)device;
}

}  // namespace hylo::bench
