#include "hylo/infer/engine/runner.h"

#include <algorithm>

namespace hylo::engine {

bool wants_all_rows(const ScheduledChunk& c) {
  const Sequence& s = *c.seq;
  return s.request.keep_logits || (s.request.prompt_logprobs && s.num_cached < s.prompt_len() - 1);
}

bool wants_last_row(const ScheduledChunk& c) {
  return c.seq->num_cached + c.count == static_cast<int64_t>(c.seq->tokens.size());
}

bool uses_bucketed_decode(const CausalLM& model, const EngineOptions& options) {
  return model.options().device().is_cuda() ? options.cuda_graphs : options.bucketed_decode_on_cpu;
}

Runner::Runner(CausalLM& model, CachePools& pools, const EngineOptions& options) : model_(model), pools_(pools) {
  for (int64_t i = 0; i < model_.num_blocks(); ++i)
    layers_.push_back(make_engine_layer(model_.mixer(i), pools_.layer(i), pools_.page_size()));
  bucketed_ = uses_bucketed_decode(model_, options);
  use_graphs_ = bucketed_ && model_.options().device().is_cuda();
  if (bucketed_) {
    scratch_ = pools_.reserve_scratch();
    max_graph_batch_ = std::min<int64_t>(pools_.live_slots(), 256);
  }
}

Runner::~Runner() = default;

StepBatch Runner::build_batch(const StepPlan& plan, std::vector<int64_t>& ids) const {
  StepBatch b;
  b.page_size = pools_.page_size();
  b.num_decode = static_cast<int64_t>(plan.decode.size());
  std::vector<int64_t> positions, write_rows, slots, lengths;
  size_t max_pages = 1;
  auto add = [&](const ScheduledChunk& c) {
    const Sequence& s = *c.seq;
    SeqChunk sc;
    sc.offset = b.num_tokens;
    sc.count = c.count;
    sc.start = s.num_cached;
    sc.slot = s.slot;
    sc.pages = s.pages;
    for (int64_t p = s.num_cached; p < s.num_cached + c.count; ++p) {
      ids.push_back(s.tokens[static_cast<size_t>(p)]);
      positions.push_back(p);
      write_rows.push_back(cache_row(s.pages, p, b.page_size));
    }
    slots.push_back(std::max<int64_t>(s.slot, 0));
    lengths.push_back(s.num_cached + c.count);
    max_pages = std::max(max_pages, s.pages.size());
    b.num_tokens += c.count;
    b.seqs.push_back(std::move(sc));
  };
  for (const auto& c : plan.decode) add(c);
  for (const auto& c : plan.prefill) add(c);

  const at::Device device = model_.options().device();
  auto to_device = [&](const std::vector<int64_t>& v, at::ScalarType type) {
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device, type);
  };
  b.positions = to_device(positions, at::kLong);
  b.write_rows = to_device(write_rows, at::kLong);
  b.slots = to_device(slots, at::kLong);
  b.lengths = to_device(lengths, at::kInt);
  at::Tensor table = at::zeros({static_cast<int64_t>(b.seqs.size()), static_cast<int64_t>(max_pages)}, at::kInt);
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const auto& pages = b.seqs[i].pages;
    if (!pages.empty())
      table[static_cast<int64_t>(i)].narrow(0, 0, static_cast<int64_t>(pages.size()))
          .copy_(at::tensor(std::vector<int32_t>(pages.begin(), pages.end()), at::kInt));
  }
  b.page_table = table.to(device);
  return b;
}

at::Tensor Runner::forward_logits(const at::Tensor& ids, const StepBatch& batch) {
  at::Tensor h = model_.embed(ids.unsqueeze(0));  // [1, N, D]
  for (int64_t i = 0; i < model_.num_blocks(); ++i)
    h = model_.forward_block_with(i, h, [&](Mixer&, const at::Tensor& x) {
      return layers_[static_cast<size_t>(i)]->forward(x, batch);
    });
  return h;
}

