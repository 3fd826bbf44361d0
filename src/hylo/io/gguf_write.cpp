#include "hylo/io/gguf_write.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "hylo/core/file_util.h"

namespace hylo::io {
namespace {

using namespace gguf_value;

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

Status put_scalar(std::string& out, const GgufValue& v, uint32_t type, const std::string& key) {
  auto as_u = [&]() -> uint64_t {
    if (auto p = std::get_if<uint64_t>(&v.v)) return *p;
    if (auto p = std::get_if<int64_t>(&v.v)) return static_cast<uint64_t>(*p);
    if (auto p = std::get_if<bool>(&v.v)) return *p ? 1 : 0;
    return 0;
  };
  auto as_i = [&]() -> int64_t {
    if (auto p = std::get_if<int64_t>(&v.v)) return *p;
    return static_cast<int64_t>(as_u());
  };
  auto as_f = [&]() -> double {
    if (auto p = std::get_if<double>(&v.v)) return *p;
    return static_cast<double>(as_i());
  };
  switch (type) {
    case kU8: put<uint8_t>(out, static_cast<uint8_t>(as_u())); return {};
    case kI8: put<int8_t>(out, static_cast<int8_t>(as_i())); return {};
    case kU16: put<uint16_t>(out, static_cast<uint16_t>(as_u())); return {};
    case kI16: put<int16_t>(out, static_cast<int16_t>(as_i())); return {};
    case kU32: put<uint32_t>(out, static_cast<uint32_t>(as_u())); return {};
    case kI32: put<int32_t>(out, static_cast<int32_t>(as_i())); return {};
    case kF32: put<float>(out, static_cast<float>(as_f())); return {};
    case kBool: put<uint8_t>(out, as_u() ? 1 : 0); return {};
    case kU64: put<uint64_t>(out, as_u()); return {};
    case kI64: put<int64_t>(out, as_i()); return {};
    case kF64: put<double>(out, as_f()); return {};
    case kString: {
      auto p = std::get_if<std::string>(&v.v);
      if (!p) return make_error("gguf write: key '" + key + "' has type string but holds no string");
      put_string(out, *p);
      return {};
    }
  }
  return make_error("gguf write: key '" + key + "': unknown value type " + std::to_string(type));
}

Status put_value(std::string& out, const GgufValue& v, const std::string& key) {
  if (v.type != kArray) return put_scalar(out, v, v.type, key);
  const auto* arr = std::get_if<GgufArray>(&v.v);
  if (!arr) return make_error("gguf write: key '" + key + "' has type array but holds no array");
  const uint32_t elem = arr->empty() ? kString : (*arr)[0].type;
  if (elem == kArray) return make_error("gguf write: key '" + key + "': nested arrays are not supported");
  put<uint32_t>(out, elem);
  put<uint64_t>(out, arr->size());
  for (const auto& e : *arr) {
    if (e.type != elem) return make_error("gguf write: key '" + key + "': array elements of mixed types");
    HYLO_CHECK_OK(put_scalar(out, e, elem, key));
  }
  return {};
}

}  // namespace

Status write_gguf_metadata(const std::filesystem::path& path, const std::map<std::string, GgufValue>& metadata) {
  std::string out;
  out += "GGUF";
  put<uint32_t>(out, 3);                 // version
  put<uint64_t>(out, 0);                 // tensor count
  put<uint64_t>(out, metadata.size());   // key/value count
  for (const auto& [key, value] : metadata) {
    put_string(out, key);
    put<uint32_t>(out, value.type);
    HYLO_CHECK_OK(put_value(out, value, key));
  }
  while (out.size() % 32 != 0) out.push_back('\0');  // the (empty) data section starts aligned
  return write_file_atomic(path, out);
}

Status write_gguf_tokenizer(const GgufFile& source, const std::filesystem::path& path) {
  std::map<std::string, GgufValue> keep;
  for (const auto& [key, value] : source.metadata())
    if (key.rfind("tokenizer.", 0) == 0 || key == "general.architecture" || key == "general.name") keep[key] = value;
  if (!keep.count("tokenizer.ggml.model"))
    return make_error(source.path().string() + ": no tokenizer.ggml.model key, so there is no tokenizer to copy");
  return write_gguf_metadata(path, keep);
}

}  // namespace hylo::io
