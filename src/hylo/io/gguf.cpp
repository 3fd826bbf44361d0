// GGUF reading (llama.cpp's checkpoint format, docs/gguf.md in ggml):
//   u32 magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 kv_count,
//   kv_count x { string key, u32 value_type, value },
//   tensor_count x { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset },
//   padding to `general.alignment` (default 32), then the data section; each tensor at data + offset.
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements (arrays may nest).
// Every length is checked against the bytes that remain before anything is allocated, so a count can not ask
// for more elements than the file has bytes. That still lets a file of N bytes cost ~48 bytes of memory per
// byte as metadata array elements (one GgufValue each), so the total number of array elements in a file is
// capped as well (kMaxArrayElements). Every tensor span is checked against the file before dequantization.
#include "hylo/io/gguf.h"

#include "hylo/io/span_check.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace hylo::io {
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxArrayNesting = 8;         // real files nest at most 1 level; bounds recursion
constexpr uint32_t kMaxDims = 4;            // GGML_MAX_DIMS
// Total metadata array elements in one file, nested arrays included: 64M x ~48 B per GgufValue is ~3 GB, far
// above a real vocabulary (Qwen3: 151,669 tokens and 151,387 merges) and a hard stop for a hostile file.
constexpr uint64_t kMaxArrayElements = 64ull << 20;

using namespace gguf_value;

const char* value_type_name(uint32_t t) {
  static const char* names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  return t <= kF64 ? names[t] : "UNKNOWN";
}

// Fixed size of a scalar value type; 0 for string/array/unknown.
uint64_t scalar_size(uint32_t t) {
  switch (t) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    default: return 0;
  }
}

struct TypeTraits {
  GgmlType type;
  const char* name;
  int64_t block;      // elements per block
  uint64_t bytes;     // bytes per block
};
// ggml block layouts (ggml-common.h); Q8_1 is a compute-only type with no file use and is not listed.
constexpr TypeTraits kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},       {GgmlType::kF16, "F16", 1, 2},      {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 18},   {GgmlType::kQ4_1, "Q4_1", 32, 20},  {GgmlType::kQ5_0, "Q5_0", 32, 22},
    {GgmlType::kQ5_1, "Q5_1", 32, 24},   {GgmlType::kQ8_0, "Q8_0", 32, 34},  {GgmlType::kQ2_K, "Q2_K", 256, 84},
    {GgmlType::kQ3_K, "Q3_K", 256, 110}, {GgmlType::kQ4_K, "Q4_K", 256, 144}, {GgmlType::kQ5_K, "Q5_K", 256, 176},
    {GgmlType::kQ6_K, "Q6_K", 256, 210}, {GgmlType::kQ8_K, "Q8_K", 256, 292},
};

const TypeTraits* traits(uint32_t t) {
  for (const auto& tr : kTypes)
    if (static_cast<uint32_t>(tr.type) == t) return &tr;
  return nullptr;
}

std::string supported_types_text() {
  std::string s;
  for (const auto& tr : kTypes) s += (s.empty() ? "" : " ") + std::string(tr.name);
  return s;
}

