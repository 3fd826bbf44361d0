#include "hylo/model/mixer.h"

#include <map>
#include <mutex>

#include "hylo/core/result.h"

namespace hylo {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<MixerKind, MixerFactory> factories;
};

Registry& registry() {
  static Registry r;  // function-local: safe to use from other files' static registrars
  return r;
}

}  // namespace

void register_mixer(MixerKind kind, MixerFactory factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.factories.count(kind))
    throw Error(std::string("register_mixer: mixer '") + mixer_kind_name(kind) + "' is registered twice");
  r.factories[kind] = std::move(factory);
}

std::unique_ptr<Mixer> make_mixer(const ModelConfig& config, const LayerSpec& layer,
                                  const at::TensorOptions& options) {
  MixerFactory factory;
  std::string known;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.factories.find(layer.mixer);
    if (it != r.factories.end()) factory = it->second;
    for (const auto& [kind, f] : r.factories) known += (known.empty() ? "" : ", ") + std::string(mixer_kind_name(kind));
  }
  if (!factory)
    throw Error(std::string("mixer '") + mixer_kind_name(layer.mixer) +
                "' is not built into this binary (available: " + known + ")");
  return factory(config, layer, options);
}

}  // namespace hylo
