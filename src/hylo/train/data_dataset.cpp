// TokenDataset::open: reads and validates index.json, memory-maps every shard and checks it against the
// index (sizes, document offsets, token ids below the vocabulary), so that a truncated, mismatched or
// half-written dataset fails here with the file and field named, not in the middle of training.
#include <algorithm>
#include <cstring>
#include <regex>

#include "hylo/core/file_util.h"
#include "hylo/train/data_format.h"

namespace hylo::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Shard {
  std::string stem;
  int64_t begin = 0;   // first token's position in the split's stream
  int64_t tokens = 0;
  std::shared_ptr<const MappedFile> tok, docs, mask;
  const uint32_t* ids() const { return reinterpret_cast<const uint32_t*>(tok->bytes().data()); }
  const uint64_t* offsets() const { return reinterpret_cast<const uint64_t*>(docs->bytes().data()); }
  int64_t num_docs() const { return static_cast<int64_t>(docs->size() / sizeof(uint64_t)); }
};

struct SplitData {
  std::vector<Shard> shards;
  int64_t tokens = 0, documents = 0;
};

class ShardedTokenDataset final : public TokenDataset {
 public:
  fs::path dir_;
  int64_t vocab_ = 0;
  bool has_mask_ = false;
  std::optional<int32_t> doc_end_;
  SplitData splits_[2];

  int64_t vocab_size() const override { return vocab_; }
  int64_t num_tokens(Split s) const override { return splits_[static_cast<int>(s)].tokens; }
  int64_t num_documents(Split s) const override { return splits_[static_cast<int>(s)].documents; }
  const fs::path& dir() const override { return dir_; }
  bool has_loss_mask() const override { return has_mask_; }
  std::optional<int32_t> doc_end_id() const override { return doc_end_; }

  void read(Split split, int64_t begin, int64_t n, int64_t* ids, float* mask, bool* doc_start) const override {
    const SplitData& sd = splits_[static_cast<int>(split)];
    if (begin < 0 || n < 0 || begin + n > sd.tokens)
      throw Error(dir_.string() + ": read of tokens [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                  ") is outside the " + split_name(split) + " split of " + std::to_string(sd.tokens) + " tokens");
    // The shard holding `begin`: the last whose first token is <= begin.
    auto it = std::upper_bound(sd.shards.begin(), sd.shards.end(), begin,
                               [](int64_t pos, const Shard& s) { return pos < s.begin; });
    size_t si = static_cast<size_t>(it - sd.shards.begin()) - 1;
    int64_t done = 0;
    while (done < n) {
      const Shard& sh = sd.shards[si];
      const int64_t local = begin + done - sh.begin;
      const int64_t count = std::min(n - done, sh.tokens - local);
      if (count <= 0) {  // empty shards are never written, but stay safe
        ++si;
        continue;
      }
      const uint32_t* src = sh.ids() + local;
      if (ids)
        for (int64_t i = 0; i < count; ++i) ids[done + i] = src[i];
      if (mask) {
        if (sh.mask) {
          const auto* m = reinterpret_cast<const uint8_t*>(sh.mask->bytes().data()) + local;
          for (int64_t i = 0; i < count; ++i) mask[done + i] = m[i] ? 1.0f : 0.0f;
        } else {
          std::fill(mask + done, mask + done + count, 1.0f);
        }
      }
      if (doc_start) {
        std::fill(doc_start + done, doc_start + done + count, false);
        const uint64_t* off = sh.offsets();
        const uint64_t* first = std::lower_bound(off, off + sh.num_docs(), static_cast<uint64_t>(local));
        for (const uint64_t* o = first; o < off + sh.num_docs() && static_cast<int64_t>(*o) < local + count; ++o)
          doc_start[done + static_cast<int64_t>(*o) - local] = true;
      }
      done += count;
      ++si;
    }
  }
};