// Bounds-checked little-endian reader over the mapped file.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, std::string where) : b_(bytes), where_(std::move(where)) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return b_.size() - pos_; }
  uint64_t array_elements = 0;  // metadata array elements read so far (all keys), against kMaxArrayElements
  const std::string& where() const { return where_; }

  Status need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      return make_error(where_ + ": truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                        std::to_string(pos_) + " but only " + std::to_string(remaining()) + " remain");
    return {};
  }
  template <class T>
  Result<T> read(const std::string& what) {
    HYLO_CHECK_OK(need(sizeof(T), what));
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));  // GGUF is little-endian, as is every host we build for
    pos_ += sizeof(T);
    return v;
  }
  Result<std::string> read_string(const std::string& what) {
    HYLO_TRY(uint64_t len, read<uint64_t>(what + " (string length)"));
    if (len > remaining())
      return make_error(where_ + ": " + what + ": string length " + std::to_string(len) + " at offset " +
                        std::to_string(pos_ - 8) + " exceeds the " + std::to_string(remaining()) +
                        " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  std::span<const std::byte> b_;
  std::string where_;
  uint64_t pos_ = 0;
};

Result<GgufValue> read_value(Cursor& c, uint32_t type, const std::string& what, int depth);

Result<GgufValue> read_scalar(Cursor& c, uint32_t type, const std::string& what) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case kU8: { HYLO_TRY(auto x, c.read<uint8_t>(what)); v.v = uint64_t{x}; break; }
    case kI8: { HYLO_TRY(auto x, c.read<int8_t>(what)); v.v = int64_t{x}; break; }
    case kU16: { HYLO_TRY(auto x, c.read<uint16_t>(what)); v.v = uint64_t{x}; break; }
    case kI16: { HYLO_TRY(auto x, c.read<int16_t>(what)); v.v = int64_t{x}; break; }
    case kU32: { HYLO_TRY(auto x, c.read<uint32_t>(what)); v.v = uint64_t{x}; break; }
    case kI32: { HYLO_TRY(auto x, c.read<int32_t>(what)); v.v = int64_t{x}; break; }
    case kU64: { HYLO_TRY(auto x, c.read<uint64_t>(what)); v.v = uint64_t{x}; break; }
    case kI64: { HYLO_TRY(auto x, c.read<int64_t>(what)); v.v = int64_t{x}; break; }
    case kF32: { HYLO_TRY(auto x, c.read<float>(what)); v.v = double{x}; break; }
    case kF64: { HYLO_TRY(auto x, c.read<double>(what)); v.v = double{x}; break; }
    case kBool: {
      HYLO_TRY(auto x, c.read<uint8_t>(what));
      if (x > 1) return make_error(c.where() + ": " + what + ": BOOL value " + std::to_string(x) + " is neither 0 nor 1");
      v.v = x == 1;
      break;
    }
    default:
      return make_error(c.where() + ": " + what + ": unknown value type " + std::to_string(type) +
                        " (GGUF value types are 0..12)");
  }
  return v;
}

Result<GgufValue> read_array(Cursor& c, const std::string& what, int depth) {
  if (depth >= kMaxArrayNesting)
    return make_error(c.where() + ": " + what + ": arrays nested deeper than " + std::to_string(kMaxArrayNesting));
  HYLO_TRY(uint32_t elem_type, c.read<uint32_t>(what + " (array element type)"));
  HYLO_TRY(uint64_t count, c.read<uint64_t>(what + " (array length)"));
  // Smallest encoding of one element: a string is at least its 8-byte length, an array its 12-byte header.
  uint64_t min_elem = elem_type == kString ? 8 : elem_type == kArray ? 12 : scalar_size(elem_type);
  if (min_elem == 0)
    return make_error(c.where() + ": " + what + ": unknown array element type " + std::to_string(elem_type) +
                      " (GGUF value types are 0..12)");
  if (count > c.remaining() / min_elem)
    return make_error(c.where() + ": " + what + ": array length " + std::to_string(count) + " of " +
                      value_type_name(elem_type) + " cannot fit in the " + std::to_string(c.remaining()) +
                      " bytes left in the file");
  if (count > kMaxArrayElements - c.array_elements)
    return make_error(c.where() + ": " + what + ": array length " + std::to_string(count) + " brings the file's " +
                      "metadata array elements past the limit of " + std::to_string(kMaxArrayElements) +
                      " (each costs ~" + std::to_string(sizeof(GgufValue)) + " bytes of memory)");
  c.array_elements += count;
  GgufArray arr;
  arr.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    HYLO_TRY(GgufValue e, read_value(c, elem_type, what, depth + 1));
    arr.push_back(std::move(e));
  }
  GgufValue v;
  v.type = kArray;
  v.v = std::move(arr);
  return v;
}

