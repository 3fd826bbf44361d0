// hylo logits MODEL --ids "1 2 3" [--ids "4 5" ...] --out OUT.safetensors [--dtype fp32|bf16] [--device cpu|cuda]
// Developer command used by the parity tests: one stateless forward per id sequence (no BOS added), and the
// fp32 logits [T, V] written to a safetensors file: tensor "logits" for a single sequence; with several
// --ids, "logits.0", "logits.1", ... in the order given (one model load for all).
#include "args.h"
#include "command.h"
#include "hylo/core/result.h"
#include "hylo/io/safetensors.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct LogitsArgs {
  std::string model, out;
  std::vector<std::string> ids;
  std::string dtype = "fp32", device = "cpu";
};

int run_logits(const LogitsArgs& a) {
  LoadOptions opts;
  opts.dtype = parse_scalar_type(a.dtype);
  opts.device = parse_device(a.device);
  auto model = CausalLM::load(a.model, opts);
  std::vector<at::Tensor> results;  // keeps the bytes alive until written
  std::vector<io::TensorToWrite> tensors;
  for (size_t s = 0; s < a.ids.size(); ++s) {
    std::vector<int64_t> ids = parse_token_ids(a.ids[s], "--ids");
    for (int64_t id : ids)
      if (id >= model->config().vocab_size)
        throw Error("--ids: id " + std::to_string(id) + " is outside the vocabulary (size " +
                    std::to_string(model->config().vocab_size) + ")");
    at::Tensor input = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);  // [1, T]
    at::Tensor logits = model->forward(input).squeeze(0).to(at::kCPU).contiguous();        // [T, V] fp32
    results.push_back(logits);
    io::TensorToWrite t;
    t.name = a.ids.size() == 1 ? "logits" : "logits." + std::to_string(s);
    t.dtype = io::DType::kF32;
    t.shape = {logits.size(0), logits.size(1)};
    t.bytes = std::span<const std::byte>(static_cast<const std::byte*>(logits.data_ptr()), logits.nbytes());
    tensors.push_back(t);
  }
  io::write_safetensors(a.out, tensors).value_or_throw();
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<LogitsArgs>();
  app.add_option("model", a->model, "HF model directory or GGUF file")->required();
  app.add_option("--ids", a->ids, "token ids, space or comma separated (no BOS is added); repeat for several sequences")
      ->required()
      ->allow_extra_args(false)
      ->take_all();
  app.add_option("--out", a->out, "output .safetensors file (tensor 'logits', [T, V] fp32)")->required();
  app.add_option("--dtype", a->dtype, "model dtype: fp32 or bf16")->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  return [a] { return run_logits(*a); };
}

}  // namespace

HYLO_COMMAND(logits, "logits", "write the fp32 logits of one forward over given token ids (developer tool)", setup);

}  // namespace hylo::cli
