// Training data: token datasets written by `hylo data` and the packed, deterministically shuffled batches that
// `hylo train` reads. This header is the contract between the data pipeline (train/data_*.cpp) and the trainer.
//
// A dataset is a directory:
//   index.json          format/version, tokenizer fingerprint (vocab size, bos/eos ids), seed, splits with
//                       their shard files, token and document counts, and how it was made (sources, options)
//   train-00000.tok ... tokens of the training split, little-endian uint32, documents back to back
//   train-00000.docs    uint64 offsets (in tokens, within the shard) where each document starts
//   train-00000.mask    optional, one byte per token: 1 = the token is a training target (chat prompts 0)
//   heldout-00000.*     the held-out split, same layout; training never reads it
//   heldout.txt         the held-out documents' text (for `hylo perplexity MODEL DIR/heldout.txt`)
// Every file is written atomically; index.json is written last, so a dataset without it is incomplete.
// Format details, index fields and the commands that build datasets: docs/training-data.md.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::train {

enum class Split { kTrain, kHeldout };

// One packed batch. Sequences are cut from the split's token stream (documents concatenated in shuffled
// document order); a document may span two sequences.
struct PackedBatch {
  at::Tensor ids;          // [B, T] int64
  at::Tensor loss_mask;    // [B, T] float32: 1 where ids[b, t] is a target (predicted from ids[b, :t]), else 0
  at::Tensor doc_start;    // [B, T] bool: ids[b, t] is the first token of a document
};

// Where a loader is in its stream; saved in training checkpoints so a resumed run reads the same batches.
struct LoaderState {
  int64_t epoch = 0;       // completed passes over the split
  int64_t cursor = 0;      // next sequence index within the epoch's permutation
};

class TokenDataset {
 public:
  // Validates index.json and that every shard exists with the size the index says; errors name the file.
  static Result<std::shared_ptr<const TokenDataset>> open(const std::filesystem::path& dir);
  virtual ~TokenDataset() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t num_tokens(Split split) const = 0;
  virtual int64_t num_documents(Split split) const = 0;
  virtual const std::filesystem::path& dir() const = 0;

  // Added for the loader and for evaluation code (not in the first draft of this contract):
  // whether the dataset stores a loss mask (chat prompts, teacher prompts); without one every token is a target.
  virtual bool has_loss_mask() const = 0;
  // The id appended after every document (the model's end-of-document convention), if any.
  virtual std::optional<int32_t> doc_end_id() const = 0;
  // Tokens [begin, begin + n) of the split's stream (its shards back to back). Each output may be null.
  // mask[i]: 1 if the dataset marks the token as a target (always 1 without a mask); doc_start[i]: the token
  // opens a document. Throws hylo::Error if the range is outside the split.
  virtual void read(Split split, int64_t begin, int64_t n, int64_t* ids, float* mask, bool* doc_start) const = 0;
};

const char* split_name(Split split);  // "train", "heldout"

// Fixed-length sequences of `seq_len` tokens from one split, visited in a seeded random order that is a pure
// function of (seed, epoch): the same on every run and every machine. Sequence i is tokens
// [i * seq_len, (i + 1) * seq_len) of the split's stream (the tail shorter than seq_len is unused); the order is
// a splitmix64-driven Fisher-Yates permutation (train/data_shuffle.h), never at::randperm. Constructor and
// next() throw hylo::Error on bad arguments or a split shorter than one sequence. With world > 1, rank r reads
// sequence indices r, r + world, ... of each global batch, so the union over ranks equals the world == 1 stream.
class PackedLoader {
 public:
  PackedLoader(std::shared_ptr<const TokenDataset> data, Split split, int64_t seq_len, uint64_t seed,
               int rank = 0, int world = 1);
  // The next `global_batch` sequences of the stream, of which this rank gets its share
  // (global_batch / world rows; global_batch must be divisible by world).
  PackedBatch next(int64_t global_batch);
  int64_t sequences_per_epoch() const;
  LoaderState state() const;
  void restore(const LoaderState& state);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace hylo::train
