// write_token_dataset: shards (.tok uint32 LE, .docs uint64 LE offsets, .mask bytes), heldout.txt, then
// index.json; every file atomically, the whole directory committed in one step.
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <cstring>

#include "hylo/core/file_util.h"
#include "hylo/train/data_format.h"

namespace hylo::train {

namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little, "token shards are little-endian; add byte swaps here");

const char* split_name(Split split) { return split == Split::kTrain ? "train" : "heldout"; }

std::string shard_stem(Split split, int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s-%05lld", split_name(split), static_cast<long long>(i));
  return buf;
}

namespace {

Status write_bytes(const fs::path& path, const void* data, size_t bytes) {
  return write_file_atomic(path, [&](std::FILE* out) -> Status {
    if (bytes > 0 && std::fwrite(data, 1, bytes, out) != bytes) return make_error(path.string() + ": short write");
    return {};
  });
}

// Writes one split's shards into `dir`; returns its index entry.
Result<json> write_split(const fs::path& dir, Split split, const std::vector<Document>& docs, bool with_mask,
                         int64_t shard_tokens) {
  json shards = json::array();
  int64_t total_tokens = 0;
  size_t d = 0;
  int64_t shard = 0;
  while (d < docs.size()) {
    std::vector<uint32_t> tokens;
    std::vector<uint64_t> offsets;
    std::vector<uint8_t> mask;
    // At least one document per shard; then documents while the shard stays within shard_tokens.
    do {
      const Document& doc = docs[d];
      offsets.push_back(tokens.size());
      tokens.insert(tokens.end(), doc.tokens.begin(), doc.tokens.end());
      if (with_mask) {
        if (doc.mask.empty())
          mask.insert(mask.end(), doc.tokens.size(), uint8_t{1});
        else
          mask.insert(mask.end(), doc.mask.begin(), doc.mask.end());
      }
      ++d;
    } while (d < docs.size() &&
             static_cast<int64_t>(tokens.size() + docs[d].tokens.size()) <= shard_tokens);
    const std::string stem = shard_stem(split, shard);
    HYLO_CHECK_OK(write_bytes(dir / (stem + ".tok"), tokens.data(), tokens.size() * sizeof(uint32_t)));
    HYLO_CHECK_OK(write_bytes(dir / (stem + ".docs"), offsets.data(), offsets.size() * sizeof(uint64_t)));
    if (with_mask) HYLO_CHECK_OK(write_bytes(dir / (stem + ".mask"), mask.data(), mask.size()));
    shards.push_back({{"name", stem},
                      {"tokens", static_cast<int64_t>(tokens.size())},
                      {"documents", static_cast<int64_t>(offsets.size())}});
    total_tokens += static_cast<int64_t>(tokens.size());
    ++shard;
  }
  return json{{"tokens", total_tokens}, {"documents", static_cast<int64_t>(docs.size())}, {"shards", shards}};
}

json origin_json(const Document& doc, const std::vector<SourceRecord>& sources) {
  const DocumentOrigin& o = doc.origin;
  json j{{"source", o.source}, {"document", o.index}, {"tokens", static_cast<int64_t>(doc.tokens.size())}};
  if (o.source >= 0 && o.source < static_cast<int32_t>(sources.size())) j["path"] = sources[o.source].path;
  if (o.byte_begin >= 0) j["bytes"] = {o.byte_begin, o.byte_end};
  if (o.line_begin >= 0) j["lines"] = {o.line_begin, o.line_end};
  return j;
}

}  // namespace

