#include "hylo/upcycle/smart_select.h"

#include <algorithm>

#include "hylo/core/result.h"
#include "hylo/upcycle/upcycler.h"

namespace hylo {

SmartResult smart_select(CausalLM& teacher, CausalLM& mla_model, CausalLM& linear_model, const at::Tensor& ids,
                         int64_t k, const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t L = linear_model.config().num_layers();
  if (k < 1 || k > L) throw Error("smart_select: k = " + std::to_string(k) + " outside 1.." + std::to_string(L));
  SmartResult r;
  // The teacher's distribution is the same for all L + 1 scores: one forward.
  const at::Tensor teacher_logp = teacher_log_probs(teacher, ids);  // [1, T, V]
  r.kl_linear = logit_kl(teacher_logp, linear_model, ids);
  LayerPlan one;
  one.source = "SMART single-layer swap";
  one.selection = MlaSelection::kExplicit;
  for (int64_t i = 0; i < L; ++i) {
    one.mla_layers = {i};
    // Shares the two models' tensors (no copies): only the forward runs.
    auto hybrid = assemble_hybrid(mla_model, linear_model, one, /*share_tensors=*/true).value_or_throw();
    SmartScore s;
    s.layer = i;
    s.kl = logit_kl(teacher_logp, *hybrid, ids);
    s.gain = r.kl_linear - s.kl;
    r.scores.push_back(s);
    if (progress) progress(i + 1, L);
  }
  std::vector<SmartScore> order = r.scores;
  // Largest gain first; ties broken towards the lower layer so the choice is deterministic.
  std::stable_sort(order.begin(), order.end(), [](const SmartScore& a, const SmartScore& b) { return a.gain > b.gain; });
  for (int64_t i = 0; i < k; ++i) r.selected.push_back(order[i].layer);
  std::sort(r.selected.begin(), r.selected.end());
  return r;
}

}  // namespace hylo
