// GGUF v2/v3 reading: metadata key/values, tensor infos, and dequantization to f32 of F32, F16, BF16,
// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K (ggml block layouts). Validated like
// safetensors: magic and version, string and array lengths within the file, known value and tensor types, dims
// product x type size == span, alignment, spans inside the file and non-overlapping, duplicate names and keys.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "hylo/core/file_util.h"
#include "hylo/core/result.h"

namespace hylo::io {

enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kBF16 = 30,
};
const char* ggml_type_name(GgmlType type);

// GGUF metadata value type ids as stored in the file (gguf spec); a namespace so the short names stay out of
// hylo::io unless a file asks for them.
namespace gguf_value {
enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};
}  // namespace gguf_value

// A metadata value: scalars, a string, or an array of one of those.
struct GgufValue;
using GgufArray = std::vector<GgufValue>;
struct GgufValue {
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> v;
  uint32_t type = 0;  // the GGUF value type id as stored
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;     // GGUF order: dims[0] is the fastest-varying (ne0)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;           // within the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
  // Row-major shape as torch/HF see it: dims reversed.
  std::vector<int64_t> shape() const;
};

class GgufFile {
 public:
  static Result<GgufFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(const std::string& name) const;

  // Typed metadata access; errors name the file, the key and the expected type.
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;      // any integer type
  Result<double> get_float(const std::string& key) const;     // any float or integer type
  Result<std::vector<std::string>> get_string_array(const std::string& key) const;
  Result<std::vector<double>> get_float_array(const std::string& key) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& key) const;
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }

  std::span<const std::byte> raw_bytes(const GgufTensorInfo& info) const;
  // Dequantizes a whole tensor to f32 in row-major order (numel values).
  Result<std::vector<float>> dequantize(const std::string& name) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t data_start_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

// (elements per block, bytes per block) of a ggml type; an error for a type this reader does not know.
Result<std::pair<int64_t, uint64_t>> ggml_block_geometry(GgmlType type);

// Dequantizes `n` values of a ggml type from `src` into `dst` (n must be a multiple of the block size).
Status dequantize_ggml(GgmlType type, std::span<const std::byte> src, float* dst, int64_t n);

}  // namespace hylo::io