Status write_token_dataset(const fs::path& out, const DatasetContents& c) {
  for (const auto* docs : {&c.train, &c.heldout})
    for (const Document& doc : *docs) {
      if (doc.tokens.empty()) return make_error(out.string() + ": a document has no tokens (builder bug)");
      if (!doc.mask.empty() && doc.mask.size() != doc.tokens.size())
        return make_error(out.string() + ": a document's mask length differs from its token count (builder bug)");
    }
  if (c.shard_tokens < 1) return make_error(out.string() + ": shard_tokens must be >= 1");

  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) return make_error(out.string() + ": exists and is not a directory");
    const bool empty = fs::directory_iterator(out, ec) == fs::directory_iterator();
    if (!empty && !fs::exists(out / kIndexFile, ec))
      return make_error(out.string() + ": refusing to replace a non-empty directory that is not a token dataset "
                        "(it has no index.json)");
  }
  const fs::path staging = out.string() + ".staging-" + std::to_string(::getpid());
  HYLO_CHECK_OK(remove_tree(staging));
  fs::create_directories(staging, ec);
  if (ec) return make_error(staging.string() + ": cannot create directory: " + ec.message());

  auto fail = [&](const ErrorInfo& e) -> Status {
    (void)remove_tree(staging);
    return e;
  };
  bool with_mask = false;
  for (const auto* docs : {&c.train, &c.heldout})
    for (const Document& doc : *docs) with_mask = with_mask || !doc.mask.empty();

  json splits = json::object();
  for (Split split : {Split::kTrain, Split::kHeldout}) {
    auto entry = write_split(staging, split, split == Split::kTrain ? c.train : c.heldout, with_mask, c.shard_tokens);
    if (!entry.ok()) return fail(entry.error_info());
    splits[split_name(split)] = std::move(entry).value();
  }

  // The held-out text as plain text, documents separated by a blank line: `hylo perplexity MODEL heldout.txt`.
  std::string heldout_text;
  std::vector<std::pair<int64_t, int64_t>> text_bytes;  // each held-out document's bytes in heldout.txt
  for (const Document& doc : c.heldout) {
    if (!heldout_text.empty()) heldout_text += "\n\n";
    const auto begin = static_cast<int64_t>(heldout_text.size());
    heldout_text += doc.text;
    text_bytes.emplace_back(begin, static_cast<int64_t>(heldout_text.size()));
  }
  if (auto s = write_file_atomic(staging / kHeldoutTextFile, heldout_text); !s.ok()) return fail(s.error_info());

  json sources = json::array();
  std::vector<int64_t> train_docs(c.sources.size(), 0), heldout_docs(c.sources.size(), 0);
  std::vector<int64_t> train_tokens(c.sources.size(), 0), heldout_tokens(c.sources.size(), 0);
  for (const Document& d : c.train)
    if (d.origin.source >= 0 && d.origin.source < static_cast<int32_t>(c.sources.size())) {
      ++train_docs[d.origin.source];
      train_tokens[d.origin.source] += static_cast<int64_t>(d.tokens.size());
    }
  for (const Document& d : c.heldout)
    if (d.origin.source >= 0 && d.origin.source < static_cast<int32_t>(c.sources.size())) {
      ++heldout_docs[d.origin.source];
      heldout_tokens[d.origin.source] += static_cast<int64_t>(d.tokens.size());
    }
  for (size_t i = 0; i < c.sources.size(); ++i) {
    json s{{"id", static_cast<int64_t>(i)},
           {"path", c.sources[i].path},
           {"kind", c.sources[i].kind},
           {"train_documents", train_docs[i]},
           {"train_tokens", train_tokens[i]},
           {"heldout_documents", heldout_docs[i]},
           {"heldout_tokens", heldout_tokens[i]}};
    for (auto it = c.sources[i].extra.begin(); it != c.sources[i].extra.end(); ++it) s[it.key()] = it.value();
    sources.push_back(std::move(s));
  }
  json heldout_list = json::array();
  for (size_t i = 0; i < c.heldout.size(); ++i) {
    json j = origin_json(c.heldout[i], c.sources);
    j["text_bytes"] = {text_bytes[i].first, text_bytes[i].second};
    heldout_list.push_back(std::move(j));
  }

  json index{{"format", kDatasetFormat},
             {"version", kDatasetVersion},
             {"vocab_size", c.tokenizer.value("vocab_size", int64_t{0})},
             {"has_mask", with_mask},
             {"tokenizer", c.tokenizer},
             {"splits", splits},
             {"sources", sources},
             {"heldout", {{"rule", c.heldout_rule}, {"text_file", kHeldoutTextFile}, {"documents", heldout_list}}},
             {"build", c.build}};
  // Last: a directory without index.json is an incomplete dataset.
  if (auto s = write_file_atomic(staging / kIndexFile, index.dump(2) + "\n"); !s.ok()) return fail(s.error_info());
  if (auto s = commit_directory_atomic(staging, out); !s.ok()) return fail(s.error_info());
  return {};
}

}  // namespace hylo::train
