// PackedLinear: several linear maps of ONE input run as one GEMM against their row-concatenated weights. This is
// the decode-step lever: on a GPU each GEMM on a 1-row input costs a kernel of ~3-5 us whatever its size, so a
// GDN layer's six input projections, the MLP's gate and up, or MLA's two down-projections cost one kernel each
// instead of six / two / two.
//   y = x @ [W_0; W_1; ...]^T (+ [b_0; b_1; ...])  ->  views y_i = y[..., o_i : o_i + N_i]
// Each y_i equals at::linear(x, W_i, b_i): the same dot products over D; only the output columns are concatenated
// (the summation order over D is the GEMM's, so fp rounding may differ in the last bits, never more than the
// usual GEMM bound; on CPU the rows are bitwise equal in practice, tests/cpp/ops/packed_linear_test.cpp).
//
// Consistency with the parameters: the packed copy is built lazily on the first call and rebuilt whenever a source
// changed since it was built, detected per source by
//   - its TensorImpl and data pointer (a loader or .to() rebinds the member to a new tensor / storage),
//   - its sizes and dtype,
//   - its version counter (bumped by every in-place write: copy_, an optimiser step, init_random's fill).
// The check is a handful of integer compares per call (host only). Inference only: the GEMM against the copy does
// not reach the sources' gradients, so callers take this path only when `applies` says no gradient is needed, and
// run the separate at::linear calls (the reference) otherwise. A CUDA graph captures the packed copy's pointer, as
// it captures every weight pointer: an engine's graphs assume the model does not change while they live (the
// warm-up steps before capture build the copy, so no rebuild is ever captured; a rebuild of the same shape
// writes into the existing copy, so a captured address never dangles).
// Cost: the packed copy duplicates the packed weights in memory.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace hylo::ops {

class PackedLinear {
 public:
  // x: [..., D]; weights: [N_i, D] each, one dtype and device; biases: empty, or one per weight (undefined or
  // [N_i]; an undefined one among defined ones packs as zeros). Returns the views y_i [..., N_i] of one GEMM.
  std::vector<at::Tensor> operator()(const at::Tensor& x, const std::vector<const at::Tensor*>& weights,
                                     const std::vector<const at::Tensor*>& biases = {});

  // True when the packed path may run: packing is switched on (set_enabled), the thread is in c10::InferenceMode
  // (the engine's steps, generate, serve, eval: a no_grad training context such as a frozen teacher's forward keeps
  // the separate GEMMs, so training numerics are untouched), x has at most kMaxRows rows (decode
  // steps and small batches, where kernel launches dominate; a prefill chunk or a training batch is compute-bound,
  // so the separate GEMMs cost the same and no packed copy is made for it: a frozen teacher in distillation never
  // allocates one), and no gradient can be needed (x needs none and no source requires grad, whatever the grad
  // mode: a model being trained keeps no second copy of its weights, even for its no_grad evaluations).
  static constexpr int64_t kMaxRows = 512;
  static bool applies(const at::Tensor& x, const std::vector<const at::Tensor*>& weights,
                      const std::vector<const at::Tensor*>& biases = {});

  // Process-wide switch (on by default): tests and benchmarks compare against the separate projections.
  static void set_enabled(bool on);
  static bool enabled();

  int64_t builds() const { return builds_; }  // how many times the packed copy was (re)built (tests)
  const at::Tensor& packed_weight() const { return weight_; }  // [sum N_i, D] or undefined (tests)
  void reset();                               // drop the packed copy (frees its memory)

 private:
  struct Source {
    const void* impl = nullptr;
    const void* data = nullptr;
    int64_t version = -1;
    std::vector<int64_t> sizes;
    at::ScalarType dtype = at::ScalarType::Undefined;
  };
  static Source source_of(const at::Tensor* t);
  bool stale(const std::vector<const at::Tensor*>& all) const;

  std::vector<Source> sources_;  // weights then biases, as last built
  std::vector<int64_t> widths_;  // N_i
  at::Tensor weight_;            // [sum N_i, D]
  at::Tensor bias_;              // [sum N_i] or undefined
  int64_t builds_ = 0;
};

}  // namespace hylo::ops