template <class T>
Result<T> get_field(const json& obj, const std::string& key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) return make_error(where + ": missing field \"" + key + "\"");
  const json& v = obj[key];
  if constexpr (std::is_same_v<T, int64_t>) {
    if (!v.is_number_integer()) return make_error(where + ": field \"" + key + "\" must be an integer");
    return v.get<int64_t>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return make_error(where + ": field \"" + key + "\" must be true or false");
    return v.get<bool>();
  } else {
    if (!v.is_string()) return make_error(where + ": field \"" + key + "\" must be a string");
    return v.get<std::string>();
  }
}

Result<std::shared_ptr<const MappedFile>> map_exact(const fs::path& path, uint64_t bytes, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    return make_error(path.string() + ": missing (the index lists it: " + what + ")");
  HYLO_TRY(auto file, MappedFile::open(path));
  if (file->size() != bytes)
    return make_error(path.string() + ": " + std::to_string(file->size()) + " bytes, but index.json says " + what +
                      " = " + std::to_string(bytes) + " bytes (truncated or from another build)");
  return file;
}

Status load_split(ShardedTokenDataset& ds, Split split, const json& index, const fs::path& index_path) {
  const std::string where = index_path.string() + ": splits." + split_name(split);
  const json& splits = index["splits"];
  if (!splits.contains(split_name(split))) return make_error(where + ": missing");
  const json& s = splits[split_name(split)];
  HYLO_TRY(int64_t tokens, get_field<int64_t>(s, "tokens", where));
  HYLO_TRY(int64_t documents, get_field<int64_t>(s, "documents", where));
  if (!s.contains("shards") || !s["shards"].is_array()) return make_error(where + ": field \"shards\" must be an array");
  SplitData& sd = ds.splits_[static_cast<int>(split)];
  static const std::regex kStem("(train|heldout)-[0-9]{5}");
  for (size_t i = 0; i < s["shards"].size(); ++i) {
    const json& sj = s["shards"][i];
    const std::string w = where + ".shards[" + std::to_string(i) + "]";
    Shard sh;
    HYLO_TRY(sh.stem, get_field<std::string>(sj, "name", w));
    if (!std::regex_match(sh.stem, kStem) || sh.stem.rfind(split_name(split), 0) != 0)
      return make_error(w + ".name: \"" + sh.stem + "\" is not a " + split_name(split) + "-NNNNN shard name");
    HYLO_TRY(sh.tokens, get_field<int64_t>(sj, "tokens", w));
    HYLO_TRY(int64_t docs, get_field<int64_t>(sj, "documents", w));
    if (sh.tokens < 1 || docs < 1 || docs > sh.tokens)
      return make_error(w + ": tokens (" + std::to_string(sh.tokens) + ") and documents (" + std::to_string(docs) +
                        ") must satisfy 1 <= documents <= tokens");
    const fs::path base = ds.dir_ / sh.stem;
    HYLO_TRY(sh.tok, map_exact(base.string() + ".tok", static_cast<uint64_t>(sh.tokens) * 4, w + ".tokens x 4"));
    HYLO_TRY(sh.docs, map_exact(base.string() + ".docs", static_cast<uint64_t>(docs) * 8, w + ".documents x 8"));
    if (ds.has_mask_) {
      HYLO_TRY(sh.mask, map_exact(base.string() + ".mask", static_cast<uint64_t>(sh.tokens), w + ".tokens"));
    }
    // Offsets: 0 first, strictly increasing, inside the shard.
    const uint64_t* off = sh.offsets();
    for (int64_t d = 0; d < docs; ++d) {
      const bool bad = (d == 0 && off[0] != 0) || (d > 0 && off[d] <= off[d - 1]) ||
                       off[d] >= static_cast<uint64_t>(sh.tokens);
      if (bad)
        return make_error(base.string() + ".docs: document " + std::to_string(d) + " starts at " +
                          std::to_string(off[d]) + ", expected offsets to start at 0 and increase below " +
                          std::to_string(sh.tokens));
    }
    const uint32_t* ids = sh.ids();
    for (int64_t t = 0; t < sh.tokens; ++t)
      if (ids[t] >= static_cast<uint64_t>(ds.vocab_))
        return make_error(base.string() + ".tok: token " + std::to_string(t) + " is id " + std::to_string(ids[t]) +
                          ", outside the vocabulary of " + std::to_string(ds.vocab_) + " (index.json vocab_size)");
    sh.begin = sd.tokens;
    sd.tokens += sh.tokens;
    sd.documents += docs;
    sd.shards.push_back(std::move(sh));
  }
  if (sd.tokens != tokens)
    return make_error(where + ".tokens: " + std::to_string(tokens) + ", but its shards hold " +
                      std::to_string(sd.tokens) + " tokens");
  if (sd.documents != documents)
    return make_error(where + ".documents: " + std::to_string(documents) + ", but its shards hold " +
                      std::to_string(sd.documents) + " documents");
  return {};
}

}  // namespace

