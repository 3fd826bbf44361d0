#include "hylo/train/data_build.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/train/data_shuffle.h"

namespace hylo::train {

namespace fs = std::filesystem;
using nlohmann::json;

Result<HeldoutLines> parse_heldout_lines(const std::string& spec) {
  const size_t colon = spec.rfind(':');
  const size_t dash = colon == std::string::npos ? std::string::npos : spec.find('-', colon);
  HeldoutLines h;
  try {
    if (colon == std::string::npos || colon == 0 || dash == std::string::npos) throw std::invalid_argument("");
    h.file = spec.substr(0, colon);
    size_t used = 0;
    const std::string a = spec.substr(colon + 1, dash - colon - 1), b = spec.substr(dash + 1);
    h.first = std::stoll(a, &used);
    if (used != a.size()) throw std::invalid_argument("");
    h.last = std::stoll(b, &used);
    if (used != b.size()) throw std::invalid_argument("");
  } catch (const std::exception&) {
    return make_error("--heldout-lines: \"" + spec + "\" is not FILE:FIRST-LAST (1-based line numbers)");
  }
  if (h.first < 1 || h.last < h.first)
    return make_error("--heldout-lines: \"" + spec + "\": need 1 <= FIRST <= LAST");
  return h;
}

namespace {

std::string canonical_key(const fs::path& p) {
  std::error_code ec;
  const fs::path c = fs::weakly_canonical(p, ec);
  return ec ? p.lexically_normal().string() : c.string();
}

const char* split_mode_name(TextSplit s) {
  return s == TextSplit::kFile ? "file" : s == TextSplit::kParagraphs ? "paragraphs" : "separator";
}

bool is_dataset_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) && fs::exists(p / kIndexFile, ec);
}

// A dataset given as an input: its documents (train and held-out, with masks), checked to share this build's
// vocabulary and document convention; held-out documents keep their text (from heldout.txt).
struct DatasetInput {
  std::vector<Document> train, heldout;
  json index;
};

Result<DatasetInput> read_dataset_input(const fs::path& dir, const json& tokenizer) {
  HYLO_TRY(auto ds, TokenDataset::open(dir));
  HYLO_TRY(std::string text, read_text_file(dir / kIndexFile));
  DatasetInput in;
  in.index = json::parse(text, nullptr, false);
  const json& t = in.index.contains("tokenizer") ? in.index["tokenizer"] : json::object();
  const std::string theirs = t.value("fingerprint", std::string()), ours = tokenizer.value("fingerprint", std::string());
  if (theirs != ours)
    return make_error((dir / kIndexFile).string() + ": tokenizer.fingerprint " + theirs +
                      " differs from this build's tokenizer (" + ours + "): a dataset of another vocabulary");
  if (t.value("doc_end_id", json(nullptr)) != tokenizer.value("doc_end_id", json(nullptr)))
    return make_error((dir / kIndexFile).string() + ": tokenizer.doc_end_id differs from this build's (--doc-end)");
  in.train = read_documents(*ds, Split::kTrain);
  in.heldout = read_documents(*ds, Split::kHeldout);
  HYLO_TRY(std::string held_text, read_text_file(dir / kHeldoutTextFile));
  const json docs = in.index["heldout"].value("documents", json::array());
  for (size_t i = 0; i < in.heldout.size() && i < docs.size(); ++i) {
    const json tb = docs[i].value("text_bytes", json());
    if (tb.is_array() && tb.size() == 2 && tb[0].is_number_integer() && tb[1].is_number_integer() &&
        tb[0].get<int64_t>() <= tb[1].get<int64_t>() && tb[1].get<size_t>() <= held_text.size())
      in.heldout[i].text = held_text.substr(tb[0].get<size_t>(), tb[1].get<size_t>() - tb[0].get<size_t>());
  }
  return in;
}

}  // namespace

