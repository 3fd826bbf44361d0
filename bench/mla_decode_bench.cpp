// MLA latent decode benchmark (a program, not a test): per shape, the split-KV kernel (kernels/mla_decode) against
// the plain ATen absorbed decode (matmul + fp32 softmax + matmul, the op's reference form) and torch SDPA (GQA over
// the latent as one key head), on the same caches in the same run; achieved bandwidth (latent bytes read / time)
// against a device-to-device copy measured in the same run. Caches rotate over enough buffers that the set is
// several times the L2, so no iteration reads from the previous one's L2.
//
//   mla_decode_bench [--iters N]
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
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

}  // namespace

int main(int argc, char** argv) {
  int iters = 20;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "mla_decode_bench: no CUDA device\n");
    return 1;
  }
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const double copy_gbs = copy_bandwidth_gbs(iters);
  std::printf("device %s, %d SMs, L2 %d MiB; device-to-device copy %.0f GB/s (read+write)\n", prop->name,
              prop->multiProcessorCount, prop->l2CacheSize >> 20, copy_gbs);
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
