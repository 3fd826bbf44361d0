// hylo export --format amd MODEL --out DIR [--dtype fp32|bf16]
// Writes a hybrid (a hylo checkpoint, or any model directory hylo reads) in AMD's released HyLo / Zebra-Llama
// layout: the backbone's config.json, hybrid_config.json and model.safetensors under AMD's tensor names, plus the
// tokenizer; committed atomically. AMD's PyTorch code and vLLM fork read that layout, and so does hylo's own
// import (the export checks that it reads back as the same model; see src/hylo/config/amd_export.h).
#include <cstdio>

#include "args.h"
#include "command.h"
#include "hylo/model/causal_lm.h"
#include "hylo/model/checkpoint.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct ExportArgs {
  std::string model, out, format;
  std::string dtype = "fp32";
};

int run_export(const ExportArgs& a) {
  if (a.format != "amd") throw Error("export --format: expected amd, got '" + a.format + "'");
  LoadOptions opts;
  opts.dtype = parse_scalar_type(a.dtype);
  auto model = CausalLM::load(a.model, opts);
  save_checkpoint(*model, a.out, a.model, CheckpointLayout::kAmd).value_or_throw();
  std::printf("wrote %s (AMD layout: config.json, hybrid_config.json, model.safetensors, tokenizer)\n", a.out.c_str());
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  app.add_option("model", a->model, "the hybrid: a hylo checkpoint directory (or any model directory hylo reads)")
      ->required();
  app.add_option("--format", a->format, "output layout: amd (AMD's released HyLo / Zebra-Llama checkpoints)")->required();
  app.add_option("--out", a->out, "output directory (replaced atomically)")->required();
  app.add_option("--dtype", a->dtype, "dtype of the written tensors (fp32, bf16)")->capture_default_str();
  return [a]() { return run_export(*a); };
}

HYLO_COMMAND(export_, "export", "write a hybrid in another layout (--format amd: AMD's released checkpoints)", setup);

}  // namespace
}  // namespace hylo::cli
