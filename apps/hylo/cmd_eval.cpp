// hylo eval --model A [--model B ...] [--name a --name b] --out DIR
//           [--text FILE [--context N] [--stride S] [--bucket B]]
//           [--ruler TASKS --lengths 1024,2048,... [--samples N] [--depth D] [--haystack-file F] [--qa-file F]
//            [--no-chat-template]]
//           [--choices FILE ...] [--cloze FILE [--cloze-items N] [--cloze-words W]]
//           [--gen FILE ... [--num-fewshot K] [--max-new-tokens N]]
//           [--limit N] [--seed S] [--dtype fp32|bf16] [--device cpu|cuda]
// Evaluates each model in turn (one in memory at a time) and writes DIR/report.json, DIR/report.md, the SVG
// charts (report.h) and DIR/samples-<name>.jsonl with every generative prediction. TASKS: comma-separated RULER
// task names, "niah" (the eight NIAH tasks), "all" (every synthetic task) or "qa" (needs --qa-file).
// Definitions: perplexity.h, ruler.h, harness.h.
#include <cstdio>
#include <iostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "hylo/core/file_util.h"
#include "hylo/core/result.h"
#include "hylo/eval/report.h"
#include "hylo/eval/ruler.h"
#include "hylo/eval/suite.h"
#include "hylo/io/tokenizer/tokenizer.h"
#include "hylo/model/causal_lm.h"
#include "hylo/ops/tensor_util.h"

