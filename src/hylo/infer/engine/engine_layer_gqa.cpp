// The GQA mixer over the engine's paged KV cache (engine_layer.h), for teachers and baselines in the same engine:
// one projection pass over the step's N packed tokens (GqaMixer::project, the same code as GqaMixer::forward), the
// new k (after RoPE) and v written to their pages, then each prefill chunk attends over its sequence's cached keys
// (ops::causal_attention with q_offset, as the stateful forward) and the decode tokens attend together, each over
// its own length (ops::gqa_decode_paged). A sliding window applies to both.
#include <memory>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/infer/engine/paged_layer_step.h"
#include "hylo/model/mixers/gqa.h"
#include "hylo/ops/attention.h"
#include "hylo/ops/paged_decode.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::engine {
namespace {

class GqaEngineLayer : public EngineLayer {
 public:
  GqaEngineLayer(GqaMixer& mixer, LayerCache& cache) : mixer_(mixer), cache_(cache) {}

  at::Tensor forward(const at::Tensor& x, const StepBatch& batch) override {
    const GqaSpec& s = mixer_.spec();
    check_paged_step("gqa engine layer", x, batch, cache_.k_pages.size(1));
    const int64_t nd = batch.num_decode;
    GqaProjection pr = mixer_.project(x, batch.positions);  // q [1, N, Hq, Dh], k, v [1, N, Hkv, Dh]
    write_new_rows(cache_.k_pages, pr.k.select(0, 0), batch);
    write_new_rows(cache_.v_pages, pr.v.select(0, 0), batch);

    std::vector<at::Tensor> outs;                           // per packed run of tokens, [n, Hq, Dh], in seqs order
    if (nd > 0) {
      // Decode tokens are rows [0, nd) (check_paged_step): one query each over lengths[i] cached tokens.
      outs.push_back(ops::gqa_decode_paged(pr.q.select(0, 0).narrow(0, 0, nd), cache_.k_pages, cache_.v_pages,
                                           batch.page_table.narrow(0, 0, nd), batch.lengths.narrow(0, 0, nd),
                                           mixer_.softmax_scale(), s.sliding_window));  // [nd, Hq, Dh]
    }
    for (size_t i = static_cast<size_t>(nd); i < batch.seqs.size(); ++i) {
      const SeqChunk& chunk = batch.seqs[i];
      const int64_t n = chunk.start + chunk.count;
      // Keys and values of tokens [0, n), the chunk's own included, read back in the cache dtype as the stateful
      // forward reads its GqaState.
      at::Tensor k = sequence_rows(cache_.k_pages, batch, i, n).to(x.scalar_type()).permute({1, 0, 2}).unsqueeze(0);
      at::Tensor v = sequence_rows(cache_.v_pages, batch, i, n).to(x.scalar_type()).permute({1, 0, 2}).unsqueeze(0);
      at::Tensor q = pr.q.narrow(1, chunk.offset, chunk.count).transpose(1, 2);  // [1, Hq, count, Dh]
      at::Tensor o = ops::causal_attention(q, k, v, mixer_.softmax_scale(), /*q_offset=*/chunk.start,
                                           s.sliding_window);                     // [1, Hq, count, Dh]
      outs.push_back(o.select(0, 0).transpose(0, 1));                             // [count, Hq, Dh]
    }
    at::Tensor o = outs.size() == 1 ? outs[0] : at::cat(outs, 0);  // [N, Hq, Dh]
    return mixer_.project_out(o.unsqueeze(0));                   // [1, N, D]
  }

 private:
  GqaMixer& mixer_;
  LayerCache& cache_;
};

}  // namespace

std::unique_ptr<EngineLayer> make_gqa_layer(Mixer& mixer, LayerCache& cache, int64_t page_size) {
  auto* gqa = dynamic_cast<GqaMixer*>(&mixer);
  if (gqa == nullptr) throw Error("make_gqa_layer: the mixer is not a GQA mixer");
  const GqaSpec& s = gqa->spec();
  const std::vector<int64_t> want = {cache.k_pages.defined() ? cache.k_pages.size(0) : 0, page_size, s.num_kv_heads,
                                     s.head_dim};
  auto fits = [&](const at::Tensor& t) { return t.defined() && t.sizes().vec() == want && t.is_contiguous(); };
  if (cache.kind != MixerKind::kGqa || page_size <= 0 || !fits(cache.k_pages) || !fits(cache.v_pages) ||
      cache.v_pages.scalar_type() != cache.k_pages.scalar_type())
    throw Error("make_gqa_layer: the layer cache must be a gqa cache with contiguous k_pages and v_pages "
                "[num_pages, page_size = " + std::to_string(page_size) + ", Hkv = " + std::to_string(s.num_kv_heads) +
                ", Dh = " + std::to_string(s.head_dim) + "] of one dtype, got " + shape_str(cache.k_pages) + " and " +
                shape_str(cache.v_pages));
  return std::make_unique<GqaEngineLayer>(*gqa, cache);
}

}  // namespace hylo::engine
