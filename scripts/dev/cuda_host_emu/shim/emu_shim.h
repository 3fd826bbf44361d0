// Host emulation of the CUDA features the gdn chunk kernels use: 256 std::threads per block, barriers for
// __syncthreads/__syncwarp, warp shuffles through a per-warp buffer, WMMA with a full tile copy per lane.
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <barrier>
#include <thread>
#include <vector>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>

struct EmuWarp {
  std::barrier<> bar{32};
  float buf[32];
};
struct EmuBlock {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<std::unique_ptr<EmuWarp>> warps;
};
inline thread_local uint3 emu_threadIdx, emu_blockIdx;
inline thread_local dim3 emu_blockDim, emu_gridDim;
inline EmuBlock* emu_block = nullptr;
inline unsigned char emu_smem_buf[240 * 1024] __attribute__((aligned(256)));
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim

inline void __syncthreads() { emu_block->bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_block->warps[threadIdx.x / 32]->bar.arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
  EmuWarp& w = *emu_block->warps[threadIdx.x / 32];
  const int lane = threadIdx.x & 31;
  w.buf[lane] = v;
  w.bar.arrive_and_wait();
  const float r = w.buf[lane ^ off];
  w.bar.arrive_and_wait();
  return r;
}
inline float __expf(float x) { return std::exp(x); }

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetLastError() cudaSuccess

template <typename... KArgs>
struct EmuLaunch {
  void (*k)(KArgs...);
  dim3 g, b;
  template <typename... A>
  void operator()(A&&... args) {
    for (unsigned z = 0; z < g.z; ++z)
      for (unsigned y = 0; y < g.y; ++y)
        for (unsigned x = 0; x < g.x; ++x) {
          EmuBlock blk;
          const unsigned nt = b.x * b.y * b.z;
          blk.bar = std::make_unique<std::barrier<>>(nt);
          for (unsigned w = 0; w < nt / 32; ++w) blk.warps.push_back(std::make_unique<EmuWarp>());
          emu_block = &blk;
          std::memset(emu_smem_buf, 0xff, sizeof(emu_smem_buf));  // NaN garbage: uninitialised reads show
          std::vector<std::thread> th;
          for (unsigned t = 0; t < nt; ++t)
            th.emplace_back([&, t] {
              emu_threadIdx = uint3{t, 0, 0};
              emu_blockIdx = uint3{x, y, z};
              emu_blockDim = b;
              emu_gridDim = g;
              k(args...);
            });
          for (auto& t : th) t.join();
        }
  }
};
template <typename... KArgs>
EmuLaunch<KArgs...> emu_launch(void (*k)(KArgs...), dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) {
  return {k, g, b};
}