namespace hylo::cli {
namespace {

struct EvalArgs {
  std::vector<std::string> models, names;
  std::string out, ruler, lengths = "4096", dtype = "fp32", device = "cpu";
  std::optional<double> depth;
  bool no_chat = false;
  eval::SuiteOptions suite;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<std::string> expand_tasks(const std::string& spec) {
  std::vector<std::string> tasks;
  for (const auto& t : split_list(spec)) {
    if (t == "all") {
      for (const auto& n : eval::ruler::task_names()) tasks.push_back(n);
    } else if (t == "niah") {
      for (const auto& n : eval::ruler::task_names())
        if (n.rfind("niah", 0) == 0) tasks.push_back(n);
    } else {
      eval::ruler::task_by_name(t).value_or_throw();  // a clear error for a typo, before any model loads
      tasks.push_back(t);
    }
  }
  return tasks;
}

std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  for (const auto& item : split_list(s)) {
    std::string t = item;
    int64_t mult = 1;
    if (!t.empty() && (t.back() == 'K' || t.back() == 'k')) {
      mult = 1024;
      t.pop_back();
    }
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != t.size() || v <= 0)
      throw Error("--lengths: '" + item + "' is not a positive length (e.g. 4096 or 4K)");
    out.push_back(v * mult);
  }
  if (out.empty()) throw Error("--lengths: no lengths given");
  return out;
}

int run_eval(EvalArgs a) {
  if (!a.names.empty() && a.names.size() != a.models.size())
    throw Error("eval: give one --name per --model (" + std::to_string(a.models.size()) + " models, " +
                std::to_string(a.names.size()) + " names)");
  std::vector<std::string> names = a.names;
  if (names.empty())
    for (const auto& m : a.models) names.push_back(std::filesystem::path(m).filename().string());
  std::set<std::string> unique(names.begin(), names.end());
  if (unique.size() != names.size()) throw Error("eval: model names must differ; give --name for each --model");
  eval::SuiteOptions& o = a.suite;
  if (!a.ruler.empty()) {
    o.ruler_tasks = expand_tasks(a.ruler);
    o.ruler_lengths = parse_lengths(a.lengths);
  }
  o.depth = a.depth;
  o.chat_template = !a.no_chat;
  if (o.text_file.empty() && o.ruler_tasks.empty() && o.choice_files.empty() && o.cloze_file.empty() &&
      o.gen_files.empty())
    throw Error("eval: nothing to evaluate; give --text, --ruler, --choices, --cloze or --gen");
  std::filesystem::create_directories(a.out);

  LoadOptions opts;
  opts.dtype = parse_scalar_type(a.dtype);
  opts.device = parse_device(a.device);
  nlohmann::json report = {{"seed", o.seed}, {"limit", o.limit}, {"dtype", a.dtype}, {"device", a.device},
                           {"models", nlohmann::json::array()}};
  for (size_t i = 0; i < a.models.size(); ++i) {
    std::fprintf(stderr, "== %s (%s)\n", names[i].c_str(), a.models[i].c_str());
    auto model = CausalLM::load(a.models[i], opts);
    auto tokenizer = tok::Tokenizer::from_path(model->source());
    if (!tokenizer.ok()) throw Error("eval: cannot load the tokenizer of " + a.models[i] + ": " + tokenizer.error());
    eval::SuiteOptions mo = o;
    mo.samples_path = std::filesystem::path(a.out) / ("samples-" + names[i] + ".jsonl");
    nlohmann::json m = eval::evaluate_model(*model, *tokenizer, mo);
    m["name"] = names[i];
    m["path"] = a.models[i];
    report["models"].push_back(m);
    // Rewritten after every model, so a long run that stops still leaves the finished models' results.
    write_file_atomic(std::filesystem::path(a.out) / "report.json", report.dump(2) + "\n").value_or_throw();
  }
  const std::string md = eval::report_markdown(report);
  write_file_atomic(std::filesystem::path(a.out) / "report.md", md).value_or_throw();
  auto plots = eval::write_plots(report, a.out).value_or_throw();
  std::cout << md;
  std::fprintf(stderr, "wrote %s/report.json, report.md", a.out.c_str());
  for (const auto& p : plots) std::fprintf(stderr, ", %s", p.filename().c_str());
  std::fprintf(stderr, "\n");
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  eval::SuiteOptions& o = a->suite;
  app.add_option("--model", a->models, "HF model directory, GGUF file or hylo checkpoint; repeat to compare")
      ->required();
  app.add_option("--name", a->names, "display name per --model (default: the file name)");
  app.add_option("--out", a->out, "report directory")->required();
  app.add_option("--text", o.text_file, "perplexity: UTF-8 text file (held-out text)");
  app.add_option("--context", o.context, "perplexity window in tokens")->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  app.add_option("--stride", o.stride, "perplexity: sliding windows advanced by S tokens (0 = non-overlapping)")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--bucket", o.bucket, "perplexity: NLL-by-position bucket in tokens (default context/16)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--ruler", a->ruler, "RULER tasks: comma list, 'niah', 'all', or qa");
  app.add_option("--lengths", a->lengths, "RULER target lengths, e.g. 1K,2K,4K (tokens incl. generation)")
      ->capture_default_str();
  app.add_option("--samples", o.ruler_samples, "RULER samples per task and length")->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--depth", a->depth, "RULER needle depth in [0, 1] (default: drawn per sample as RULER does)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--haystack-file", o.haystack_file, "RULER essay haystack from this text instead of the built-in");
  app.add_option("--qa-file", o.qa_file, "RULER qa: JSONL {question, answers, context|documents}");
  app.add_flag("--no-chat-template", a->no_chat, "RULER: plain prompt after BOS even when the model has a template");
  app.add_option("--choices", o.choice_files, "multiple choice JSONL {context, choices, gold}; repeatable");
  app.add_option("--cloze", o.cloze_file, "cloze (last word) passages from this held-out text file");
  app.add_option("--cloze-items", o.cloze_items, "cloze passages")->capture_default_str();
  app.add_option("--cloze-words", o.cloze_words, "words of context per cloze passage")->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--gen", o.gen_files, "generation JSONL {question, answer} (GSM8K style); repeatable");
  app.add_option("--num-fewshot", o.num_fewshot, "generation: first K items as worked examples")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{64}));
  app.add_option("--max-new-tokens", o.max_new_tokens, "generation: most tokens per answer")->capture_default_str();
  app.add_option("--limit", o.limit, "at most N items per task file and N RULER samples (0 = no limit)")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--seed", o.seed, "seed of the generated tasks")->capture_default_str();
  app.add_option("--dtype", a->dtype, "model dtype: fp32 or bf16")->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  return [a] { return run_eval(*a); };
}

}  // namespace

HYLO_COMMAND(eval, "eval",
             "evaluate models: perplexity by position, RULER long-context tasks, multiple choice, cloze, generation",
             setup);

}  // namespace hylo::cli
