// MLA latent decode benchmark (a program, not a test): per shape, the split-KV kernel (kernels/mla_decode) against
// the plain ATen absorbed decode (matmul + fp32 softmax + matmul, the op's reference form) and torch SDPA (GQA over
// the latent as one key head), on the same caches in the same run; achieved bandwidth (latent bytes read / time)
// against a device-to-device copy measured in the same run. Caches rotate over enough buffers that the set is
// several times the L2, so no iteration reads from the previous one's L2.
//
//   mla_decode_bench [--iters N]           the contiguous kernel against ATen and SDPA
//   mla_decode_bench --paged [--iters N]   the paged kernel (engine cache: 64-token pages in shuffled order, one
//                                          page table row per sequence) beside the contiguous kernel on caches of
//                                          the same shape in the same run; the paged kernel also timed as CUDA
//                                          graph replays (one captured call per cache buffer), as the engine runs it
//   mla_decode_bench --tuning [--iters N]  the paged kernel under forced key tiles / heads per CTA / split counts
//                                          (kernels::set_mla_decode_tuning), to choose the automatic plan
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hylo/kernels/mla_decode/mla_decode.h"

namespace {

// Mean milliseconds per call of fn(i) over `iters` calls after 3 warm-up calls.
double time_ms(int iters, const std::function<void(int)>& fn) {
  for (int i = 0; i < 3; ++i) fn(i);
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  start.record();
  for (int i = 0; i < iters; ++i) fn(i);
  stop.record();
  stop.synchronize();
  return start.elapsed_time(stop) / iters;
}

double copy_bandwidth_gbs(int iters) {
  const int64_t bytes = int64_t{2} << 30;
  auto o = at::TensorOptions().dtype(at::kByte).device(at::kCUDA);
  at::Tensor a = at::empty({bytes}, o), b = at::empty({bytes}, o);
  a.fill_(1);
  const double ms = time_ms(iters, [&](int) { b.copy_(a); });
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

// Paged against contiguous: B sequences of S tokens each, latent width C+R, H heads. GB/s = latent bytes / time.
void bench_paged(int iters, double copy_gbs) {
  std::printf("%-4s %-5s %-4s %-8s | %-10s %-7s %-6s | %-10s %-7s %-6s | %-10s %-7s %-6s\n", "B", "C+R", "H", "S",
              "contig ms", "GB/s", "%copy", "paged ms", "GB/s", "%copy", "graph ms", "GB/s", "%copy");
  struct Shape {
    int64_t b, c, r, h, s;
  };
  std::vector<Shape> shapes;
  for (auto [c, r] : std::vector<std::pair<int64_t, int64_t>>{{128, 32}, {256, 64}, {512, 64}})
    for (int64_t h : {9, 32})
      for (int64_t s : {int64_t{65536}, int64_t{1} << 20}) shapes.push_back({1, c, r, h, s});
  for (auto [c, r] : std::vector<std::pair<int64_t, int64_t>>{{128, 32}, {512, 64}})
    for (int64_t s : {int64_t{8192}, int64_t{65536}}) shapes.push_back({8, c, r, 32, s});
  const int64_t page = 64;
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  for (const Shape& sh : shapes) {
    const int64_t w = sh.c + sh.r, cache_bytes = sh.b * sh.s * w * 2, pages_per_seq = sh.s / page;
    const int nbuf = int(std::max<int64_t>(1, std::min<int64_t>(8, (int64_t{512} << 20) / cache_bytes + 1)));
    std::vector<at::Tensor> caches, pools;
    for (int i = 0; i < nbuf; ++i) {
      caches.push_back(at::randn({sh.b, sh.s, w}, bf));                   // [B, S, C+R]
      pools.push_back(at::randn({sh.b * pages_per_seq, page, w}, bf));    // [P, 64, C+R]
    }
    // Each sequence's pages: a shuffled share of the pool (fragmented, as after many requests came and went).
    at::Tensor table = at::randperm(sh.b * pages_per_seq, at::TensorOptions().dtype(at::kLong))
                           .to(at::kInt).view({sh.b, pages_per_seq}).to(at::kCUDA);  // [B, S / 64]
    at::Tensor lengths = at::full({sh.b}, int(sh.s), at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
    at::Tensor q_lat = at::randn({sh.b, sh.h, sh.c}, bf), q_pe = at::randn({sh.b, sh.h, sh.r}, bf);
    at::Tensor out = at::empty({sh.b, sh.h, sh.c}, bf);
    const double scale = 1.0 / std::sqrt(double(sh.c / 4 + sh.r));
    const double contig = time_ms(iters, [&](int i) {
      const at::Tensor& cache = caches[i % nbuf];
      hylo::kernels::mla_latent_decode(q_lat, q_pe, cache.narrow(2, 0, sh.c), cache.narrow(2, sh.c, sh.r), lengths,
                                       scale, 0, out);
    });
    const double paged = time_ms(iters, [&](int i) {
      hylo::kernels::mla_latent_decode_paged(q_lat, q_pe, pools[i % nbuf], table, lengths, scale, 0, out);
    });
    std::vector<std::unique_ptr<at::cuda::CUDAGraph>> graphs;
    {
      c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
      c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < nbuf; ++i) {
        graphs.push_back(std::make_unique<at::cuda::CUDAGraph>());
        graphs.back()->capture_begin();
        hylo::kernels::mla_latent_decode_paged(q_lat, q_pe, pools[i], table, lengths, scale, 0, out);
        graphs.back()->capture_end();
      }
      side.synchronize();
    }
    const double graphed = time_ms(iters, [&](int i) { graphs[i % nbuf]->replay(); });
    auto gbs = [&](double ms) { return double(cache_bytes) / (ms * 1e-3) / 1e9; };
    std::printf("%-4ld %-5ld %-4ld %-8ld | %-10.4f %-7.0f %-6.1f | %-10.4f %-7.0f %-6.1f | %-10.4f %-7.0f %-6.1f\n",
                long(sh.b), long(w), long(sh.h), long(sh.s), contig, gbs(contig), 100.0 * gbs(contig) / copy_gbs,
                paged, gbs(paged), 100.0 * gbs(paged) / copy_gbs, graphed, gbs(graphed),
                100.0 * gbs(graphed) / copy_gbs);
    std::fflush(stdout);
  }
}

// The paged kernel under forced launch shapes: (tile tokens, head tiles) with the automatic split count, and the
// automatic shape with forced split counts. A forced shape whose ring does not fit falls back to the automatic one.
void bench_tuning(int iters, double copy_gbs) {
  struct Shape {
    int64_t b, c, r, h, s;
  };
  const std::vector<Shape> shapes = {{1, 128, 32, 32, int64_t{1} << 20}, {1, 128, 32, 32, 65536},
                                     {8, 128, 32, 32, 8192},            {1, 128, 32, 9, int64_t{1} << 20},
                                     {1, 256, 64, 32, int64_t{1} << 20}, {1, 512, 64, 32, int64_t{1} << 20}};
  const std::vector<std::pair<int, int>> plans = {{0, 0},  {128, 1}, {64, 1}, {32, 1}, {128, 2},
                                                  {64, 2}, {32, 2},  {64, 4}, {32, 4}};
  const int64_t page = 64;
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  for (const Shape& sh : shapes) {
    const int64_t w = sh.c + sh.r, cache_bytes = sh.b * sh.s * w * 2, pages_per_seq = sh.s / page;
    const int nbuf = int(std::max<int64_t>(1, std::min<int64_t>(8, (int64_t{512} << 20) / cache_bytes + 1)));
    std::vector<at::Tensor> pools;
    for (int i = 0; i < nbuf; ++i) pools.push_back(at::randn({sh.b * pages_per_seq, page, w}, bf));
    at::Tensor table = at::randperm(sh.b * pages_per_seq, at::TensorOptions().dtype(at::kLong))
                           .to(at::kInt).view({sh.b, pages_per_seq}).to(at::kCUDA);
    at::Tensor lengths = at::full({sh.b}, int(sh.s), at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
    at::Tensor q_lat = at::randn({sh.b, sh.h, sh.c}, bf), q_pe = at::randn({sh.b, sh.h, sh.r}, bf);
    at::Tensor out = at::empty({sh.b, sh.h, sh.c}, bf);
    const double scale = 1.0 / std::sqrt(double(sh.c / 4 + sh.r));
    auto run = [&](int64_t splits) {
      return time_ms(iters, [&](int i) {
        hylo::kernels::mla_latent_decode_paged(q_lat, q_pe, pools[i % nbuf], table, lengths, scale, splits, out);
      });
    };
    std::printf("B=%ld C+R=%ld H=%ld S=%ld:", long(sh.b), long(w), long(sh.h), long(sh.s));
    auto report = [&](const char* what, double ms) {
      const double gbs = double(cache_bytes) / (ms * 1e-3) / 1e9;
      std::printf("  %s %.4f ms %.0f%%", what, ms, 100.0 * gbs / copy_gbs);
    };
    for (auto [tn, mt] : plans) {
      hylo::kernels::set_mla_decode_tuning(tn, mt);
      char name[32];
      std::snprintf(name, sizeof(name), "tn%d/mt%d", tn, mt);
      report(name, run(0));
    }
    hylo::kernels::set_mla_decode_tuning(0, 0);
    for (int64_t splits : {66, 132, 264, 528}) {
      char name[32];
      std::snprintf(name, sizeof(name), "splits%ld", long(splits));
      report(name, run(splits));
    }
    std::printf("\n");
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 20;
  bool paged = false, tuning = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) iters = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--paged") == 0) paged = true;
    if (std::strcmp(argv[i], "--tuning") == 0) tuning = true;
  }
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "mla_decode_bench: no CUDA device\n");
    return 1;
  }
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const double copy_gbs = copy_bandwidth_gbs(iters);
  std::printf("device %s, %d SMs, L2 %d MiB; device-to-device copy %.0f GB/s (read+write)\n", prop->name,
              prop->multiProcessorCount, prop->l2CacheSize >> 20, copy_gbs);
  if (tuning) {
    bench_tuning(iters, copy_gbs);
    return 0;
  }
  if (paged) {
    bench_paged(iters, copy_gbs);
    return 0;
  }
  std::printf("%-4s %-5s %-4s %-8s | %-9s %-8s %-6s | %-9s %-6s | %-9s %-6s\n", "B", "C+R", "H", "S", "ours ms",
              "GB/s", "%copy", "aten ms", "ratio", "sdpa ms", "ratio");
  struct Shape {
    int64_t b, c, r, h, s;
  };
  std::vector<Shape> shapes;
  for (auto [c, r] : std::vector<std::pair<int64_t, int64_t>>{{128, 32}, {128, 64}, {256, 64}, {512, 64}})
    for (int64_t h : {16, 32})
      for (int64_t s : {int64_t{65536}, int64_t{262144}, int64_t{1} << 20}) shapes.push_back({1, c, r, h, s});
  for (auto [c, r] : std::vector<std::pair<int64_t, int64_t>>{{128, 32}, {256, 64}, {512, 64}})
    shapes.push_back({8, c, r, 32, 65536});
  shapes.push_back({1, 512, 64, 128, 65536});

  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  for (const Shape& sh : shapes) {
    const int64_t w = sh.c + sh.r;
    const int64_t cache_bytes = sh.b * sh.s * w * 2;
    const int nbuf = int(std::max<int64_t>(1, std::min<int64_t>(16, (int64_t{512} << 20) / cache_bytes + 1)));
    std::vector<at::Tensor> caches;
    for (int i = 0; i < nbuf; ++i) caches.push_back(at::randn({sh.b, sh.s, w}, bf));  // [B, S, C+R]
    at::Tensor q_lat = at::randn({sh.b, sh.h, sh.c}, bf), q_pe = at::randn({sh.b, sh.h, sh.r}, bf);
    const double scale = 1.0 / std::sqrt(double(sh.c / 4 + sh.r));
    auto ckv = [&](int i) { return caches[i % nbuf].narrow(2, 0, sh.c); };
    auto kpe = [&](int i) { return caches[i % nbuf].narrow(2, sh.c, sh.r); };

    const double ours = time_ms(iters, [&](int i) {
      hylo::kernels::mla_latent_decode(q_lat, q_pe, ckv(i), kpe(i), at::Tensor(), scale);
    });
    // The plain ATen absorbed decode, as ops::mla_attention_absorbed writes it for T = 1.
    double aten = -1;
    try {
      aten = time_ms(iters, [&](int i) {
        at::Tensor c = ckv(i), k = kpe(i);
        at::Tensor scores = at::matmul(q_lat.unsqueeze(2), c.unsqueeze(1).transpose(2, 3)) +
                            at::matmul(q_pe.unsqueeze(2), k.unsqueeze(1).transpose(2, 3));  // [B, H, 1, S]
        at::Tensor p = at::softmax(scores.to(at::kFloat) * scale, -1).to(at::kBFloat16);
        at::matmul(p, c.unsqueeze(1));                                                     // [B, H, 1, C]
      });
    } catch (const std::exception& e) {
      std::fprintf(stderr, "aten failed: %.200s\n", e.what());
    }
    // SDPA: q [B, H, 1, C+R] against one key head [B, 1, S, C+R] (the cache rows), values the latent columns.
    double sdpa = -1;
    try {
      at::Tensor q = at::cat({q_lat, q_pe}, 2).unsqueeze(2);  // [B, H, 1, C+R]
      sdpa = time_ms(iters, [&](int i) {
        at::Tensor k = caches[i % nbuf].unsqueeze(1);   // [B, 1, S, C+R]
        at::Tensor v = ckv(i).unsqueeze(1);             // [B, 1, S, C]
        at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, false, scale, /*enable_gqa=*/true);
      });
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sdpa failed: %.200s\n", e.what());
    }
    const double gbs = double(cache_bytes) / (ours * 1e-3) / 1e9;
    std::printf("%-4ld %-5ld %-4ld %-8ld | %-9.4f %-8.0f %-6.1f | %-9.4f %-6.2f | %-9.4f %-6.2f\n", long(sh.b),
                long(w), long(sh.h), long(sh.s), ours, gbs, 100.0 * gbs / copy_gbs, aten, aten / ours, sdpa,
                sdpa / ours);
    std::fflush(stdout);
  }
  return 0;
}