Result<GgufValue> read_value(Cursor& c, uint32_t type, const std::string& what, int depth) {
  if (type == kString) {
    HYLO_TRY(std::string s, c.read_string(what));
    GgufValue v;
    v.type = kString;
    v.v = std::move(s);
    return v;
  }
  if (type == kArray) return read_array(c, what, depth);
  return read_scalar(c, type, what);
}

}  // namespace

const char* ggml_type_name(GgmlType type) {
  const TypeTraits* tr = traits(static_cast<uint32_t>(type));
  return tr != nullptr ? tr->name : "UNKNOWN";
}

int64_t GgufTensorInfo::numel() const { return shape_numel(dims); }

std::vector<int64_t> GgufTensorInfo::shape() const { return {dims.rbegin(), dims.rend()}; }

const fs::path& GgufFile::path() const { return file_->path(); }

Result<GgufFile> GgufFile::open(const fs::path& path) {
  HYLO_TRY(auto mapped, MappedFile::open(path));
  Cursor c(mapped->bytes(), path.string());
  const std::string& where = c.where();

  HYLO_TRY(uint32_t magic, c.read<uint32_t>("magic"));
  if (magic != kGgufMagic) return make_error(where + ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  HYLO_TRY(uint32_t version, c.read<uint32_t>("version"));
  if (version == 1)
    return make_error(where + ": GGUF version 1 is not supported (only v2 and v3; v1 used 32-bit lengths) -- "
                              "re-convert the model with a current llama.cpp");
  if (version != 2 && version != 3) {
    if ((version & 0xffff) == 0 && ((version >> 24) == 2 || (version >> 24) == 3))
      return make_error(where + ": big-endian GGUF files are not supported");
    return make_error(where + ": unsupported GGUF version " + std::to_string(version) + " (expected 2 or 3)");
  }
  HYLO_TRY(uint64_t n_tensors, c.read<uint64_t>("tensor count"));
  HYLO_TRY(uint64_t n_kv, c.read<uint64_t>("metadata count"));
  // A key/value takes at least 13 bytes (8 key length + 4 type + 1 value), a tensor info at least 24.
  if (n_kv > c.remaining() / 13)
    return make_error(where + ": metadata count " + std::to_string(n_kv) + " cannot fit in a file of " +
                      std::to_string(mapped->size()) + " bytes");
  if (n_tensors > c.remaining() / 24)
    return make_error(where + ": tensor count " + std::to_string(n_tensors) + " cannot fit in a file of " +
                      std::to_string(mapped->size()) + " bytes");

  GgufFile f;
  f.file_ = mapped;
  f.version_ = version;
  for (uint64_t i = 0; i < n_kv; ++i) {
    HYLO_TRY(std::string key, c.read_string("metadata key #" + std::to_string(i)));
    const std::string what = "metadata key \"" + key + "\"";
    if (key.empty()) return make_error(where + ": metadata key #" + std::to_string(i) + " is empty");
    HYLO_TRY(uint32_t type, c.read<uint32_t>(what + " (value type)"));
    HYLO_TRY(GgufValue value, read_value(c, type, what, 0));
    if (!f.metadata_.emplace(key, std::move(value)).second)
      return make_error(where + ": " + what + " appears twice");
  }

  uint64_t alignment = kDefaultAlignment;
  if (auto it = f.metadata_.find("general.alignment"); it != f.metadata_.end()) {
    const auto* a = std::get_if<uint64_t>(&it->second.v);
    if (a == nullptr || *a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20))
      return make_error(where + ": metadata key \"general.alignment\" must be an unsigned power of two "
                                "(at most 1 MiB)");
    alignment = *a;
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    HYLO_TRY(std::string name, c.read_string("tensor info #" + std::to_string(i) + " name"));
    const std::string tw = where + ": tensor \"" + name + "\"";
    const std::string what = "tensor \"" + name + "\"";
    if (name.empty()) return make_error(where + ": tensor info #" + std::to_string(i) + " has an empty name");
    HYLO_TRY(uint32_t n_dims, c.read<uint32_t>(what + " n_dims"));
    if (n_dims == 0 || n_dims > kMaxDims)
      return make_error(tw + ": n_dims = " + std::to_string(n_dims) + " (expected 1.." + std::to_string(kMaxDims) + ")");
    GgufTensorInfo info;
    info.name = name;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      HYLO_TRY(uint64_t dim, c.read<uint64_t>(what + " dims"));
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, dim, &numel) || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return make_error(tw + ": dimension " + std::to_string(d) + " = " + std::to_string(dim) +
                          (dim == 0 ? " (dims must be positive)" : " overflows the element count"));
      info.dims.push_back(static_cast<int64_t>(dim));
    }
    HYLO_TRY(uint32_t type, c.read<uint32_t>(what + " type"));
    const TypeTraits* tr = traits(type);
    if (tr == nullptr)
      return make_error(tw + ": unsupported ggml tensor type " + std::to_string(type) + " (supported: " +
                        supported_types_text() + ")");
    info.type = tr->type;
    if (info.dims[0] % tr->block != 0)
      return make_error(tw + ": row length " + std::to_string(info.dims[0]) + " is not a multiple of the " +
                        tr->name + " block size " + std::to_string(tr->block));
    if (numel / static_cast<uint64_t>(tr->block) > std::numeric_limits<uint64_t>::max() / tr->bytes)
      return make_error(tw + ": byte size of " + shape_text(info.dims) + " " + tr->name + " overflows 64 bits");
    info.nbytes = numel / static_cast<uint64_t>(tr->block) * tr->bytes;
    HYLO_TRY(uint64_t offset, c.read<uint64_t>(what + " offset"));
    if (offset % alignment != 0)
      return make_error(tw + ": data offset " + std::to_string(offset) + " is not a multiple of the alignment " +
                        std::to_string(alignment));
    info.offset = offset;
    if (f.index_.count(name) != 0) return make_error(tw + ": the tensor name appears twice");
    f.index_[name] = f.tensors_.size();
    f.tensors_.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  uint64_t pos = c.pos();
  f.data_start_ = (pos + alignment - 1) / alignment * alignment;
  const uint64_t file_size = mapped->size();
  const uint64_t data_size = f.data_start_ <= file_size ? file_size - f.data_start_ : 0;
  for (const auto& t : f.tensors_) {
    if (f.data_start_ > file_size || t.offset > data_size || t.nbytes > data_size - t.offset)
      return make_error(where + ": tensor \"" + t.name + "\" (" + ggml_type_name(t.type) + " " + shape_text(t.dims) +
                        ", " + std::to_string(t.nbytes) + " bytes at data offset " + std::to_string(t.offset) +
                        ") runs past the end of the file (data section holds " + std::to_string(data_size) +
                        " bytes; truncated?)");
  }
  std::vector<NamedSpan> spans;
  for (const auto& t : f.tensors_) spans.push_back({&t.name, t.offset, t.nbytes});
  HYLO_CHECK_OK(check_spans_disjoint(std::move(spans), where, " in the data section"));
  return f;
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> GgufFile::raw_bytes(const GgufTensorInfo& info) const {
  return file_->bytes().subspan(data_start_ + info.offset, info.nbytes);
}

