// Timing helper shared by the CUDA kernel benchmarks (bench/*_kernels_bench.cpp).
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace hylo::bench {

// Median of `reps` timings (ms) of fn() measured with CUDA events on the current stream, after `warm` untimed
// calls. The median, not the mean: one call that waits on a clock change or another process does not move it.
inline double median_cuda_ms(const std::function<void()>& fn, int warm, int reps) {
  for (int i = 0; i < warm; ++i) fn();
  const auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, stream);
    fn();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace hylo::bench
