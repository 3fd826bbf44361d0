// safetensors: round trip of every dtype (bytes, shapes, metadata, layout as the reference writer makes it),
// sharded checkpoints, and a corpus of broken files generated here -- each must give an error naming the file
// (and the tensor where there is one), never a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include <nlohmann/json.hpp>

#include "hylo/io/safetensors.h"
#include "io_test_util.h"

namespace hylo::io {
namespace {

using testing::Bytes;
namespace fs = std::filesystem;

struct Owned {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  Bytes data;
};

std::vector<Owned> sample_tensors(uint32_t seed) {
  const DType all[] = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI16,
                       DType::kI8, DType::kU64, DType::kU32, DType::kU16, DType::kU8, DType::kBool, DType::kF8E4M3,
                       DType::kF8E5M2};
  std::mt19937 rng(seed);
  std::vector<Owned> out;
  int i = 0;
  for (DType d : all) {
    std::vector<int64_t> shape = i % 3 == 0 ? std::vector<int64_t>{3, 5} : i % 3 == 1 ? std::vector<int64_t>{7}
                                                                                      : std::vector<int64_t>{2, 1, 3};
    int64_t n = 1;
    for (auto s : shape) n *= s;
    Bytes data(static_cast<std::size_t>(n) * dtype_size(d));
    for (auto& b : data) b = static_cast<uint8_t>(d == DType::kBool ? rng() % 2 : rng());
    // Names deliberately not in dtype order, so "layout in name order" is tested.
    out.push_back({"t" + std::to_string((i * 7) % 15) + "." + dtype_name(d), d, shape, std::move(data)});
    ++i;
  }
  out.push_back({"scalar", DType::kF32, {}, Bytes(4, 0x3f)});
  out.push_back({"empty", DType::kF16, {0, 4}, Bytes()});
  return out;
}

Status write_owned(const fs::path& p, const std::vector<Owned>& ts, const std::map<std::string, std::string>& md = {}) {
  std::vector<TensorToWrite> w;
  for (const auto& t : ts)
    w.push_back({t.name, t.dtype, t.shape, std::as_bytes(std::span<const uint8_t>(t.data.data(), t.data.size()))});
  return write_safetensors(p, w, md);
}

TEST(Safetensors, RoundTripEveryDType) {
  auto dir = testing::temp_dir();
  auto ts = sample_tensors(1);
  fs::path p = dir / "all.safetensors";
  ASSERT_TRUE(write_owned(p, ts, {{"format", "pt"}, {"note", "x"}}).ok());
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "x");
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (const auto& t : ts) {
    auto v = f->view(t.name);
    ASSERT_TRUE(v.ok()) << v.error();
    EXPECT_EQ(v->info->dtype, t.dtype) << t.name;
    EXPECT_EQ(v->info->shape, t.shape) << t.name;
    ASSERT_EQ(v->bytes.size(), t.data.size()) << t.name;
    if (!t.data.empty()) EXPECT_EQ(0, std::memcmp(v->bytes.data(), t.data.data(), t.data.size())) << t.name;
  }
  // Layout as the reference writer: header padded to 8 bytes, tensors contiguous in name order.
  Bytes raw = testing::read_bytes(p);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8 + n - 1] == ' ' || raw[8 + n - 1] == '}', true);
  std::vector<TensorInfo> infos = f->tensors();
  std::sort(infos.begin(), infos.end(), [](auto& a, auto& b) { return a.name < b.name; });
  uint64_t expect_offset = 0;
  for (const auto& t : infos) {
    EXPECT_EQ(t.offset, expect_offset) << t.name;
    expect_offset += t.nbytes;
  }
  EXPECT_EQ(8 + n + expect_offset, raw.size());
  // No temporary file is left next to the result.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, WriterRejectsInconsistentInput) {
  auto dir = testing::temp_dir();
  Bytes b(12);
  auto span = std::as_bytes(std::span<const uint8_t>(b));
  auto st = write_safetensors(dir / "x.safetensors", {{"a", DType::kF32, {2, 2}, span}});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().find("\"a\""), std::string::npos) << st.error();
  st = write_safetensors(dir / "x.safetensors", {{"a", DType::kF32, {3}, span}, {"a", DType::kF32, {3}, span}});
  ASSERT_FALSE(st.ok());
  EXPECT_FALSE(fs::exists(dir / "x.safetensors"));
}

