// hylo data --tokenizer MODEL_OR_TOKENIZER --out DIR [inputs...] [--paragraphs | --doc-separator S]
//           [--jsonl-field F] [--mask-prompt] [--doc-end TOKEN|none] [--seed S]
//           [--heldout-fraction F | --heldout-docs N] [--heldout-file F ...] [--heldout-lines FILE:A-B ...]
//           [--generate-with TEACHER --prompts-from FILE... --num-samples N --max-new-tokens M
//            [--prompt-tokens MIN:MAX] [--temperature T] [--top-p P] [--top-k K] [--gen-batch B] [--gen-seconds S]
//            [--dtype fp32|bf16] [--device cpu|cuda]]
// Writes a token dataset (layout: src/hylo/train/data.h; held-out rules: src/hylo/train/data_build.h) and
// prints one summary line; the tokenizer defaults to the teacher's when --generate-with is given.
#include <cstdio>

#include "command.h"
#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"
#include "hylo/train/data_build.h"

namespace hylo::cli {
namespace {

struct DataArgs {
  std::string tokenizer, out;
  std::vector<std::string> inputs;
  bool paragraphs = false;
  std::string doc_separator;
  std::string jsonl_field = "text";
  bool mask_prompt = false;
  std::string doc_end;
  uint64_t seed = 0;
  double heldout_fraction = 0.0;
  int64_t heldout_docs = 0;
  std::vector<std::string> heldout_files, heldout_lines;
  int64_t shard_tokens = int64_t{1} << 26;
  std::string generate_with;
  std::vector<std::string> prompts_from;
  int64_t num_samples = 0, max_new_tokens = 256, gen_batch = 1;
  double gen_seconds = 0.0;
  std::string prompt_tokens = "16:128";
  double temperature = 1.0, top_p = 1.0;
  int64_t top_k = 0;
  std::string dtype = "fp32", device = "cpu";
  bool quiet = false;
};

int run_data(const DataArgs& a) {
  train::DataBuildOptions o;
  o.tokenizer = a.tokenizer;
  o.out = a.out;
  for (const auto& s : a.inputs) o.inputs.emplace_back(s);
  if (a.paragraphs && !a.doc_separator.empty()) throw Error("data: give at most one of --paragraphs, --doc-separator");
  o.input.split = a.paragraphs ? train::TextSplit::kParagraphs
                  : !a.doc_separator.empty() ? train::TextSplit::kSeparator : train::TextSplit::kFile;
  o.input.separator = a.doc_separator;
  o.input.jsonl_field = a.jsonl_field;
  o.input.mask_prompt = a.mask_prompt;
  o.doc_end = a.doc_end;
  o.seed = a.seed;
  o.heldout_fraction = a.heldout_fraction;
  o.heldout_docs = a.heldout_docs;
  for (const auto& s : a.heldout_files) o.heldout_files.emplace_back(s);
  for (const auto& s : a.heldout_lines) o.heldout_lines.push_back(train::parse_heldout_lines(s).value_or_throw());
  if (a.shard_tokens < 1) throw Error("data: --shard-tokens must be >= 1");
  o.shard_tokens = a.shard_tokens;
  o.progress = !a.quiet;
  o.generate_with = a.generate_with;
  for (const auto& s : a.prompts_from) o.prompts_from.emplace_back(s);
  o.gen.num_samples = a.num_samples;
  o.gen.max_new_tokens = a.max_new_tokens;
  o.gen.batch = a.gen_batch;
  o.gen.max_seconds = a.gen_seconds;
  o.gen.mask_prompt = a.mask_prompt;
  {
    const size_t colon = a.prompt_tokens.find(':');
    try {
      if (colon == std::string::npos) throw std::invalid_argument("");
      o.gen.min_prompt_tokens = std::stoll(a.prompt_tokens.substr(0, colon));
      o.gen.max_prompt_tokens = std::stoll(a.prompt_tokens.substr(colon + 1));
    } catch (const std::exception&) {
      throw Error("data: --prompt-tokens must be MIN:MAX, got \"" + a.prompt_tokens + "\"");
    }
  }
  o.gen.sampling.temperature = a.temperature;
  o.gen.sampling.top_p = a.top_p;
  o.gen.sampling.top_k = a.top_k;
  o.load.dtype = parse_scalar_type(a.dtype);
  o.load.device = parse_device(a.device);
  if (o.load.dtype != at::kFloat && o.load.dtype != at::kBFloat16)
    throw Error("data: --dtype must be fp32 or bf16, got " + a.dtype);

  const train::DataBuildSummary s = train::build_token_dataset(o).value_or_throw();
  std::printf("%s: train %lld tokens in %lld documents, held-out %lld tokens in %lld documents, %lld sources",
              a.out.c_str(), static_cast<long long>(s.train_tokens), static_cast<long long>(s.train_documents),
              static_cast<long long>(s.heldout_tokens), static_cast<long long>(s.heldout_documents),
              static_cast<long long>(s.sources));
  if (!a.generate_with.empty())
    std::printf("; teacher: %lld of %lld samples%s, %lld prompt + %lld generated tokens in %.1f s (%.1f tok/s, "
                "%lld ended with EOS, %lld preempted)",
                static_cast<long long>(s.generation.samples), static_cast<long long>(a.num_samples),
                s.generation.samples < a.num_samples ? " (--gen-seconds reached)" : "",
                static_cast<long long>(s.generation.prompt_tokens),
                static_cast<long long>(s.generation.generated_tokens), s.generation.seconds,
                s.generation.seconds > 0 ? static_cast<double>(s.generation.generated_tokens) / s.generation.seconds : 0.0,
                static_cast<long long>(s.generation.eos_stops), static_cast<long long>(s.generation.preemptions));
  std::printf(" (%.1f s)\n", s.seconds);
  return 0;
}

CommandRun setup_data(CLI::App& app) {
  auto a = std::make_shared<DataArgs>();
  app.add_option("inputs", a->inputs, "text files, *.jsonl files, or directories of them (read recursively, sorted)");
  app.add_option("--tokenizer", a->tokenizer, "tokenizer.json, model directory or GGUF (default: the --generate-with teacher's)");
  app.add_option("--out", a->out, "output dataset directory (replaced atomically)")->required();
  app.add_flag("--paragraphs", a->paragraphs, "text files: one document per blank-line-separated paragraph");
  app.add_option("--doc-separator", a->doc_separator, "text files: split documents at this exact string");
  app.add_option("--jsonl-field", a->jsonl_field, "JSONL: the string field holding the text (lines with \"messages\" are chats)")
      ->capture_default_str();
  app.add_flag("--mask-prompt", a->mask_prompt,
               "chats: only assistant turns are targets; teacher samples: only generated tokens are targets");
  app.add_option("--doc-end", a->doc_end, "token appended after every document, or 'none' (default: the model's)");
  app.add_option("--seed", a->seed, "seed of the document order, the held-out draw and the teacher samples")
      ->capture_default_str();
  app.add_option("--heldout-fraction", a->heldout_fraction, "hold out this fraction of the documents (seeded draw)");
  app.add_option("--heldout-docs", a->heldout_docs, "hold out this many documents (seeded draw)");
  app.add_option("--heldout-file", a->heldout_files, "hold out every document of this file or directory; repeatable");
  app.add_option("--heldout-lines", a->heldout_lines, "hold out lines A-B of FILE as one document (FILE:A-B); repeatable");
  app.add_option("--shard-tokens", a->shard_tokens, "most tokens per shard file")->capture_default_str();
  app.add_option("--generate-with", a->generate_with, "teacher model: add samples of its text to the dataset");
  app.add_option("--prompts-from", a->prompts_from, "text files or directories the prompts are sliced from");
  app.add_option("--num-samples", a->num_samples, "teacher samples to generate");
  app.add_option("--max-new-tokens", a->max_new_tokens, "most tokens generated per sample")->capture_default_str();
  app.add_option("--prompt-tokens", a->prompt_tokens, "prompt length range MIN:MAX in tokens")->capture_default_str();
  app.add_option("--temperature", a->temperature, "sampling temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-p", a->top_p, "nucleus mass; 1 = off")->capture_default_str();
  app.add_option("--top-k", a->top_k, "top-k; 0 = off")->capture_default_str();
  app.add_option("--gen-batch", a->gen_batch,
                 "teacher sequences the inference engine runs at once (each group of B shares a prompt length)")
      ->capture_default_str();
  app.add_option("--gen-seconds", a->gen_seconds,
                 "start no teacher sample after this many seconds (0 = no limit); the samples made are the first k, "
                 "as --num-samples k would make them")
      ->capture_default_str();
  app.add_option("--dtype", a->dtype, "teacher dtype: fp32 or bf16")->capture_default_str();
  app.add_option("--device", a->device, "teacher device: cpu or cuda[:N]")->capture_default_str();
  app.add_flag("--quiet", a->quiet, "no progress bars");
  return [a] { return run_data(*a); };
}

}  // namespace

HYLO_COMMAND(data, "data", "tokenize text / JSONL / chats (and teacher samples) into a sharded training dataset",
             setup_data);

}  // namespace hylo::cli
