// Warp-level helpers shared by the one-token (decode step) kernels and the row reductions.
#pragma once

namespace hylo::kernels {

// The sum of v over the 32 lanes of the warp, in every lane.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Step kernels spread one state row of 32 * NPL columns over a warp: the column that lane `lane` holds in its
// slot j < NPL (also the column of the vectors the row meets). Groups of 4 adjacent columns per lane when NPL is a
// multiple of 4 (16-byte accesses), pairs when NPL is 2, otherwise one column per lane and slot; in every case a
// warp's accesses to one slot are coalesced.
template <int NPL>
__device__ __forceinline__ int lane_col(int lane, int j) {
  if constexpr (NPL % 4 == 0) return (j / 4) * 128 + lane * 4 + (j % 4);
  else if constexpr (NPL == 2) return lane * 2 + j;
  else return j * 32 + lane;
}

}  // namespace hylo::kernels