StepOutput Runner::run_decode_bucketed(const StepPlan& plan) {
  DecodeStepRows rows;
  size_t need_pages = 1;
  for (const auto& c : plan.decode) {
    const Sequence& s = *c.seq;
    const int64_t pos = s.num_cached, ps = pools_.page_size();
    rows.ids.push_back(s.tokens[static_cast<size_t>(pos)]);
    rows.positions.push_back(pos);
    rows.slots.push_back(std::max<int64_t>(s.slot, 0));
    rows.write_rows.push_back(cache_row(s.pages, pos, ps));
    rows.lengths.push_back(static_cast<int32_t>(pos + 1));
    rows.pages.push_back(s.pages);
    need_pages = std::max(need_pages, s.pages.size());
  }
  if (!graphs_ || static_cast<int64_t>(need_pages) > graph_pages_) {
    // The page-table width is fixed per capture; grow it by powers of two so a growing context recaptures rarely.
    int64_t width = 16;
    while (width < static_cast<int64_t>(need_pages)) width *= 2;
    graph_pages_ = std::min<int64_t>(width, std::max<int64_t>(pools_.plan().num_pages, 1));
    DecodeGraphOptions o;
    o.device = model_.options().device();
    o.max_batch = max_graph_batch_;
    o.max_pages = graph_pages_;
    o.page_size = pools_.page_size();
    o.scratch_slot = std::max<int64_t>(scratch_.first, 0);
    o.scratch_page = std::max<int32_t>(scratch_.second, 0);
    o.use_graphs = use_graphs_;
    graphs_.reset();  // the old graphs' memory goes back before the new ones capture
    graphs_ = std::make_unique<DecodeGraphs>(o, [this](const DecodeGraphInputs& in) {
      const StepBatch batch = in.step_batch();
      at::Tensor h = forward_logits(in.ids, batch);    // [1, Bk, D]
      return model_.lm_head(model_.final_norm(h[0]));  // [Bk, V] fp32
    });
  }
  StepOutput out;
  out.logits = graphs_->run(rows);  // [B, V], valid until the next run of this bucket
  for (size_t i = 0; i < plan.decode.size(); ++i) {
    out.first_row.push_back(wants_all_rows(plan.decode[i]) ? static_cast<int64_t>(i) : -1);
    out.last_row.push_back(static_cast<int64_t>(i));  // a decode token always ends its sequence's tokens
  }
  return out;
}

StepOutput Runner::run(const StepPlan& plan) {
  if (bucketed_ && plan.prefill.empty() && static_cast<int64_t>(plan.decode.size()) <= max_graph_batch_)
    return run_decode_bucketed(plan);
  std::vector<int64_t> ids;
  const StepBatch batch = build_batch(plan, ids);
  const at::Device device = model_.options().device();
  at::Tensor h = forward_logits(at::tensor(ids, at::kLong).to(device), batch);  // [1, N, D]

  // Only the rows whose logits someone reads go through the LM head ([N, V] for a long prefill would be huge).
  StepOutput out;
  std::vector<int64_t> rows;
  size_t k = 0;
  auto visit = [&](const ScheduledChunk& c) {
    const int64_t offset = batch.seqs[k++].offset;
    if (wants_all_rows(c)) {
      out.first_row.push_back(static_cast<int64_t>(rows.size()));
      for (int64_t i = 0; i < c.count; ++i) rows.push_back(offset + i);
      out.last_row.push_back(wants_last_row(c) ? static_cast<int64_t>(rows.size()) - 1 : -1);
    } else {
      out.first_row.push_back(-1);
      if (wants_last_row(c)) {
        out.last_row.push_back(static_cast<int64_t>(rows.size()));
        rows.push_back(offset + c.count - 1);
      } else {
        out.last_row.push_back(-1);
      }
    }
  };
  for (const auto& c : plan.decode) visit(c);
  for (const auto& c : plan.prefill) visit(c);
  if (!rows.empty()) {
    at::Tensor hidden = h[0].index_select(0, at::tensor(rows, at::kLong).to(device));  // [R, D]
    out.logits = model_.lm_head(model_.final_norm(hidden));                           // [R, V] fp32
  }
  return out;
}

}  // namespace hylo::engine