// ---- broken files --------------------------------------------------------------------------------------

Bytes make_file(const std::string& header, std::size_t data_bytes) {
  Bytes b;
  testing::put<uint64_t>(b, header.size());
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

// Expects open() to fail with a message that contains every `needle`, and the file path.
void expect_error_at(int line, const fs::path& p, const Bytes& b, std::initializer_list<std::string> needles) {
  SCOPED_TRACE("case at line " + std::to_string(line));
  testing::write_bytes(p, b);
  auto f = SafetensorsFile::open(p);
  ASSERT_FALSE(f.ok()) << "accepted a broken file: " << p;
  EXPECT_NE(f.error().find(p.string()), std::string::npos) << f.error();
  for (const auto& n : needles) EXPECT_NE(f.error().find(n), std::string::npos) << "missing '" << n << "' in: " << f.error();
}
#define expect_error(...) expect_error_at(__LINE__, __VA_ARGS__)

TEST(Safetensors, TruncatedAtEveryByte) {
  auto dir = testing::temp_dir();
  fs::path good = dir / "good.safetensors";
  ASSERT_TRUE(write_owned(good, sample_tensors(2)).ok());
  Bytes raw = testing::read_bytes(good);
  ASSERT_TRUE(SafetensorsFile::open(good).ok());
  fs::path p = dir / "cut.safetensors";
  for (std::size_t n = 0; n < raw.size(); ++n) {
    Bytes cut(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(n));
    expect_error(p, cut, {});
  }
}

TEST(Safetensors, HeaderLengthBounds) {
  auto dir = testing::temp_dir();
  fs::path p = dir / "len.safetensors";
  auto with_len = [](uint64_t len) {
    Bytes b;
    testing::put<uint64_t>(b, len);
    std::string h = "{}      ";
    b.insert(b.end(), h.begin(), h.end());
    return b;
  };
  // Lengths that are negative as int64 (what the reference implementation reads) fall under the same cap.
  expect_error(p, with_len(~0ull), {"header length 18446744073709551615", "maximum"});
  expect_error(p, with_len(1ull << 63), {"header length 9223372036854775808", "maximum"});
  expect_error(p, with_len(200ull * 1000 * 1000), {"maximum"});
  expect_error(p, with_len(9), {"past the end"});
  expect_error(p, Bytes{1, 2, 3}, {"shorter"});
  expect_error(p, Bytes{}, {"shorter"});
  // An empty object is a valid (tensor-less) file.
  testing::write_bytes(p, with_len(8));
  EXPECT_TRUE(SafetensorsFile::open(p).ok());
}

TEST(Safetensors, BrokenHeaders) {
  auto dir = testing::temp_dir();
  fs::path p = dir / "bad.safetensors";
  auto t = [](const std::string& body) { return "{" + body + "}"; };
  const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_error(p, make_file("{\"a\":", 8), {"invalid JSON"});
  expect_error(p, make_file("not json at all", 8), {"invalid JSON"});
  expect_error(p, make_file("[1,2,3]", 8), {"not an object"});
  expect_error(p, make_file(std::string(64, '[') + std::string(64, ']'), 0), {"nesting"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]})"), 8), {"\"a\"", "unknown dtype"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), 8), {"\"a\"", "12 bytes", "span 8"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), 8), {"\"a\"", "shape[0]"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), 8), {"\"a\"", "shape[0]"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"), 8), {"\"a\"", "shape[0]"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), 8), {"\"a\"", "end before"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0]})"), 8), {"\"a\"", "data_offsets"});
  expect_error(p, make_file(t(R"("a":{"shape":[2],"data_offsets":[0,8]})"), 8), {"\"a\"", "dtype"});
  expect_error(p, make_file(t(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), 4), {"\"a\"", "past the end"});
  expect_error(p, make_file(t(R"("a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]})"), 8),
               {"\"a\"", "overflow"});
  expect_error(p, make_file(t(ok_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), 12),
               {"\"a\"", "\"b\"", "overlap"});
  expect_error(p, make_file(t(ok_a + "," + ok_a), 8), {"duplicate key \"a\""});
  expect_error(p, make_file(t(R"("__metadata__":{"k":1},)" + ok_a), 8), {"__metadata__"});
  expect_error(p, make_file(t(R"("__metadata__":[],)" + ok_a), 8), {"__metadata__"});
  expect_error(p, make_file(t(R"("a":[1,2])"), 8), {"\"a\""});
  // The same two tensors without overlap, and a gap in the data section, are fine.
  testing::write_bytes(p, make_file(t(ok_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})"), 20));
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_FALSE(f->view("c").ok());
}