Result<std::vector<float>> GgufFile::dequantize(const std::string& name) const {
  const GgufTensorInfo* info = find(name);
  if (info == nullptr) return make_error(path().string() + ": no tensor named \"" + name + "\"");
  std::vector<float> out(static_cast<std::size_t>(info->numel()));
  Status st = dequantize_ggml(info->type, raw_bytes(*info), out.data(), info->numel());
  if (!st.ok()) return make_error(path().string() + ": tensor \"" + name + "\": " + st.error());
  return out;
}

// ---- typed metadata access --------------------------------------------------------------------------------

namespace {
Result<const GgufValue*> lookup(const std::map<std::string, GgufValue>& md, const fs::path& path, const std::string& key) {
  auto it = md.find(key);
  if (it == md.end()) return make_error(path.string() + ": metadata key \"" + key + "\" is missing");
  return &it->second;
}

Result<int64_t> value_as_int(const GgufValue& v, const std::string& where) {
  if (const auto* u = std::get_if<uint64_t>(&v.v)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return make_error(where + ": value " + std::to_string(*u) + " does not fit a signed 64-bit integer");
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v.v)) return *i;
  return make_error(where + ": expected an integer, got " + value_type_name(v.type));
}

Result<double> value_as_float(const GgufValue& v, const std::string& where) {
  if (const auto* d = std::get_if<double>(&v.v)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v.v)) return static_cast<double>(*i);
  return make_error(where + ": expected a number, got " + value_type_name(v.type));
}

