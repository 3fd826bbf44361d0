// Seeded randomness of the data pipeline that must never change between library versions or machines:
// splitmix64 streams, unbiased bounded draws and Fisher-Yates permutations. Used for the per-epoch sequence
// order, the build-time document order, the held-out draw and the teacher prompts. (at::randperm and the
// std:: distributions are avoided on purpose: their streams are implementation-defined.)
#pragma once

#include <cstdint>
#include <vector>

namespace hylo::train {

// One splitmix64 step (Steele, Lea, Flood 2014): advances `state` and returns the next output.
uint64_t splitmix64_next(uint64_t& state);

// A stream seed derived from (seed, stream) so that different streams of one seed are unrelated.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// Uniform integer in [0, bound) (bound > 0) without modulo bias (Lemire's multiply-and-reject).
uint64_t uniform_below(uint64_t& state, uint64_t bound);

// A permutation of 0..n-1 that is a pure function of (seed, stream): Fisher-Yates driven by splitmix64.
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);

// Stream ids, so that each use of one seed draws from its own stream.
inline constexpr uint64_t kStreamDocumentOrder = 0x646f63756d656e74ULL;  // build-time train document order
inline constexpr uint64_t kStreamHeldout = 0x68656c646f7574ULL;          // held-out document draw
inline constexpr uint64_t kStreamPrompts = 0x70726f6d707473ULL;          // teacher prompt slices
inline constexpr uint64_t kStreamSampler = 0x73616d706c6572ULL;          // per-sample sampler seeds
inline constexpr uint64_t kStreamEpoch = 0x65706f6368ULL;                // + epoch: loader sequence order

}  // namespace hylo::train