TEST(Safetensors, ShardedCheckpoint) {
  auto dir = testing::temp_dir();
  auto ts = sample_tensors(3);
  std::vector<Owned> a(ts.begin(), ts.begin() + 6), b(ts.begin() + 6, ts.end());
  ASSERT_TRUE(write_owned(dir / "model-00001-of-00002.safetensors", a).ok());
  ASSERT_TRUE(write_owned(dir / "model-00002-of-00002.safetensors", b).ok());
  nlohmann::json idx;
  idx["metadata"] = {{"total_size", 0}};
  for (const auto& t : a) idx["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) idx["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", idx.dump()).ok());
  auto ck = SafetensorsCheckpoint::open(dir);
  ASSERT_TRUE(ck.ok()) << ck.error();
  EXPECT_EQ(ck->names().size(), ts.size());
  for (const auto& t : ts) {
    auto v = ck->view(t.name);
    ASSERT_TRUE(v.ok()) << v.error();
    if (!t.data.empty()) EXPECT_EQ(0, std::memcmp(v->bytes.data(), t.data.data(), t.data.size()));
  }
  EXPECT_FALSE(ck->view("nope").ok());

  // Index naming a missing shard.
  auto bad = idx;
  bad["weight_map"][a[0].name] = "model-00003-of-00002.safetensors";
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", bad.dump()).ok());
  auto e = SafetensorsCheckpoint::open(dir);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("model-00003-of-00002.safetensors"), std::string::npos) << e.error();
  EXPECT_NE(e.error().find("model.safetensors.index.json"), std::string::npos) << e.error();
  // Index naming a tensor its shard lacks.
  bad = idx;
  bad["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors";
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", bad.dump()).ok());
  e = SafetensorsCheckpoint::open(dir);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("ghost.weight"), std::string::npos) << e.error();
  // A shard path that leaves the directory.
  bad = idx;
  bad["weight_map"][a[0].name] = "../model-00001-of-00002.safetensors";
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", bad.dump()).ok());
  EXPECT_FALSE(SafetensorsCheckpoint::open(dir).ok());
  // The same tensor in two shards.
  ASSERT_TRUE(write_owned(dir / "model-00002-of-00002.safetensors", {b[0], a[0]}).ok());
  bad = nlohmann::json::object();
  bad["weight_map"][a[0].name] = "model-00001-of-00002.safetensors";
  bad["weight_map"][b[0].name] = "model-00002-of-00002.safetensors";
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", bad.dump()).ok());
  e = SafetensorsCheckpoint::open(dir);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find(a[0].name), std::string::npos) << e.error();
  // Duplicate key and bad JSON in the index.
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", R"({"weight_map":{"x":"a","x":"b"}})").ok());
  e = SafetensorsCheckpoint::open(dir);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("duplicate key \"x\""), std::string::npos) << e.error();
  ASSERT_TRUE(write_file_atomic(dir / "model.safetensors.index.json", R"({"weight_map":)").ok());
  EXPECT_FALSE(SafetensorsCheckpoint::open(dir).ok());
  // A directory with neither file.
  fs::create_directories(dir / "empty");
  EXPECT_FALSE(SafetensorsCheckpoint::open(dir / "empty").ok());
}

}  // namespace
}  // namespace hylo::io