Result<const GgufArray*> value_as_array(const GgufValue& v, const std::string& where) {
  if (const auto* a = std::get_if<GgufArray>(&v.v)) return a;
  return make_error(where + ": expected an array, got " + value_type_name(v.type));
}
}  // namespace

Result<std::string> GgufFile::get_string(const std::string& key) const {
  HYLO_TRY(const GgufValue* v, lookup(metadata_, path(), key));
  if (const auto* s = std::get_if<std::string>(&v->v)) return *s;
  return make_error(path().string() + ": metadata key \"" + key + "\": expected a string, got " +
                    value_type_name(v->type));
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  HYLO_TRY(const GgufValue* v, lookup(metadata_, path(), key));
  return value_as_int(*v, path().string() + ": metadata key \"" + key + "\"");
}

Result<double> GgufFile::get_float(const std::string& key) const {
  HYLO_TRY(const GgufValue* v, lookup(metadata_, path(), key));
  return value_as_float(*v, path().string() + ": metadata key \"" + key + "\"");
}

Result<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  HYLO_TRY(const GgufValue* v, lookup(metadata_, path(), key));
  const std::string where = path().string() + ": metadata key \"" + key + "\"";
  HYLO_TRY(const GgufArray* a, value_as_array(*v, where));
  std::vector<std::string> out;
  out.reserve(a->size());
  for (std::size_t i = 0; i < a->size(); ++i) {
    const auto* s = std::get_if<std::string>(&(*a)[i].v);
    if (s == nullptr)
      return make_error(where + ": element " + std::to_string(i) + " is " + value_type_name((*a)[i].type) +
                        ", expected STRING");
    out.push_back(*s);
  }
  return out;
}

Result<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  HYLO_TRY(const GgufValue* v, lookup(metadata_, path(), key));
  const std::string where = path().string() + ": metadata key \"" + key + "\"";
  HYLO_TRY(const GgufArray* a, value_as_array(*v, where));
  std::vector<double> out;
  out.reserve(a->size());
  for (std::size_t i = 0; i < a->size(); ++i) {
    HYLO_TRY(double x, value_as_float((*a)[i], where + " element " + std::to_string(i)));
    out.push_back(x);
  }
  return out;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  HYLO_TRY(const GgufValue* v, lookup(metadata_, path(), key));
  const std::string where = path().string() + ": metadata key \"" + key + "\"";
  HYLO_TRY(const GgufArray* a, value_as_array(*v, where));
  std::vector<int64_t> out;
  out.reserve(a->size());
  for (std::size_t i = 0; i < a->size(); ++i) {
    HYLO_TRY(int64_t x, value_as_int((*a)[i], where + " element " + std::to_string(i)));
    out.push_back(x);
  }
  return out;
}

Result<std::pair<int64_t, uint64_t>> ggml_block_geometry(GgmlType type) {
  const TypeTraits* tr = traits(static_cast<uint32_t>(type));
  if (tr == nullptr) return make_error("unsupported ggml type " + std::to_string(static_cast<uint32_t>(type)));
  return std::pair<int64_t, uint64_t>{tr->block, tr->bytes};
}

}  // namespace hylo::io
