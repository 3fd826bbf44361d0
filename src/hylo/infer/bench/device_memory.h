// Device facts for benchmarks: a description of the device, synchronisation for timing, and the CUDA caching
// allocator's allocated bytes (current and peak). On the CPU there is no allocator to ask: the byte counts are NaN
// and the reports say "n/a".
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace hylo::bench {

std::string describe_device(at::Device device);  // "cpu" or "cuda:0 NVIDIA H200 (139.7 GiB)"
void synchronize(at::Device device);
void reset_peak_memory(at::Device device);        // the peak restarts from what is allocated now
double peak_memory_bytes(at::Device device);      // NaN on the CPU
double allocated_memory_bytes(at::Device device); // NaN on the CPU
void release_cached_memory(at::Device device);    // hands the allocator's free blocks back to the driver

}  // namespace hylo::bench
