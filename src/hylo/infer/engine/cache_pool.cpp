// CachePools (cache_pool.h): sizing from the memory budget, allocation, and the page / slot allocators.
#include "hylo/infer/engine/cache_pool.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>

#include "hylo/core/result.h"
#include "hylo/infer/engine/activation_reserve.h"
#include "hylo/infer/engine/recurrent_state_parts.h"

#if HYLO_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#endif

namespace hylo::engine {

namespace {

std::string mib(int64_t bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

bool is_paged(MixerKind k) { return k == MixerKind::kMla || k == MixerKind::kGqa; }
bool is_recurrent(MixerKind k) { return k == MixerKind::kGdn || k == MixerKind::kMamba2; }

// Bytes of one sequence's state in one recurrent layer: the mixer's own state shapes (a state for one row made on
// the meta device, so nothing is allocated), the recurrent part counted in state_dtype, the conv part in the
// model dtype.
int64_t slot_bytes_of_layer(const ModelConfig& config, const LayerSpec& layer, const at::TensorOptions& model,
                            at::ScalarType state_dtype) {
  const at::TensorOptions meta = model.device(at::kMeta);
  std::unique_ptr<Mixer> mixer = make_mixer(config, layer, meta);
  std::unique_ptr<MixerState> state = mixer->new_state(1, 1, meta);
  int64_t bytes = 0;
  for (const StatePart& p : recurrent_state_parts(*state)) {
    if (!p.tensor->defined()) continue;
    const at::ScalarType t = p.recurrent ? state_dtype : p.tensor->scalar_type();
    bytes += p.tensor->numel() * static_cast<int64_t>(c10::elementSize(t));
  }
  return bytes;
}

// What the pools may use when memory_bytes is not given: gpu_memory_fraction of the device minus what is in use
// already (weights, other processes, the caching allocator's blocks) minus the activation reserve.
int64_t device_budget(const ModelConfig& config, const at::TensorOptions& model, const EngineOptions& options) {
  const at::Device device = model.device();
  if (!device.is_cuda())
    throw Error("engine: memory_bytes must be given for a model on " + device.str() +
                " (the pools' budget in bytes; only CUDA devices have a size to take a fraction of)");
#if HYLO_HAVE_CUDA
  c10::cuda::CUDAGuard guard(device);
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (e != cudaSuccess) throw Error(std::string("engine: cudaMemGetInfo failed: ") + cudaGetErrorString(e));
  const int64_t total = static_cast<int64_t>(total_bytes);
  const int64_t in_use = total - static_cast<int64_t>(free_bytes);
  const int64_t reserve = options.activation_reserve_bytes > 0
                              ? options.activation_reserve_bytes
                              : derived_activation_reserve_bytes(config, model.dtype().toScalarType(),
                                                                 options.max_step_tokens);
  const int64_t budget = static_cast<int64_t>(options.gpu_memory_fraction * static_cast<double>(total)) -
                         in_use - reserve;
  if (budget <= 0)
    throw Error("engine: no device memory left for the pools: gpu_memory_fraction " +
                std::to_string(options.gpu_memory_fraction) + " of " + mib(total) + " minus " + mib(in_use) +
                " in use minus an activation reserve of " + mib(reserve) + " (max_step_tokens " +
                std::to_string(options.max_step_tokens) + ") leaves " + mib(budget) +
                "; raise gpu_memory_fraction, lower max_step_tokens or pass memory_bytes");
  return budget;
#else
  (void)config;
  (void)options;
  throw Error("engine: the model is on " + device.str() + " but this build has no CUDA support");
#endif
}

}  // namespace

int64_t mixer_projection_width(const LayerSpec& l) {
  switch (l.mixer) {
    case MixerKind::kGqa: return (l.gqa.num_heads + 2 * l.gqa.num_kv_heads) * l.gqa.head_dim;
    case MixerKind::kMla: {
      const MlaSpec& m = l.mla;
      return m.num_heads * m.q_head_dim() + m.cache_width() + m.num_heads * (m.qk_nope_head_dim + m.v_head_dim) +
             m.num_heads * m.qk_rope_head_dim;
    }
    case MixerKind::kGdn: return 2 * l.gdn.key_dim() + 2 * l.gdn.value_dim() + 2 * l.gdn.num_heads;
    case MixerKind::kMamba2: return 2 * l.mamba2.d_inner + 2 * l.mamba2.d_xb + l.mamba2.n_heads;
  }
  return 0;
}

int64_t derived_activation_reserve_bytes(const ModelConfig& config, at::ScalarType model_dtype,
                                         int64_t max_step_tokens) {
  int64_t widest_mlp = 0, widest_mixer = 0;
  for (const LayerSpec& l : config.layers) {
    widest_mlp = std::max(widest_mlp, l.intermediate_size);
    widest_mixer = std::max(widest_mixer, mixer_projection_width(l));
  }
  const int64_t e = static_cast<int64_t>(c10::elementSize(model_dtype));
  const int64_t per_token =
      e * (4 * config.hidden_size + 3 * widest_mlp + 2 * widest_mixer) + 8 * config.vocab_size;
  return max_step_tokens * per_token;
}

MemoryPlan CachePools::plan(const CausalLM& model, const EngineOptions& options) {
  options.validate();
  const ModelConfig& config = model.config();
  const at::TensorOptions& mo = model.options();
  const int64_t elem = static_cast<int64_t>(c10::elementSize(mo.dtype().toScalarType()));

  MemoryPlan p;
  int64_t elems_per_token = 0;  // all paged layers: mla Rkv + Dr, gqa 2 * Hkv * Dh (LayerFootprint)
  for (const LayerSpec& l : config.layers) {
    if (is_paged(l.mixer)) elems_per_token += layer_footprint(config, l).kv_elems_per_token;
    if (is_recurrent(l.mixer)) p.bytes_per_slot += slot_bytes_of_layer(config, l, mo, options.state_dtype);
  }
  p.bytes_per_token = elems_per_token * elem;
  p.bytes_per_page = p.bytes_per_token * options.page_size;
  p.num_slots = options.max_sequences + options.prefix_snapshots;
  p.budget_bytes = options.memory_bytes > 0 ? options.memory_bytes : device_budget(config, mo, options);

  const int64_t slots_bytes = p.num_slots * p.bytes_per_slot;
  const std::string slots_str = std::to_string(p.num_slots) + " slots of " + std::to_string(p.bytes_per_slot) +
                                " bytes (max_sequences " + std::to_string(options.max_sequences) +
                                " + prefix_snapshots " + std::to_string(options.prefix_snapshots) + ")";
  if (slots_bytes > p.budget_bytes)
    throw Error("engine: the budget of " + mib(p.budget_bytes) + " (" + std::to_string(p.budget_bytes) +
                " bytes) cannot hold " + slots_str + " = " + std::to_string(slots_bytes) +
                " bytes; lower max_sequences or prefix_snapshots, or raise the budget");
  if (p.bytes_per_page > 0) {
    // Page ids are int32 (page tables): more pages than that could not be addressed.
    p.num_pages = std::min<int64_t>((p.budget_bytes - slots_bytes) / p.bytes_per_page,
                                    std::numeric_limits<int32_t>::max());
    if (p.num_pages < 1)
      throw Error("engine: the budget of " + mib(p.budget_bytes) + " (" + std::to_string(p.budget_bytes) +
                  " bytes) holds no page of " + std::to_string(options.page_size) + " tokens (needs " +
                  std::to_string(p.bytes_per_page) + " bytes) after " + slots_str + "; needs at least " +
                  std::to_string(slots_bytes + p.bytes_per_page) + " bytes");
    p.max_tokens_per_sequence = p.num_pages * options.page_size;
  } else {
    p.max_tokens_per_sequence = std::numeric_limits<int64_t>::max();
  }
  p.pool_bytes = p.num_pages * p.bytes_per_page + slots_bytes;
  return p;
}

CachePools::CachePools(CausalLM& model, const EngineOptions& options)
    : plan_(plan(model, options)), page_size_(options.page_size), live_slots_(options.max_sequences) {
  const ModelConfig& config = model.config();
  const at::TensorOptions& mo = model.options();
  const int64_t P = plan_.num_pages, S = page_size_;
  layers_.resize(static_cast<size_t>(config.num_layers()));
  for (int64_t i = 0; i < config.num_layers(); ++i) {
    const LayerSpec& l = config.layers[static_cast<size_t>(i)];
    LayerCache& c = layers_[static_cast<size_t>(i)];
    c.kind = l.mixer;
    // Zero-filled: attention kernels may read the unused rows of a sequence's last page before masking them.
    if (l.mixer == MixerKind::kMla) {
      c.pages = at::zeros({P, S, l.mla.cache_width()}, mo);  // [num_pages, page_size, Rkv + Dr]
    } else if (l.mixer == MixerKind::kGqa) {
      c.k_pages = at::zeros({P, S, l.gqa.num_kv_heads, l.gqa.head_dim}, mo);  // [num_pages, page_size, Hkv, Dh]
      c.v_pages = at::zeros({P, S, l.gqa.num_kv_heads, l.gqa.head_dim}, mo);
    } else {
      c.slots = model.mixer(i).new_state(plan_.num_slots, 1, mo);  // the mixer's shapes, dim 0 = slot
      for (const StatePart& part : recurrent_state_parts(*c.slots)) {
        if (!part.tensor->defined()) continue;
        if (part.recurrent && part.tensor->scalar_type() != options.state_dtype)
          *part.tensor = part.tensor->to(options.state_dtype);
        c.slot_tensors.push_back(*part.tensor);
      }
    }
  }
  // Stacks whose top (back) is the lowest id, so the first allocations are 0, 1, 2, ...
  free_pages_.reserve(static_cast<size_t>(P));
  for (int64_t p = P - 1; p >= 0; --p) free_pages_.push_back(static_cast<int32_t>(p));
  page_refs_.assign(static_cast<size_t>(P), 0);
  for (int64_t s = live_slots_ - 1; s >= 0; --s) free_slots_.push_back(s);
  for (int64_t s = plan_.num_slots - 1; s >= live_slots_; --s) free_snapshots_.push_back(s);
}

std::optional<int32_t> CachePools::alloc_page() {
  if (free_pages_.empty()) return std::nullopt;
  const int32_t page = free_pages_.back();
  free_pages_.pop_back();
  page_refs_[static_cast<size_t>(page)] = 1;
  return page;
}

namespace {
void check_page(int32_t page, size_t num_pages, const char* what) {
  if (page < 0 || static_cast<size_t>(page) >= num_pages)
    throw Error(std::string("engine: ") + what + " of page " + std::to_string(page) + ", outside [0, " +
                std::to_string(num_pages) + ")");
}
}  // namespace

void CachePools::ref_page(int32_t page) {
  check_page(page, page_refs_.size(), "ref");
  int32_t& refs = page_refs_[static_cast<size_t>(page)];
  if (refs <= 0) throw Error("engine: ref of page " + std::to_string(page) + ", which is free");
  ++refs;
}

void CachePools::unref_page(int32_t page) {
  check_page(page, page_refs_.size(), "unref");
  int32_t& refs = page_refs_[static_cast<size_t>(page)];
  if (refs <= 0) throw Error("engine: unref of page " + std::to_string(page) + ", which is already free");
  if (--refs == 0) free_pages_.push_back(page);
}

std::pair<int64_t, int32_t> CachePools::reserve_scratch() {
  std::pair<int64_t, int32_t> scratch{-1, -1};
  if (has_recurrent_layers()) {
    auto slot = alloc_slot();
    if (!slot) throw Error("engine: no live slot left for the decode scratch slot");
    scratch.first = *slot;
  }
  if (has_paged_layers()) {
    auto page = alloc_page();
    if (!page) throw Error("engine: no page left for the decode scratch page");
    scratch.second = *page;
    plan_.max_tokens_per_sequence -= page_size_;
  }
  return scratch;
}

std::optional<int64_t> CachePools::alloc_slot() {
  if (free_slots_.empty()) return std::nullopt;
  const int64_t slot = free_slots_.back();
  free_slots_.pop_back();
  zero_slot(slot);
  return slot;
}

void CachePools::free_slot(int64_t slot) {
  if (slot < 0 || slot >= live_slots_)
    throw Error("engine: free_slot(" + std::to_string(slot) + "): live slots are [0, " +
                std::to_string(live_slots_) + ")");
  if (std::find(free_slots_.begin(), free_slots_.end(), slot) != free_slots_.end())
    throw Error("engine: free_slot(" + std::to_string(slot) + "): the slot is already free");
  free_slots_.push_back(slot);
}

std::optional<int64_t> CachePools::alloc_snapshot() {
  if (free_snapshots_.empty()) return std::nullopt;
  const int64_t slot = free_snapshots_.back();
  free_snapshots_.pop_back();
  return slot;
}

void CachePools::free_snapshot(int64_t slot) {
  if (slot < live_slots_ || slot >= plan_.num_slots)
    throw Error("engine: free_snapshot(" + std::to_string(slot) + "): snapshot slots are [" +
                std::to_string(live_slots_) + ", " + std::to_string(plan_.num_slots) + ")");
  if (std::find(free_snapshots_.begin(), free_snapshots_.end(), slot) != free_snapshots_.end())
    throw Error("engine: free_snapshot(" + std::to_string(slot) + "): the snapshot is already free");
  free_snapshots_.push_back(slot);
}

void CachePools::copy_slot(int64_t from, int64_t to) {
  for (int64_t s : {from, to})
    if (s < 0 || s >= plan_.num_slots)
      throw Error("engine: copy_slot(" + std::to_string(from) + ", " + std::to_string(to) + "): slots are [0, " +
                  std::to_string(plan_.num_slots) + ")");
  if (from == to) return;
  for (LayerCache& c : layers_)
    for (at::Tensor& t : c.slot_tensors) t.select(0, to).copy_(t.select(0, from));
}

void CachePools::zero_slot(int64_t slot) {
  if (slot < 0 || slot >= plan_.num_slots)
    throw Error("engine: zero_slot(" + std::to_string(slot) + "): slots are [0, " +
                std::to_string(plan_.num_slots) + ")");
  for (LayerCache& c : layers_)
    for (at::Tensor& t : c.slot_tensors) t.select(0, slot).zero_();
}

}  // namespace hylo::engine
