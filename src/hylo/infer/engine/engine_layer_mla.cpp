// The MLA mixer over the engine's paged latent cache (engine_layer.h): one projection pass over the step's N
// packed tokens (MlaMixer::project, the same code as MlaMixer::forward), the new [c_kv ; rope(k_pe)] rows written to
// their pages, then each prefill chunk attends in the decompressed form over its sequence's cached latent (as the
// stateful forward does for T > 1) and the decode tokens attend together in the absorbed form
// (ops::mla_decode_paged), each over its own length.
#include <memory>
#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/infer/engine/engine_layer.h"
#include "hylo/infer/engine/paged_layer_step.h"
#include "hylo/model/mixers/mla.h"
#include "hylo/ops/mla.h"
#include "hylo/ops/paged_decode.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::engine {
namespace {

class MlaEngineLayer : public EngineLayer {
 public:
  MlaEngineLayer(MlaMixer& mixer, LayerCache& cache) : mixer_(mixer), cache_(cache) {}

  at::Tensor forward(const at::Tensor& x, const StepBatch& batch) override {
    const MlaSpec& s = mixer_.spec();
    check_paged_step("mla engine layer", x, batch, cache_.pages.size(1));
    const int64_t c = s.kv_lora_rank, r = s.qk_rope_head_dim, nd = batch.num_decode;
    MlaProjection pr = mixer_.project(x, batch.positions);   // q_nope [1, N, H, Dn], q_pe [1, N, H, Dr], entry [1, N, W]
    write_new_rows(cache_.pages, pr.entry.select(0, 0), batch);

    std::vector<at::Tensor> outs;                            // per packed run of tokens, [n, H, Dv], in seqs order
    if (nd > 0) {
      // Decode tokens are rows [0, nd) (check_paged_step): one query each over lengths[i] cached tokens.
      outs.push_back(ops::mla_decode_paged(pr.q_nope.select(0, 0).narrow(0, 0, nd), pr.q_pe.select(0, 0).narrow(0, 0, nd),
                                           cache_.pages, batch.page_table.narrow(0, 0, nd),
                                           batch.lengths.narrow(0, 0, nd), mixer_.kv_b_weight(), s.num_kv_groups,
                                           mixer_.softmax_scale()));  // [nd, H, Dv]
    }
    for (size_t i = static_cast<size_t>(nd); i < batch.seqs.size(); ++i) {
      const SeqChunk& chunk = batch.seqs[i];
      // Cached latent of tokens [0, start + count), the chunk's own rows included (written above), read back in the
      // cache dtype as the stateful forward reads its MlaState.
      at::Tensor latent = sequence_rows(cache_.pages, batch, i, chunk.start + chunk.count).to(x.scalar_type());
      at::Tensor o = ops::mla_attention_decompressed(
          pr.q_nope.narrow(1, chunk.offset, chunk.count), pr.q_pe.narrow(1, chunk.offset, chunk.count),
          latent.narrow(1, 0, c).unsqueeze(0), latent.narrow(1, c, r).unsqueeze(0), mixer_.kv_b_weight(),
          s.num_kv_groups, mixer_.softmax_scale(), /*q_offset=*/chunk.start);  // [1, count, H, Dv]
      outs.push_back(o.select(0, 0));
    }
    at::Tensor o = outs.size() == 1 ? outs[0] : at::cat(outs, 0);  // [N, H, Dv]
    return mixer_.project_out(o.unsqueeze(0));                   // [1, N, D]
  }

 private:
  MlaMixer& mixer_;
  LayerCache& cache_;
};

}  // namespace

std::unique_ptr<EngineLayer> make_mla_layer(Mixer& mixer, LayerCache& cache, int64_t page_size) {
  auto* mla = dynamic_cast<MlaMixer*>(&mixer);
  if (mla == nullptr) throw Error("make_mla_layer: the mixer is not an MLA mixer");
  const int64_t width = mla->spec().cache_width();
  if (cache.kind != MixerKind::kMla || !cache.pages.defined() || cache.pages.dim() != 3 || page_size <= 0 ||
      cache.pages.size(1) != page_size || cache.pages.size(2) != width || !cache.pages.is_contiguous())
    throw Error("make_mla_layer: the layer cache must be an mla cache with contiguous pages [num_pages, page_size = " +
                std::to_string(page_size) + ", Rkv+Dr = " + std::to_string(width) + "], got " +
                shape_str(cache.pages));
  return std::make_unique<MlaEngineLayer>(*mla, cache);
}

}  // namespace hylo::engine
