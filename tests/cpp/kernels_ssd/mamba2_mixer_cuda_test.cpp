// The Mamba2 mixer on CUDA, where ssd_chunk and ssd_recurrent route to the SSD kernels (prefill, and the decode
// step writing the mixer's state in place): a stateless forward, and a prefill followed by decode steps, against
// the same layer in fp64 on the CPU. Bound: 4x the error of the same fp32 layer on the CPU (the ATen forms) plus
// 1e-5, as the kernel tests (tests/cpp/kernels_ssd/ssd_cuda_test.cpp). Skipped without CUDA.
// Also a training step (forward and backward with every parameter and the input requiring a gradient), where
// ssd_chunk runs its autograd wrapper (forward and backward kernels): every gradient against the fp64 layer's,
// bound 4x the same layer's error on the GPU in the ATen form (HYLO_SSD_KERNELS=0) plus 1e-5.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <set>
#include <map>
#include <string>
#include <vector>

#include "kernels_gdn/cuda_test_util.h"
#include "hylo/model/mixer.h"
#include "hylo/model/mixers/mamba2.h"

namespace hylo {
namespace {

using kernels_test::rel_err;

#ifdef HYLO_HAVE_CUDA
// One Mamba2 layer with the 1B plans' head shape (d_state = head_dim = 64), Zebra's B per kv group.
ModelConfig config() {
  ModelConfig c;
  c.hidden_size = 64;
  LayerSpec l;
  l.mixer = MixerKind::kMamba2;
  Mamba2Spec& m = l.mamba2;
  m.n_heads = 4;
  m.head_dim = 64;
  m.d_state = 64;
  m.d_inner = 4 * 64;
  m.d_xb = 2 * 64;
  m.conv_size = 4;
  m.chunk_size = 256;
  m.norm_group_size = 64;
  c.layers.push_back(l);
  return c;
}

// Parameters with an initialised layer's magnitudes (tests/cpp/mamba2/mamba2_mixer_test.cpp, HYLO.md 2.4).
void randomize(Mixer& mixer) {
  at::manual_seed(5);
  mixer.visit_parameters("", [](const std::string& name, at::Tensor& p) {
    const auto o = p.options();
    if (name == "mamba.A_log") {
      p = at::log(at::rand(p.sizes(), o) * 15 + 1);
    } else if (name == "mamba.dt_bias") {
      const at::Tensor dt = at::exp(at::rand(p.sizes(), o) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
      p = dt + at::log(-at::expm1(-dt));
    } else if (name == "mamba.D" || name == "mamba.norm.weight") {
      p = 1 + 0.3 * at::randn(p.sizes(), o);
    } else if (name == "mamba.conv1d.weight" || name == "mamba.conv1d.bias") {
      p = (at::rand(p.sizes(), o) * 2 - 1) * 0.5;
    } else {
      p = at::randn(p.sizes(), o) / std::sqrt(static_cast<double>(p.size(1)));
    }
  });
}

// The fp64 layer's parameters copied into a layer of the given options.
std::unique_ptr<Mixer> copy_of(Mixer& src, const ModelConfig& c, const at::TensorOptions& o) {
  std::map<std::string, at::Tensor> ps;
  src.visit_parameters("", [&](const std::string& n, at::Tensor& p) { ps[n] = p; });
  auto m = make_mixer(c, c.layers[0], o);
  m->visit_parameters("", [&](const std::string& n, at::Tensor& p) { p = ps.at(n).to(o.device(), o.dtype()); });
  return m;
}

// Outputs of a prefill of `pre` tokens then one-token decode steps to the end, concatenated: [B, T, D].
at::Tensor prefill_then_decode(Mixer& m, const at::Tensor& u, int64_t pre, const at::TensorOptions& o) {
  const int64_t T = u.size(1);
  auto state = m.new_state(u.size(0), T, o);
  std::vector<at::Tensor> ys = {m.forward(u.narrow(1, 0, pre), at::arange(pre), state.get())};
  for (int64_t t = pre; t < T; ++t) ys.push_back(m.forward(u.narrow(1, t, 1), at::arange(t, t + 1), state.get()));
  return at::cat(ys, 1);
}

TEST(SsdCuda, Mamba2MixerOnCudaEqualsReference) {
  HYLO_REQUIRE_CUDA();
  at::NoGradGuard no_grad;  // inference: the kernels run only without a gradient
  const ModelConfig c = config();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const auto gpu = f32.device(at::kCUDA);
  auto ref = make_mixer(c, c.layers[0], f64);
  randomize(*ref);
  auto cpu = copy_of(*ref, c, f32);
  auto cuda = copy_of(*ref, c, gpu);
  const at::Tensor u = at::randn({2, 131, 64}, f64).to(at::kFloat).to(at::kDouble);  // fp32-exact input
  const int64_t T = u.size(1);

  const at::Tensor whole_ref = ref->forward(u, at::arange(T), nullptr);
  const double e_whole = rel_err(cuda->forward(u.to(gpu), at::arange(T), nullptr), whole_ref);
  const double a_whole = rel_err(cpu->forward(u.to(at::kFloat), at::arange(T), nullptr), whole_ref);
  std::printf("  mixer stateless forward: cuda %.2e (cpu fp32 %.2e)\n", e_whole, a_whole);
  EXPECT_LE(e_whole, 4.0 * a_whole + 1e-5);

  const int64_t pre = 125;  // then 6 decode steps
  const double e_dec = rel_err(prefill_then_decode(*cuda, u.to(gpu), pre, gpu), whole_ref);
  const double a_dec = rel_err(prefill_then_decode(*cpu, u.to(at::kFloat), pre, f32), whole_ref);
  std::printf("  mixer prefill + decode: cuda %.2e (cpu fp32 %.2e)\n", e_dec, a_dec);
  EXPECT_LE(e_dec, 4.0 * a_dec + 1e-5);
}
// Whether the autograd graph behind `out` holds a node of ssd_chunk's kernel wrapper (kernels::ssd_chunk_autograd).
bool graph_has_ssd_kernel(const at::Tensor& out) {
  std::deque<torch::autograd::Node*> todo = {out.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    torch::autograd::Node* n = todo.front();
    todo.pop_front();
    if (!n || !seen.insert(n).second) continue;
    if (n->name().find("SsdChunkFn") != std::string::npos) return true;
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return false;
}

// One training step's gradients: loss = sum(layer(u) * g); every parameter and u require a gradient.
// Returns the gradients by parameter name, and u's under "input".
std::map<std::string, at::Tensor> step_grads(Mixer& m, const at::Tensor& u, const at::Tensor& g, bool* kernel_ran) {
  std::map<std::string, at::Tensor> leaves;
  m.visit_parameters("", [&](const std::string& n, at::Tensor& p) {
    p = p.detach().requires_grad_(true);
    leaves[n] = p;
  });
  const at::Tensor x = u.detach().clone().requires_grad_(true);
  const at::Tensor out = m.forward(x, at::arange(u.size(1)), nullptr);  // [B, T, D]
  if (kernel_ran) *kernel_ran = graph_has_ssd_kernel(out);
  (out * g.to(out.device(), out.scalar_type())).sum().backward();
  std::map<std::string, at::Tensor> grads;
  for (auto& [n, p] : leaves) grads[n] = p.grad();
  grads["input"] = x.grad();
  return grads;
}

TEST(SsdCuda, Mamba2MixerTrainingStepOnCudaEqualsAtenPath) {
  HYLO_REQUIRE_CUDA();
  const ModelConfig c = config();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const auto gpu = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  auto ref = make_mixer(c, c.layers[0], f64);
  randomize(*ref);
  const at::Tensor u = at::randn({2, 131, 64}, f64).to(at::kFloat).to(at::kDouble);  // fp32-exact
  const at::Tensor g = at::randn({2, 131, 64}, f64).to(at::kFloat).to(at::kDouble);
  const auto want = step_grads(*ref, u, g, nullptr);
  auto kernel_layer = copy_of(*ref, c, gpu);
  bool kernel_ran = false;
  const auto got = step_grads(*kernel_layer, u.to(gpu), g, &kernel_ran);
  EXPECT_TRUE(kernel_ran) << "the mixer's ssd_chunk did not run the kernel wrapper";
  setenv("HYLO_SSD_KERNELS", "0", 1);
  auto aten_layer = copy_of(*ref, c, gpu);
  bool aten_kernel = true;
  const auto aten = step_grads(*aten_layer, u.to(gpu), g, &aten_kernel);
  unsetenv("HYLO_SSD_KERNELS");
  EXPECT_FALSE(aten_kernel) << "HYLO_SSD_KERNELS=0 still ran the kernel wrapper";
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.at(name).defined() && aten.at(name).defined()) << name;
    const double e = rel_err(got.at(name), w), a = rel_err(aten.at(name), w);
    std::printf("  training step grad %-22s cuda kernels %.2e (cuda aten %.2e)\n", name.c_str(), e, a);
    EXPECT_LE(e, 4.0 * a + 1e-5) << name;
  }
}
#endif

}  // namespace
}  // namespace hylo
