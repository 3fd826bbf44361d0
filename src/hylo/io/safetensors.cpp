// safetensors: an 8-byte little-endian header length N, N bytes of JSON (tensor name -> {dtype, shape,
// data_offsets}, plus an optional "__metadata__" string map), then the data section. Every field of an
// untrusted file is checked before any byte of tensor data is handed out.
#include "hylo/io/safetensors.h"

#include "hylo/io/span_check.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "hylo/io/json_strict.h"

namespace hylo::io {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A header is JSON for a few thousand tensors; 100 MB is the reference implementation's limit as well.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(p[i]);
  return v;
}

// A JSON value that is a non-negative integer (not 2.0, not -1, not "3").
bool as_nonneg_int(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

int64_t TensorInfo::numel() const { return shape_numel(shape); }

const fs::path& SafetensorsFile::path() const { return file_->path(); }

Result<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  HYLO_TRY(auto mapped, MappedFile::open(path));
  const std::string where = path.string();
  auto bytes = mapped->bytes();
  const uint64_t file_size = bytes.size();
  if (file_size < 8)
    return make_error(where + ": not a safetensors file: " + std::to_string(file_size) +
                      " bytes, shorter than the 8-byte header length");
  const uint64_t header_len = read_u64_le(bytes.data());
  if (header_len > kMaxHeaderBytes)
    return make_error(where + ": header length " + std::to_string(header_len) + " exceeds the maximum of " +
                      std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_len > file_size - 8)
    return make_error(where + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                      std::to_string(file_size - 8) + " bytes after the length field; truncated?)");
  if (header_len < 2) return make_error(where + ": header of " + std::to_string(header_len) + " bytes cannot hold a JSON object");

  std::string_view header_text(reinterpret_cast<const char*>(bytes.data() + 8), header_len);
  // The reference writer pads the header with spaces to a multiple of 8; JSON ignores trailing whitespace.
  HYLO_TRY(json header, parse_json_strict(header_text, where + ": header", /*max_depth=*/8));
  if (!header.is_object()) return make_error(where + ": header is JSON but not an object");

  SafetensorsFile f;
  f.file_ = mapped;
  f.data_start_ = 8 + header_len;
  const uint64_t data_size = file_size - f.data_start_;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return make_error(where + ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return make_error(where + ": __metadata__[\"" + m.key() + "\"] must be a string, got " + m.value().type_name());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ": tensor \"" + name + "\"";
    if (name.empty()) return make_error(where + ": a tensor has an empty name");
    if (!v.is_object()) return make_error(tw + ": entry must be an object with dtype, shape, data_offsets");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return make_error(tw + ": missing or non-string \"dtype\"");
    if (sh == v.end() || !sh->is_array()) return make_error(tw + ": missing or non-array \"shape\"");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      return make_error(tw + ": \"data_offsets\" must be an array [begin, end]");

    TensorInfo info;
    info.name = name;
    auto dtype = parse_dtype(dt->get<std::string>());
    if (!dtype)
      return make_error(tw + ": unknown dtype \"" + dt->get<std::string>() +
                        "\" (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2)");
    info.dtype = *dtype;
    uint64_t numel = 1;
    bool overflow = false;
    for (std::size_t i = 0; i < sh->size(); ++i) {
      uint64_t d = 0;
      if (!as_nonneg_int((*sh)[i], &d))
        return make_error(tw + ": shape[" + std::to_string(i) + "] = " + (*sh)[i].dump() +
                          " is not a non-negative integer");
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return make_error(tw + ": shape[" + std::to_string(i) + "] = " + std::to_string(d) + " is too large");
      overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
      info.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t expected_bytes = 0;
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &expected_bytes))
      return make_error(tw + ": shape " + shape_text(info.shape) + " overflows 64-bit element/byte counts");
    uint64_t begin = 0, end = 0;
    if (!as_nonneg_int((*off)[0], &begin) || !as_nonneg_int((*off)[1], &end))
      return make_error(tw + ": data_offsets " + off->dump() + " are not non-negative integers");
    if (end < begin)
      return make_error(tw + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] end before they begin");
    if (end - begin != expected_bytes)
      return make_error(tw + ": shape " + shape_text(info.shape) + " x " + dtype_name(info.dtype) + " needs " +
                        std::to_string(expected_bytes) + " bytes but data_offsets span " + std::to_string(end - begin));
    if (end > data_size)
      return make_error(tw + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        "] run past the end of the data section (" + std::to_string(data_size) + " bytes; truncated?)");
    info.offset = begin;
    info.nbytes = end - begin;
    f.tensors_.push_back(std::move(info));
  }

  // Non-empty spans must not share bytes (a file may leave gaps; the reference writer does not).
  std::vector<NamedSpan> spans;
  for (const auto& t : f.tensors_) spans.push_back({&t.name, t.offset, t.nbytes});
  HYLO_CHECK_OK(check_spans_disjoint(std::move(spans), where));
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Result<TensorView> SafetensorsFile::view(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) return make_error(path().string() + ": no tensor named \"" + name + "\"");
  TensorView v;
  v.info = info;
  v.bytes = file_->bytes().subspan(data_start_ + info->offset, info->nbytes);
  v.file = file_;
  return v;
}

// ---- sharded checkpoints --------------------------------------------------------------------------------

