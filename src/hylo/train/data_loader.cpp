// PackedLoader: the split's token stream is cut into consecutive, non-overlapping sequences of seq_len tokens
// (the tail shorter than seq_len is not used); each epoch visits them in the order of a splitmix64
// Fisher-Yates permutation seeded by (seed, epoch). Row b of a global batch is sequence perm[cursor + b]
// (rolling over into the next epoch's permutation when the epoch ends); rank r keeps rows r, r + world, ...
#include <ATen/ATen.h>

#include "hylo/train/data.h"
#include "hylo/train/data_shuffle.h"

namespace hylo::train {

struct PackedLoader::Impl {
  std::shared_ptr<const TokenDataset> data;
  Split split = Split::kTrain;
  int64_t seq_len = 0;
  uint64_t seed = 0;
  int rank = 0, world = 1;
  int64_t sequences = 0;
  LoaderState state;
  int64_t perm_epoch = -1;
  std::vector<int64_t> perm;  // sequence order of epoch perm_epoch

  const std::vector<int64_t>& permutation(int64_t epoch) {
    if (epoch != perm_epoch) {
      perm = seeded_permutation(sequences, seed, kStreamEpoch + static_cast<uint64_t>(epoch));
      perm_epoch = epoch;
    }
    return perm;
  }
};

PackedLoader::PackedLoader(std::shared_ptr<const TokenDataset> data, Split split, int64_t seq_len, uint64_t seed,
                           int rank, int world)
    : impl_(std::make_shared<Impl>()) {
  if (!data) throw Error("PackedLoader: no dataset");
  if (seq_len < 2) throw Error("PackedLoader: seq_len must be >= 2, got " + std::to_string(seq_len));
  if (world < 1 || rank < 0 || rank >= world)
    throw Error("PackedLoader: rank " + std::to_string(rank) + " is not in [0, world = " + std::to_string(world) + ")");
  impl_->data = std::move(data);
  impl_->split = split;
  impl_->seq_len = seq_len;
  impl_->seed = seed;
  impl_->rank = rank;
  impl_->world = world;
  impl_->sequences = impl_->data->num_tokens(split) / seq_len;
  if (impl_->sequences < 1)
    throw Error("PackedLoader: the " + std::string(split_name(split)) + " split of " + impl_->data->dir().string() +
                " has " + std::to_string(impl_->data->num_tokens(split)) + " tokens, fewer than one sequence of " +
                std::to_string(seq_len));
}

int64_t PackedLoader::sequences_per_epoch() const { return impl_->sequences; }

LoaderState PackedLoader::state() const { return impl_->state; }

void PackedLoader::restore(const LoaderState& state) {
  if (state.epoch < 0 || state.cursor < 0 || state.cursor >= impl_->sequences)
    throw Error("PackedLoader::restore: state (epoch " + std::to_string(state.epoch) + ", cursor " +
                std::to_string(state.cursor) + ") is outside this loader's " + std::to_string(impl_->sequences) +
                " sequences per epoch (a checkpoint from another dataset or seq_len?)");
  impl_->state = state;
}

PackedBatch PackedLoader::next(int64_t global_batch) {
  Impl& m = *impl_;
  if (global_batch < 1 || global_batch % m.world != 0)
    throw Error("PackedLoader::next: global batch " + std::to_string(global_batch) +
                " must be >= 1 and divisible by world = " + std::to_string(m.world));
  const int64_t rows = global_batch / m.world;
  const int64_t T = m.seq_len;
  at::Tensor ids = at::empty({rows, T}, at::kLong);          // [B, T] int64
  at::Tensor loss_mask = at::empty({rows, T}, at::kFloat);   // [B, T] float32
  at::Tensor doc_start = at::empty({rows, T}, at::kBool);    // [B, T] bool
  int64_t* ip = ids.data_ptr<int64_t>();
  float* mp = loss_mask.data_ptr<float>();
  bool* dp = doc_start.data_ptr<bool>();
  LoaderState s = m.state;
  int64_t row = 0;
  for (int64_t k = 0; k < global_batch; ++k) {
    if (k % m.world == m.rank) {
      const int64_t seq = m.permutation(s.epoch)[static_cast<size_t>(s.cursor)];
      m.data->read(m.split, seq * T, T, ip + row * T, mp + row * T, dp + row * T);
      mp[row * T] = 0.0f;  // the first token of a row has no context inside the row: never a target
      ++row;
    }
    if (++s.cursor == m.sequences) {
      s.cursor = 0;
      ++s.epoch;
    }
  }
  m.state = s;
  return PackedBatch{ids, loss_mask, doc_start};
}

}  // namespace hylo::train
