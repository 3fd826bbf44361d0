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

Runner::Runner(CausalLM& model, CachePools& pools) : model_(model), pools_(pools) {
  for (int64_t i = 0; i < model_.num_blocks(); ++i)
    layers_.push_back(make_engine_layer(model_.mixer(i), pools_.layer(i), pools_.page_size()));
}

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
      const int64_t page = s.pages.empty() ? 0 : s.pages[static_cast<size_t>(p / b.page_size)];
      write_rows.push_back(page * b.page_size + p % b.page_size);
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

StepOutput Runner::run(const StepPlan& plan) {
  std::vector<int64_t> ids;
  const StepBatch batch = build_batch(plan, ids);
  const at::Device device = model_.options().device();
  at::Tensor h = model_.embed(at::tensor(ids, at::kLong).to(device).unsqueeze(0));  // [1, N, D]
  for (int64_t i = 0; i < model_.num_blocks(); ++i)
    h = model_.forward_block_with(i, h, [&](Mixer&, const at::Tensor& x) {
      return layers_[static_cast<size_t>(i)]->forward(x, batch);
    });

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