Result<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const fs::path& file_or_dir) {
  SafetensorsCheckpoint ck;
  std::error_code ec;
  fs::path index_path;
  if (fs::is_directory(file_or_dir, ec)) {
    if (fs::exists(file_or_dir / "model.safetensors.index.json", ec)) {
      index_path = file_or_dir / "model.safetensors.index.json";
    } else if (fs::exists(file_or_dir / "model.safetensors", ec)) {
      HYLO_TRY(auto f, SafetensorsFile::open(file_or_dir / "model.safetensors"));
      ck.files_.push_back(std::move(f));
    } else {
      return make_error(file_or_dir.string() +
                        ": directory holds neither model.safetensors nor model.safetensors.index.json");
    }
  } else if (file_or_dir.filename().string().ends_with(".index.json")) {
    index_path = file_or_dir;
  } else {
    HYLO_TRY(auto f, SafetensorsFile::open(file_or_dir));
    ck.files_.push_back(std::move(f));
  }

  // Tensors the index promises, by shard file name.
  std::map<std::string, std::vector<std::string>> expected;
  if (!index_path.empty()) {
    const std::string where = index_path.string();
    HYLO_TRY(std::string text, read_text_file(index_path));
    HYLO_TRY(json index, parse_json_strict(text, where, /*max_depth=*/8));
    if (!index.is_object()) return make_error(where + ": not a JSON object");
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object())
      return make_error(where + ": missing \"weight_map\" object (tensor name -> shard file)");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        return make_error(where + ": weight_map[\"" + it.key() + "\"] must be a shard file name string");
      const std::string shard = it.value().get<std::string>();
      // Shards live next to the index; a path that climbs out or is absolute is refused.
      fs::path sp(shard);
      if (shard.empty() || sp.is_absolute() || sp.has_parent_path() || shard == "." || shard == "..")
        return make_error(where + ": weight_map[\"" + it.key() + "\"] = \"" + shard +
                          "\" is not a plain file name in the checkpoint directory");
      expected[shard].push_back(it.key());
    }
    if (expected.empty()) return make_error(where + ": weight_map is empty");
    const fs::path dir = index_path.parent_path();
    for (const auto& [shard, names] : expected) {
      fs::path shard_path = dir / shard;
      if (!fs::exists(shard_path, ec))
        return make_error(where + ": shard \"" + shard + "\" (holding e.g. tensor \"" + names.front() +
                          "\") does not exist at " + shard_path.string());
      HYLO_TRY(auto f, SafetensorsFile::open(shard_path));
      for (const auto& n : names)
        if (f.find(n) == nullptr)
          return make_error(where + ": tensor \"" + n + "\" is listed in shard \"" + shard + "\" but " +
                            shard_path.string() + " does not contain it");
      ck.files_.push_back(std::move(f));
    }
  }

  for (std::size_t i = 0; i < ck.files_.size(); ++i) {
    for (const auto& t : ck.files_[i].tensors()) {
      auto [it, inserted] = ck.owner_.emplace(t.name, i);
      if (!inserted)
        return make_error("tensor \"" + t.name + "\" appears in both " + ck.files_[it->second].path().string() +
                          " and " + ck.files_[i].path().string());
    }
  }
  return ck;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& [name, idx] : owner_) out.push_back(name);
  return out;
}

const TensorInfo* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = owner_.find(name);
  return it == owner_.end() ? nullptr : files_[it->second].find(name);
}

Result<TensorView> SafetensorsCheckpoint::view(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) {
    std::string where = files_.empty() ? std::string("checkpoint") : files_.front().path().parent_path().string();
    return make_error(where + ": no tensor named \"" + name + "\" in any shard");
  }
  return files_[it->second].view(name);
}

// ---- writing ----------------------------------------------------------------------------------------------

Status write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string();
  std::vector<const TensorToWrite*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });

  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const TensorToWrite& t = *order[i];
    const std::string tw = where + ": tensor \"" + t.name + "\"";
    if (t.name.empty() || t.name == "__metadata__") return make_error(where + ": invalid tensor name \"" + t.name + "\"");
    if (i > 0 && order[i - 1]->name == t.name) return make_error(tw + ": given twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return make_error(tw + ": negative dimension in shape " + shape_text(t.shape));
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
        return make_error(tw + ": shape " + shape_text(t.shape) + " overflows");
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t.dtype)), &nbytes) || nbytes != t.bytes.size())
      return make_error(tw + ": shape " + shape_text(t.shape) + " x " + dtype_name(t.dtype) + " needs " +
                        std::to_string(nbytes) + " bytes, got " + std::to_string(t.bytes.size()));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    return make_error(where + ": tensor names and metadata must be valid UTF-8 (" + e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned, as the reference writer does
  return write_file_atomic(path, [&](std::FILE* out) -> Status {
    unsigned char len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    if (std::fwrite(len, 1, 8, out) != 8 || std::fwrite(text.data(), 1, text.size(), out) != text.size())
      return make_error(where + ": short write");
    for (const TensorToWrite* t : order)
      if (!t->bytes.empty() && std::fwrite(t->bytes.data(), 1, t->bytes.size(), out) != t->bytes.size())
        return make_error(where + ": short write of tensor \"" + t->name + "\"");
    return {};
  });
}

}  // namespace hylo::io
