// Helpers for the io tests: a fresh temporary directory per test, raw file writing, and a small GGUF writer
// that can also produce deliberately broken files (every field is written as given, nothing is checked).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace hylo::io::testing {

using Bytes = std::vector<uint8_t>;

// A fresh directory for the current test, removed (with its contents) when the test ends.
struct TempDir : std::filesystem::path {
  explicit TempDir(std::filesystem::path p) : std::filesystem::path(std::move(p)) {}
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(*this, ec);
  }
};

inline TempDir temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  // tmpfs when there is one: the truncation tests write a thousand small files.
  std::error_code ec;
  std::filesystem::path base =
      std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
  auto dir = base / ("hylo_io_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return TempDir(dir);
}

inline void write_bytes(const std::filesystem::path& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline Bytes read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

template <class T>
void put(Bytes& b, T v) {
  uint8_t tmp[sizeof(T)];
  std::memcpy(tmp, &v, sizeof(T));
  b.insert(b.end(), tmp, tmp + sizeof(T));
}

inline void put_str(Bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// GGUF value type ids.
enum : uint32_t { kU8 = 0, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64 };

// Writes GGUF files field by field. Metadata entries are pre-encoded (type id + value bytes) so tests can
// inject any malformed value.
struct GgufBuilder {
  uint32_t magic = 0x46554747;
  uint32_t version = 3;
  uint64_t alignment = 32;
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    Bytes data;
    int64_t offset_override = -1;  // >= 0: write this offset instead of the computed one
  };
  std::vector<std::pair<std::string, Bytes>> kvs;  // key -> (u32 type + value)
  std::vector<Tensor> tensors;
  std::optional<uint64_t> tensor_count_override, kv_count_override;

  void kv_raw(const std::string& key, uint32_t type, const Bytes& value) {
    Bytes b;
    put<uint32_t>(b, type);
    b.insert(b.end(), value.begin(), value.end());
    kvs.emplace_back(key, b);
  }
  void kv_u32(const std::string& key, uint32_t v) {
    Bytes b;
    put(b, v);
    kv_raw(key, kU32, b);
  }
  void kv_f32(const std::string& key, float v) {
    Bytes b;
    put(b, v);
    kv_raw(key, kF32, b);
  }
  void kv_str(const std::string& key, const std::string& v) {
    Bytes b;
    put_str(b, v);
    kv_raw(key, kString, b);
  }
  void kv_str_array(const std::string& key, const std::vector<std::string>& v) {
    Bytes b;
    put<uint32_t>(b, kString);
    put<uint64_t>(b, v.size());
    for (const auto& s : v) put_str(b, s);
    kv_raw(key, kArray, b);
  }
  void tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, Bytes data) {
    tensors.push_back({name, std::move(dims), type, std::move(data)});
  }

  Bytes build() const {
    Bytes b;
    put(b, magic);
    put(b, version);
    put<uint64_t>(b, tensor_count_override.value_or(tensors.size()));
    put<uint64_t>(b, kv_count_override.value_or(kvs.size()));
    for (const auto& [k, v] : kvs) {
      put_str(b, k);
      b.insert(b.end(), v.begin(), v.end());
    }
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors) {
      put_str(b, t.name);
      put<uint32_t>(b, static_cast<uint32_t>(t.dims.size()));
      for (auto d : t.dims) put<uint64_t>(b, d);
      put<uint32_t>(b, t.type);
      uint64_t off = t.offset_override >= 0 ? static_cast<uint64_t>(t.offset_override) : offset;
      put<uint64_t>(b, off);
      offsets.push_back(off);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    const std::size_t data_start = b.size();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      if (data_start + offsets[i] + t.data.size() > b.size()) {
        if (t.offset_override >= 0) continue;  // an overridden offset may point outside the file on purpose
        b.resize(data_start + offsets[i] + t.data.size(), 0);
      }
      std::memcpy(b.data() + data_start + offsets[i], t.data.data(), t.data.size());
    }
    return b;
  }
};

inline Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace hylo::io::testing