Result<DataBuildSummary> build_token_dataset(const DataBuildOptions& o) try {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.out.empty()) return make_error("--out: no output directory given");
  if (o.heldout_fraction < 0.0 || o.heldout_fraction >= 1.0)
    return make_error("--heldout-fraction must be in [0, 1), got " + std::to_string(o.heldout_fraction));
  if (o.heldout_docs < 0) return make_error("--heldout-docs must be >= 0");
  if (o.heldout_fraction > 0.0 && o.heldout_docs > 0)
    return make_error("--heldout-fraction and --heldout-docs: give at most one");
  if (o.input.split == TextSplit::kSeparator && o.input.separator.empty())
    return make_error("--doc-separator: the separator must not be empty");
  const bool generating = !o.generate_with.empty();
  if (!generating && (!o.prompts_from.empty() || o.gen.num_samples > 0))
    return make_error("--prompts-from / --num-samples need --generate-with TEACHER");
  if (generating && (o.prompts_from.empty() || o.gen.num_samples < 1))
    return make_error("--generate-with needs --prompts-from FILE... and --num-samples N >= 1");
  if (o.inputs.empty() && !generating && o.heldout_files.empty() && o.heldout_lines.empty())
    return make_error("hylo data: no inputs (give text/JSONL files or directories, or --generate-with)");

  // Tokenizer: the one given, else the teacher's; when both are given they must be the same vocabulary.
  const fs::path tok_path = o.tokenizer.empty() ? o.generate_with : o.tokenizer;
  if (tok_path.empty()) return make_error("--tokenizer: required (a tokenizer.json, model directory or GGUF)");
  HYLO_TRY(tok::Tokenizer tokenizer, tok::Tokenizer::from_path(tok_path));
  if (generating && !o.tokenizer.empty()) {
    HYLO_TRY(tok::Tokenizer teacher_tok, tok::Tokenizer::from_path(o.generate_with));
    if (tokenizer_fingerprint(teacher_tok) != tokenizer_fingerprint(tokenizer))
      return make_error("--tokenizer " + o.tokenizer.string() + " and the teacher " + o.generate_with.string() +
                        " have different vocabularies (fingerprints differ)");
  }
  HYLO_TRY(DocConvention conv, doc_convention(tokenizer, o.doc_end));

  DatasetContents c;
  c.shard_tokens = o.shard_tokens;
  c.tokenizer = tokenizer_json(tokenizer, conv, tok_path.string());

  // Inputs, with the --heldout-file files appended when they are not inputs already.
  std::vector<fs::path> roots, dataset_inputs;
  for (const auto& r : o.inputs) (is_dataset_dir(r) ? dataset_inputs : roots).push_back(r);
  HYLO_TRY(std::vector<fs::path> files, expand_inputs(roots));
  HYLO_TRY(std::vector<fs::path> heldout_files, expand_inputs(o.heldout_files));
  std::map<std::string, bool> forced_heldout;
  {
    std::map<std::string, bool> present;
    for (const auto& f : files) present[canonical_key(f)] = true;
    for (const auto& f : heldout_files) {
      forced_heldout[canonical_key(f)] = true;
      if (!present[canonical_key(f)]) files.push_back(f);
      present[canonical_key(f)] = true;
    }
  }
  std::map<std::string, TextSpan> excluded;  // file -> held-out line range
  std::vector<Document> heldout_slices;
  for (const HeldoutLines& h : o.heldout_lines) {
    const std::string key = canonical_key(h.file);
    if (excluded.count(key)) return make_error("--heldout-lines: " + h.file.string() + " is given twice");
    if (forced_heldout.count(key))
      return make_error("--heldout-lines: " + h.file.string() + " is also a --heldout-file");
    HYLO_TRY(std::string text, read_text_file(h.file));
    HYLO_TRY(TextSpan span, line_range(text, h.first, h.last, "--heldout-lines " + h.file.string()));
    excluded[key] = span;
    Document d = text_document(tokenizer, conv, text.substr(static_cast<size_t>(span.byte_begin),
                                                           static_cast<size_t>(span.byte_end - span.byte_begin)));
    d.origin = DocumentOrigin{static_cast<int32_t>(c.sources.size()), 0, span.byte_begin, span.byte_end,
                              span.line_begin, span.line_end};
    c.sources.push_back(SourceRecord{h.file.string(), "lines", json{{"lines", {h.first, h.last}}}});
    heldout_slices.push_back(std::move(d));
  }

  // Documents in reading order: datasets given as inputs first, then every input file, tokenized.
  std::vector<Document> eligible;  // for the seeded draw
  std::vector<Document> heldout(std::make_move_iterator(heldout_slices.begin()),
                                std::make_move_iterator(heldout_slices.end()));
  for (const fs::path& dir : dataset_inputs) {
    HYLO_TRY(DatasetInput in, read_dataset_input(dir, c.tokenizer));
    const auto source = static_cast<int32_t>(c.sources.size());
    // The merged dataset's own record of where its documents came from travels along.
    c.sources.push_back(SourceRecord{dir.string(), "dataset",
                                     json{{"dataset_sources", in.index.value("sources", json::array())},
                                          {"dataset_heldout", in.index.value("heldout", json::object())},
                                          {"dataset_build", in.index.value("build", json::object())}}});
    for (auto& d : in.train) {
      d.origin.source = source;
      eligible.push_back(std::move(d));
    }
    for (auto& d : in.heldout) {
      d.origin.source = source;
      heldout.push_back(std::move(d));
    }
  }
  {
    std::unique_ptr<ProgressBar> bar;
    if (o.progress && !files.empty()) bar = std::make_unique<ProgressBar>("tokenizing", static_cast<int64_t>(files.size()), "file");
    for (const fs::path& f : files) {
      const std::string key = canonical_key(f);
      std::optional<TextSpan> exclude;
      if (auto it = excluded.find(key); it != excluded.end()) exclude = it->second;
      std::string kind;
      const auto source = static_cast<int32_t>(c.sources.size());
      HYLO_TRY(std::vector<Document> docs, read_input_file(f, tokenizer, conv, o.input, source, exclude, &kind));
      json extra = json::object();
      if (exclude) extra["excluded_lines"] = {exclude->line_begin, exclude->line_end};
      c.sources.push_back(SourceRecord{f.string(), kind, extra});
      auto& dst = forced_heldout.count(key) ? heldout : eligible;
      for (auto& d : docs) dst.push_back(std::move(d));
      if (bar) bar->advance();
    }
    if (bar) bar->finish();
  }

  DataBuildSummary summary;
  json generation = nullptr;
  if (generating) {
    PromptCorpus corpus;
    {
      // A dataset as prompt source: its training documents, without BOS and the document end.
      std::vector<fs::path> prompt_roots;
      for (const auto& p : o.prompts_from) {
        if (!is_dataset_dir(p)) {
          prompt_roots.push_back(p);
          continue;
        }
        HYLO_TRY(DatasetInput in, read_dataset_input(p, c.tokenizer));
        for (const Document& d : in.train) {
          auto b = d.tokens.begin(), e = d.tokens.end();
          if (conv.bos_added && conv.bos_id && b != e && *b == static_cast<uint32_t>(*conv.bos_id)) ++b;
          if (conv.doc_end_id && e != b && *(e - 1) == static_cast<uint32_t>(*conv.doc_end_id)) --e;
          corpus.files.emplace_back(b, e);
        }
      }
      HYLO_TRY(std::vector<fs::path> prompt_files, expand_inputs(prompt_roots));
      for (const auto& f : prompt_files)
        if (forced_heldout.count(canonical_key(f)) || excluded.count(canonical_key(f)))
          return make_error("--prompts-from: " + f.string() + " holds held-out text; prompts must come from training text");
      PromptCorpus from_files = tokenize_prompt_files(tokenizer, prompt_files);
      for (auto& f : from_files.files) corpus.files.push_back(std::move(f));
    }
    TeacherSampleOptions gen = o.gen;
    gen.sampling.seed = o.seed;
    gen.progress = o.progress;
    auto teacher = CausalLM::load(o.generate_with, o.load);
    const auto source = static_cast<int32_t>(c.sources.size());
    std::vector<Document> docs =
        generate_teacher_documents(*teacher, tokenizer, conv, corpus, gen, source, &summary.generation);
    json prompts = json::array();
    for (const auto& p : o.prompts_from) prompts.push_back(p.string());
    generation = json{{"teacher", o.generate_with.string()},
                      {"prompts_from", prompts},
                      {"num_samples", gen.num_samples},
                      {"samples_made", summary.generation.samples},
                      {"time_limit_s", gen.max_seconds},
                      {"max_new_tokens", gen.max_new_tokens},
                      {"prompt_tokens_range", {gen.min_prompt_tokens, gen.max_prompt_tokens}},
                      {"sampling", gen.sampling.describe()},
                      {"seed", o.seed},
                      {"batch", gen.batch},
                      {"mask_prompt", gen.mask_prompt},
                      {"prompt_tokens", summary.generation.prompt_tokens},
                      {"generated_tokens", summary.generation.generated_tokens},
                      {"eos_stops", summary.generation.eos_stops},
                      {"dtype", std::string(c10::toString(o.load.dtype))},
                      {"device", o.load.device.str()}};
    c.sources.push_back(SourceRecord{o.generate_with.string(), "generated", json{{"samples", summary.generation.samples}}});
    for (auto& d : docs) eligible.push_back(std::move(d));
  }

  // The seeded held-out draw over the eligible documents.
  const auto n = static_cast<int64_t>(eligible.size());
  int64_t k = o.heldout_docs;
  if (o.heldout_fraction > 0.0) k = std::llround(o.heldout_fraction * static_cast<double>(n));
  if (k > n) return make_error("--heldout-docs " + std::to_string(k) + " exceeds the " + std::to_string(n) + " documents");
  std::vector<bool> is_heldout(static_cast<size_t>(n), false);
  if (k > 0) {
    const std::vector<int64_t> perm = seeded_permutation(n, o.seed, kStreamHeldout);
    for (int64_t i = 0; i < k; ++i) is_heldout[static_cast<size_t>(perm[static_cast<size_t>(i)])] = true;
  }
  std::vector<Document> train;
  for (int64_t i = 0; i < n; ++i)
    (is_heldout[static_cast<size_t>(i)] ? heldout : train).push_back(std::move(eligible[static_cast<size_t>(i)]));
  if (train.empty()) return make_error("hylo data: every document is held out; the train split would be empty");
  const std::vector<int64_t> order = seeded_permutation(static_cast<int64_t>(train.size()), o.seed, kStreamDocumentOrder);
  c.train.reserve(train.size());
  for (int64_t i : order) c.train.push_back(std::move(train[static_cast<size_t>(i)]));
  c.heldout = std::move(heldout);

  json lines = json::array();
  for (const auto& h : o.heldout_lines) lines.push_back({{"file", h.file.string()}, {"first", h.first}, {"last", h.last}});
  json hfiles = json::array();
  for (const auto& f : heldout_files) hfiles.push_back(f.string());
  c.heldout_rule = json{{"files", hfiles}, {"lines", lines}, {"fraction", o.heldout_fraction},
                        {"docs", o.heldout_docs}, {"drawn", k}, {"seed", o.seed}};
  json inputs = json::array();
  for (const auto& f : o.inputs) inputs.push_back(f.string());
  c.build = json{{"seed", o.seed},
                 {"inputs", inputs},
                 {"text_split", split_mode_name(o.input.split)},
                 {"doc_separator", o.input.separator},
                 {"jsonl_field", o.input.jsonl_field},
                 {"mask_prompt", o.input.mask_prompt},
                 {"doc_end", o.doc_end},
                 {"shard_tokens", o.shard_tokens},
                 {"generation", generation}};
  HYLO_CHECK_OK(write_token_dataset(o.out, c));

  for (const auto& d : c.train) summary.train_tokens += static_cast<int64_t>(d.tokens.size());
  for (const auto& d : c.heldout) summary.heldout_tokens += static_cast<int64_t>(d.tokens.size());
  summary.train_documents = static_cast<int64_t>(c.train.size());
  summary.heldout_documents = static_cast<int64_t>(c.heldout.size());
  summary.sources = static_cast<int64_t>(c.sources.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
} catch (const Error& e) {
  return make_error(e.what());
}

}  // namespace hylo::train
