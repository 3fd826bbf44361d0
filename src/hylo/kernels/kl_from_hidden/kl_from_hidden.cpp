// kl_from_hidden (kl_from_hidden.h): the vocabulary walk, the GEMMs (at::mm with an fp32 result: cuBLAS
// accumulates in fp32 and the logits are never rounded to bf16) and the autograd wrapper.
#include "hylo/kernels/kl_from_hidden/kl_from_hidden.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>
#include <string>

#include "hylo/core/result.h"
#include "hylo/kernels/kl_from_hidden/kl_softmax_stats.h"

namespace hylo::kernels {
namespace {

constexpr int64_t kTileValues = int64_t{1} << 25;  // one fp32 logits tile: 128 MiB

struct Tiling {
  int64_t vocab_tile, row_chunk;
};

// Vocabulary tiles of a multiple of 256 columns and row chunks so that one tile holds <= kTileValues values.
Tiling choose_tiling(int64_t n, int64_t v, int64_t vocab_tile) {
  Tiling t{};
  if (vocab_tile > 0) {
    t.vocab_tile = std::min(vocab_tile, v);
  } else {
    t.vocab_tile = std::max<int64_t>(256, (kTileValues / std::max<int64_t>(n, 1)) / 256 * 256);
    t.vocab_tile = std::min(t.vocab_tile, v);
  }
  t.row_chunk = std::clamp<int64_t>(kTileValues / t.vocab_tile, 1, std::max<int64_t>(n, 1));
  return t;
}

void check_operands(const at::Tensor& hs, const at::Tensor& ht, const at::Tensor& ws, const at::Tensor& wt,
                    double tau) {
  auto fail = [](const std::string& what) { throw Error("kl_from_hidden: " + what); };
  if (hs.dim() != 2 || ht.dim() != 2 || ws.dim() != 2 || wt.dim() != 2)
    fail("hs [N, Ds], ht [N, Dt], ws [V, Ds], wt [V, Dt] expected, got hs " + c10::str(hs.sizes()) + ", ht " +
         c10::str(ht.sizes()) + ", ws " + c10::str(ws.sizes()) + ", wt " + c10::str(wt.sizes()));
  if (ht.size(0) != hs.size(0) || ws.size(1) != hs.size(1) || wt.size(1) != ht.size(1) || wt.size(0) != ws.size(0))
    fail("shapes do not agree: hs " + c10::str(hs.sizes()) + ", ht " + c10::str(ht.sizes()) + ", ws " +
         c10::str(ws.sizes()) + ", wt " + c10::str(wt.sizes()));
  if (!hs.is_cuda() || !ht.is_cuda() || !ws.is_cuda() || !wt.is_cuda()) fail("all operands must be CUDA tensors");
  if (ws.scalar_type() != hs.scalar_type() || wt.scalar_type() != ht.scalar_type())
    fail("each LM head must have its hidden state's dtype");
  if (!(tau > 0.0)) fail("temperature must be > 0, got " + std::to_string(tau));
}

// logits tile [rows, cols] fp32 = h[r0:r0+rows] W[v0:v0+cols]^T.
at::Tensor logits_tile(const at::Tensor& h, const at::Tensor& w, int64_t r0, int64_t rows, int64_t v0, int64_t cols) {
  at::Tensor a = h.narrow(0, r0, rows), b = w.narrow(0, v0, cols).t();
  return a.scalar_type() == at::kFloat ? at::mm(a, b) : at::mm(a, b, at::kFloat);
}

struct KlFromHiddenFn : public torch::autograd::Function<KlFromHiddenFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hs, const at::Tensor& ht,
                            const at::Tensor& ws, const at::Tensor& wt, double tau, int64_t vocab_tile) {
    const int64_t n = hs.size(0), v = ws.size(0);
    const Tiling tl = choose_tiling(n, v, vocab_tile);
    at::TensorOptions f32 = hs.options().dtype(at::kFloat);
    at::Tensor state = at::empty({5, n}, f32);  // [5, N]: m_s, l_s, m_t, l_t, a
    state.select(0, 0).fill_(-std::numeric_limits<float>::infinity());
    state.select(0, 2).fill_(-std::numeric_limits<float>::infinity());
    state.select(0, 1).zero_(), state.select(0, 3).zero_(), state.select(0, 4).zero_();
    for (int64_t v0 = 0; v0 < v; v0 += tl.vocab_tile) {
      const int64_t cols = std::min(tl.vocab_tile, v - v0);
      for (int64_t r0 = 0; r0 < n; r0 += tl.row_chunk) {
        const int64_t rows = std::min(tl.row_chunk, n - r0);
        at::Tensor zs = logits_tile(hs, ws, r0, rows, v0, cols);  // [rows, cols] fp32
        at::Tensor zt = logits_tile(ht, wt, r0, rows, v0, cols);  // [rows, cols] fp32
        detail::kl_stats_update(zs, zt, state, r0, tau);
      }
    }
    at::Tensor kl = at::empty({n}, f32), lse_s = at::empty({n}, f32), lse_t = at::empty({n}, f32);  // [N] each
    detail::kl_stats_finish(state, kl, lse_s, lse_t);
    ctx->save_for_backward({hs, ht, ws, wt, lse_s, lse_t});
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["vocab_tile"] = vocab_tile;
    return kl;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &hs = saved[0], &ht = saved[1], &ws = saved[2], &wt = saved[3];
    const at::Tensor &lse_s = saved[4], &lse_t = saved[5];
    const double tau = ctx->saved_data["tau"].toDouble();
    const int64_t n = hs.size(0), v = ws.size(0);
    const Tiling tl = choose_tiling(n, v, ctx->saved_data["vocab_tile"].toInt());
    at::Tensor coef = (grads[0].to(at::kFloat) / tau).contiguous();          // [N] d loss / d KL_n / tau
    at::Tensor dhs = at::zeros(hs.sizes(), hs.options().dtype(at::kFloat));  // [N, Ds] fp32 accumulator
    at::Tensor dws = at::empty(ws.sizes(), ws.options().dtype(at::kFloat));  // [V, Ds] fp32
    const bool fp32 = hs.scalar_type() == at::kFloat;
    for (int64_t v0 = 0; v0 < v; v0 += tl.vocab_tile) {
      const int64_t cols = std::min(tl.vocab_tile, v - v0);
      at::Tensor dws_tile = dws.narrow(0, v0, cols);  // [cols, Ds]
      for (int64_t r0 = 0; r0 < n; r0 += tl.row_chunk) {
        const int64_t rows = std::min(tl.row_chunk, n - r0);
        at::Tensor zs = logits_tile(hs, ws, r0, rows, v0, cols);  // [rows, cols] fp32
        at::Tensor zt = logits_tile(ht, wt, r0, rows, v0, cols);  // [rows, cols] fp32
        at::Tensor g = at::empty({rows, cols}, hs.options());     // [rows, cols] d logits_s
        detail::kl_grad_tile(zs, zt, lse_s.narrow(0, r0, rows), lse_t.narrow(0, r0, rows),
                             coef.narrow(0, r0, rows), tau, g);
        at::Tensor h_rows = hs.narrow(0, r0, rows);                       // [rows, Ds]
        at::Tensor w_cols = ws.narrow(0, v0, cols);                       // [cols, Ds]
        at::Tensor dh = fp32 ? at::mm(g, w_cols) : at::mm(g, w_cols, at::kFloat);   // [rows, Ds]
        dhs.narrow(0, r0, rows).add_(dh);
        at::Tensor dw = fp32 ? at::mm(g.t(), h_rows) : at::mm(g.t(), h_rows, at::kFloat);  // [cols, Ds]
        if (r0 == 0)
          dws_tile.copy_(dw);
        else
          dws_tile.add_(dw);
      }
    }
    return {dhs.to(hs.scalar_type()), at::Tensor(), dws.to(ws.scalar_type()), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor kl_from_hidden(const at::Tensor& hs, const at::Tensor& ht, const at::Tensor& ws, const at::Tensor& wt,
                          double tau, int64_t vocab_tile) {
  check_operands(hs, ht, ws, wt, tau);
  return KlFromHiddenFn::apply(hs.contiguous(), ht.detach().contiguous(), ws.contiguous(), wt.detach().contiguous(),
                               tau, vocab_tile);
}

at::Tensor kl_from_hidden_weighted_sum(const at::Tensor& hs, const at::Tensor& ht, const at::Tensor& ws,
                                       const at::Tensor& wt, double tau, const at::Tensor& weights,
                                       int64_t vocab_tile) {
  if (weights.dim() != 1 || weights.size(0) != hs.size(0))
    throw Error("kl_from_hidden: weights must be [N] = [" + std::to_string(hs.size(0)) + "], got " +
                c10::str(weights.sizes()));
  return (kl_from_hidden(hs, ht, ws, wt, tau, vocab_tile) * weights.to(at::kFloat)).sum();
}

}  // namespace hylo::kernels
