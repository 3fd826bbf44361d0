#include "hylo/train/train_state.h"

#include <c10/core/GradMode.h>
#include <unistd.h>

#include <map>

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/io/safetensors.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::train {
namespace fs = std::filesystem;
namespace {

Status write_tensors(const fs::path& path, const std::map<std::string, at::Tensor>& tensors) {
  TensorsToWrite out;
  for (const auto& [name, t] : tensors) out.add(name, t);
  return io::write_safetensors(path, out.tensors, {{"format", "pt"}});
}

Result<std::map<std::string, at::Tensor>> read_tensors(const fs::path& path) {
  HYLO_TRY(auto file, io::SafetensorsFile::open(path));
  std::map<std::string, at::Tensor> out;
  for (const auto& info : file.tensors()) {
    HYLO_TRY(auto view, file.view(info.name));
    out[info.name] = tensor_from_view(view);
  }
  return out;
}

}  // namespace

Status save_train_state(const fs::path& dir, CausalLM& model, const AdamW& optimizer, const TrainState& state,
                        SyncHooks& hooks) {
  const fs::path staging = dir.parent_path() / ("." + dir.filename().string() + ".staging");
  std::error_code ec;
  if (hooks.rank() == 0) {
    HYLO_CHECK_OK(remove_tree(staging));
    fs::create_directories(staging, ec);
    if (ec) return make_error(staging.string() + ": cannot create: " + ec.message());
  }
  hooks.barrier();
  HYLO_CHECK_OK(write_tensors(staging / ("optimizer.rank" + std::to_string(hooks.rank()) + ".safetensors"),
                              optimizer.state_dict()));
  if (hooks.rank() == 0) {
    std::map<std::string, at::Tensor> params;
    model.visit_parameters([&](const std::string& name, at::Tensor& t) { params[name] = t.to(at::kFloat); });
    HYLO_CHECK_OK(write_tensors(staging / "params.safetensors", params));
    nlohmann::json j = {{"format", "hylo-train-state"},
                        {"version", 1},
                        {"stage", state.stage},
                        {"step", state.step},
                        {"total_steps", state.total_steps},
                        {"tokens", state.tokens},
                        {"loader", {{"epoch", state.loader.epoch}, {"cursor", state.loader.cursor}}},
                        {"world", state.world},
                        {"elapsed_seconds", state.elapsed_seconds}};
    HYLO_CHECK_OK(write_file_atomic(staging / "state.json", j.dump(2) + "\n"));
  }
  hooks.barrier();
  Status committed;
  if (hooks.rank() == 0) committed = commit_directory_atomic(staging, dir);
  hooks.barrier();
  return committed;
}

Result<TrainState> load_train_state(const fs::path& dir, CausalLM& model, AdamW& optimizer) {
  HYLO_TRY(std::string text, read_text_file(dir / "state.json"));
  const std::string src = (dir / "state.json").string();
  TrainState st;
  try {
    auto j = nlohmann::json::parse(text);
    if (j.at("format").get<std::string>() != "hylo-train-state") return make_error(src + ": format: not a hylo train state");
    st.stage = j.at("stage").get<std::string>();
    st.step = j.at("step").get<int64_t>();
    st.total_steps = j.at("total_steps").get<int64_t>();
    st.tokens = j.at("tokens").get<int64_t>();
    st.loader.epoch = j.at("loader").at("epoch").get<int64_t>();
    st.loader.cursor = j.at("loader").at("cursor").get<int64_t>();
    st.world = j.at("world").get<int>();
    st.elapsed_seconds = j.at("elapsed_seconds").get<double>();
  } catch (const nlohmann::json::exception& e) {
    return make_error(src + ": " + e.what());
  }
  HYLO_TRY(auto params, read_tensors(dir / "params.safetensors"));
  Status bad;
  model.visit_parameters([&](const std::string& name, at::Tensor& t) {
    if (!bad.ok()) return;
    auto it = params.find(name);
    if (it == params.end()) {
      bad = make_error((dir / "params.safetensors").string() + ": parameter '" + name + "' is missing");
      return;
    }
    if (it->second.sizes() != t.sizes()) {
      bad = make_error((dir / "params.safetensors").string() + ": parameter '" + name + "' has shape " +
                       shape_str(it->second.sizes()) + ", the model " + shape_str(t.sizes()));
      return;
    }
    c10::NoGradGuard no_grad;
    t.copy_(it->second);
  });
  HYLO_CHECK_OK(bad);
  // Every rank's file: the owned entries may come from any of them (the world size may differ on resume).
  std::map<std::string, at::Tensor> opt;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string f = entry.path().filename().string();
    if (f.rfind("optimizer.rank", 0) != 0 || entry.path().extension() != ".safetensors") continue;
    HYLO_TRY(auto part, read_tensors(entry.path()));
    opt.insert(part.begin(), part.end());
  }
  HYLO_CHECK_OK(optimizer.load_state_dict(opt, (dir / "optimizer.rank*.safetensors").string()));
  return st;
}

}  // namespace hylo::train