std::vector<Document> read_documents(const TokenDataset& data, Split split) {
  const int64_t n = data.num_tokens(split);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::vector<float> mask(static_cast<size_t>(n));
  auto starts = std::make_unique<bool[]>(static_cast<size_t>(n));
  data.read(split, 0, n, ids.data(), mask.data(), starts.get());
  std::vector<Document> docs;
  for (int64_t i = 0; i < n; ++i) {
    if (starts[static_cast<size_t>(i)] || docs.empty()) docs.emplace_back();
    Document& d = docs.back();
    d.tokens.push_back(static_cast<uint32_t>(ids[static_cast<size_t>(i)]));
    if (data.has_loss_mask()) d.mask.push_back(mask[static_cast<size_t>(i)] > 0 ? 1 : 0);
  }
  for (size_t i = 0; i < docs.size(); ++i) docs[i].origin.index = static_cast<int64_t>(i);
  return docs;
}

Result<std::shared_ptr<const TokenDataset>> TokenDataset::open(const fs::path& dir) {
  const fs::path index_path = dir / kIndexFile;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return make_error(dir.string() + ": not a directory (expected a token dataset)");
  if (!fs::exists(index_path, ec))
    return make_error(index_path.string() +
                      ": missing; the dataset is incomplete (hylo data writes index.json last) or this is not a "
                      "token dataset");
  HYLO_TRY(std::string text, read_text_file(index_path));
  json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) return make_error(index_path.string() + ": not a JSON object");
  HYLO_TRY(std::string format, get_field<std::string>(index, "format", index_path.string()));
  if (format != kDatasetFormat)
    return make_error(index_path.string() + ": format is \"" + format + "\", expected \"" + kDatasetFormat + "\"");
  HYLO_TRY(int64_t version, get_field<int64_t>(index, "version", index_path.string()));
  if (version != kDatasetVersion)
    return make_error(index_path.string() + ": version " + std::to_string(version) + ", this hylo reads version " +
                      std::to_string(kDatasetVersion));
  auto ds = std::make_shared<ShardedTokenDataset>();
  ds->dir_ = dir;
  HYLO_TRY(ds->vocab_, get_field<int64_t>(index, "vocab_size", index_path.string()));
  if (ds->vocab_ < 1) return make_error(index_path.string() + ": vocab_size must be >= 1");
  HYLO_TRY(ds->has_mask_, get_field<bool>(index, "has_mask", index_path.string()));
  if (index.contains("tokenizer") && index["tokenizer"].is_object()) {
    const json& t = index["tokenizer"];
    if (t.contains("doc_end_id") && t["doc_end_id"].is_number_integer())
      ds->doc_end_ = t["doc_end_id"].get<int32_t>();
  }
  if (!index.contains("splits") || !index["splits"].is_object())
    return make_error(index_path.string() + ": missing object field \"splits\"");
  for (Split split : {Split::kTrain, Split::kHeldout}) HYLO_CHECK_OK(load_split(*ds, split, index, index_path));
  return std::shared_ptr<const TokenDataset>(std::move(ds));
}

}  // namespace hylo::train
