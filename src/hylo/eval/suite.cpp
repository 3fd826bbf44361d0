#include "hylo/eval/suite.h"

#include <cmath>
#include <cstdio>

#include "hylo/core/file_util.h"
#include "hylo/core/progress.h"
#include "hylo/eval/harness.h"
#include "hylo/eval/perplexity.h"
#include "hylo/eval/ruler.h"
#include "hylo/infer/generate.h"

namespace hylo::eval {
namespace {

using nlohmann::json;

std::string read_or_throw(const std::string& path, const char* what) {
  auto t = read_text_file(path);
  if (!t.ok()) throw Error(std::string(what) + ": " + t.error());
  return std::move(t).value();
}

std::vector<int64_t> check_ids(const std::vector<int32_t>& ids32, const CausalLM& model, const std::string& what) {
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  for (int64_t id : ids)
    if (id < 0 || id >= model.config().vocab_size)
      throw Error(what + ": the tokenizer produced id " + std::to_string(id) + ", outside the model's vocabulary (" +
                  std::to_string(model.config().vocab_size) + ")");
  return ids;
}

template <class T>
void apply_limit(std::vector<T>& v, int64_t limit) {
  if (limit > 0 && static_cast<int64_t>(v.size()) > limit) v.resize(static_cast<size_t>(limit));
}

// Appends one line to the samples file (kept open by the caller).
struct SampleLog {
  std::string lines;
  void add(const json& j) { lines += j.dump() + "\n"; }
};

json run_perplexity(CausalLM& model, const tok::Tokenizer& tok, const SuiteOptions& o) {
  const std::string text = read_or_throw(o.text_file, "--text");
  const std::vector<int64_t> ids = check_ids(tok.encode(text, true), model, o.text_file);
  const std::vector<int64_t> bytes = token_bytes(tok, ids);
  PerplexityOptions po;
  po.context = o.context;
  po.stride = o.stride;
  po.bucket = o.bucket > 0 ? o.bucket : std::max<int64_t>(1, o.context / 16);
  po.token_bytes = &bytes;
  ProgressBar bar("perplexity", perplexity_windows(static_cast<int64_t>(ids.size()), o.context, o.stride), "win");
  PerplexityResult r = perplexity(model, ids, po, [&](int64_t done, int64_t) { bar.set(done); });
  bar.finish();
  json j = {{"file", o.text_file},   {"context", o.context},   {"stride", o.stride},
            {"tokens", r.tokens},    {"predicted", r.predicted}, {"windows", r.windows},
            {"nll_sum", r.nll_sum},  {"nll_mean", r.nll_mean}, {"perplexity", r.perplexity},
            {"bytes", r.bytes},      {"bucket", po.bucket}};
  j["bits_per_byte"] = std::isfinite(r.bits_per_byte) ? json(r.bits_per_byte) : json(nullptr);
  json buckets = json::array();
  for (size_t b = 0; b < r.bucket_count.size(); ++b) {
    const int64_t cnt = r.bucket_count[b];
    buckets.push_back({{"start", static_cast<int64_t>(b) * po.bucket},
                       {"end", std::min(o.context, static_cast<int64_t>(b + 1) * po.bucket)},
                       {"count", cnt},
                       {"nll", cnt > 0 ? json(r.bucket_nll_sum[b] / static_cast<double>(cnt)) : json(nullptr)}});
  }
  j["nll_by_position"] = buckets;
  return j;
}

json run_ruler(CausalLM& model, const tok::Tokenizer& tok, const SuiteOptions& o, SampleLog& log) {
  std::vector<ruler::TaskSpec> tasks;
  for (const auto& name : o.ruler_tasks) tasks.push_back(ruler::task_by_name(name).value_or_throw());
  std::string haystack;
  if (!o.haystack_file.empty()) {
    haystack = read_or_throw(o.haystack_file, "--haystack-file");
    if (haystack.find_first_not_of(" \t\r\n") == std::string::npos)
      throw Error("--haystack-file " + o.haystack_file + ": the file has no words");
  }
  std::vector<ruler::QaItem> qa;
  if (!o.qa_file.empty()) qa = ruler::load_qa_file(o.qa_file).value_or_throw();
  const int64_t n = o.limit > 0 ? std::min(o.limit, o.ruler_samples) : o.ruler_samples;
  json out = {{"lengths", o.ruler_lengths}, {"tasks", json::object()}, {"average", json::object()},
              {"samples_per_point", n}, {"chat_template", o.chat_template && tok.has_chat_template()}};
  ProgressBar bar("ruler", static_cast<int64_t>(tasks.size() * o.ruler_lengths.size()) * n, "sample");
  std::map<int64_t, std::vector<double>> per_length;
  for (const auto& task : tasks) {
    for (int64_t L : o.ruler_lengths) {
      double sum = 0.0, len_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        ruler::GenerateSpec spec;
        spec.target_tokens = L;
        spec.seed = o.seed;
        spec.depth = o.depth;
        spec.haystack_text = haystack.empty() ? nullptr : &haystack;
        spec.use_chat_template = o.chat_template;
        spec.qa = &qa;
        spec.sample_index = i;
        ruler::Sample s = ruler::make_sample(task, tok, spec).value_or_throw();
        GenerateOptions go;
        go.sampling.temperature = 0.0;  // greedy
        go.max_new_tokens = s.tokens_to_generate;
        GenerateResult g = generate(model, &tok, s.ids, go);
        const std::string pred = ruler::postprocess_prediction(g.text);
        const double sc = ruler::score(s.metric, pred, s.outputs);
        sum += sc;
        len_sum += static_cast<double>(s.length());
        log.add({{"section", "ruler"}, {"task", task.name}, {"length", L}, {"index", i},
                 {"prompt_tokens", s.ids.size()}, {"outputs", s.outputs}, {"prediction", pred}, {"score", sc},
                 {"needle_depths", s.needle_depths}});
        bar.advance();
      }
      const double score = 100.0 * sum / static_cast<double>(n);
      out["tasks"][task.name][std::to_string(L)] = {
          {"score", score}, {"samples", n}, {"mean_length", len_sum / static_cast<double>(n)}};
      per_length[L].push_back(score);
    }
  }
  bar.finish();
  for (const auto& [L, scores] : per_length) {
    double s = 0.0;
    for (double v : scores) s += v;
    out["average"][std::to_string(L)] = s / static_cast<double>(scores.size());
  }
  return out;
}

json run_choices(CausalLM& model, const tok::Tokenizer& tok, const SuiteOptions& o, SampleLog& log) {
  json out = json::object();
  for (const auto& file : o.choice_files) {
    auto items = load_choice_file(file).value_or_throw();
    apply_limit(items, o.limit);
    double acc = 0.0, acc_norm = 0.0;
    ProgressBar bar("choices " + std::filesystem::path(file).filename().string(), static_cast<int64_t>(items.size()),
                    "item");
    for (size_t k = 0; k < items.size(); ++k) {
      const auto& it = items[k];
      std::vector<double> lls;
      for (const auto& c : it.choices)
        lls.push_back(loglikelihood(model, encode_pair(tok, it.context, " " + c), model.config().max_position_embeddings).logprob);
      ChoiceResult r = score_choices(lls, it.choices, it.gold);
      acc += r.acc;
      acc_norm += r.acc_norm;
      log.add({{"section", "multiple_choice"}, {"file", file}, {"index", k}, {"loglikelihoods", lls},
               {"gold", it.gold}, {"pred", r.pred}, {"pred_norm", r.pred_norm}});
      bar.advance();
    }
    bar.finish();
    const double n = static_cast<double>(items.size());
    out[file] = {{"n", items.size()}, {"acc", acc / n}, {"acc_norm", acc_norm / n}};
  }
  return out;
}

json run_cloze(CausalLM& model, const tok::Tokenizer& tok, const SuiteOptions& o, SampleLog& log) {
  const std::string text = read_or_throw(o.cloze_file, "--cloze");
  int64_t count = o.cloze_items;
  if (o.limit > 0) count = std::min(count, o.limit);
  auto items = make_cloze_items(text, count, o.cloze_words, o.seed);
  if (items.empty())
    throw Error("--cloze " + o.cloze_file + ": too little text for passages of " + std::to_string(o.cloze_words) +
                " words");
  double acc = 0.0, ll_sum = 0.0;
  ProgressBar bar("cloze", static_cast<int64_t>(items.size()), "item");
  for (size_t k = 0; k < items.size(); ++k) {
    Loglikelihood r = loglikelihood(model, encode_pair(tok, items[k].context, " " + items[k].target),
                                    model.config().max_position_embeddings);
    acc += r.is_greedy ? 1.0 : 0.0;
    ll_sum += r.logprob;
    log.add({{"section", "cloze"}, {"index", k}, {"target", items[k].target}, {"loglikelihood", r.logprob},
             {"greedy", r.is_greedy}});
    bar.advance();
  }
  bar.finish();
  const double n = static_cast<double>(items.size());
  return {{"file", o.cloze_file}, {"n", items.size()}, {"words", o.cloze_words}, {"acc", acc / n},
          {"perplexity", std::exp(-ll_sum / n)}};
}

json run_generation(CausalLM& model, const tok::Tokenizer& tok, const SuiteOptions& o, SampleLog& log) {
  json out = json::object();
  for (const auto& file : o.gen_files) {
    auto items = load_gen_file(file).value_or_throw();
    if (static_cast<int64_t>(items.size()) <= o.num_fewshot)
      throw Error("--gen " + file + ": " + std::to_string(items.size()) + " items, but --num-fewshot " +
                  std::to_string(o.num_fewshot) + " takes the first ones as examples");
    std::vector<GenItem> shots(items.begin(), items.begin() + o.num_fewshot);
    items.erase(items.begin(), items.begin() + o.num_fewshot);
    apply_limit(items, o.limit);
    double strict = 0.0, flexible = 0.0;
    ProgressBar bar("generate " + std::filesystem::path(file).filename().string(), static_cast<int64_t>(items.size()),
                    "item");
    for (size_t k = 0; k < items.size(); ++k) {
      const std::string prompt = gsm8k_prompt(shots, items[k]);
      std::vector<int64_t> ids = check_ids(tok.encode(prompt, /*add_special_tokens=*/false), model, file);
      GenerateOptions go;
      go.sampling.temperature = 0.0;
      go.max_new_tokens = o.max_new_tokens;
      go.stop_strings = {"Question:", "</s>", "<|im_end|>"};
      GenerateResult g = generate(model, &tok, ids, go);
      const std::string s = extract_strict(g.text), f = extract_flexible(g.text);
      const bool sm = exact_match(s, items[k].answer), fm = exact_match(f, items[k].answer);
      strict += sm;
      flexible += fm;
      log.add({{"section", "generation"}, {"file", file}, {"index", k}, {"output", g.text}, {"strict", s},
               {"flexible", f}, {"reference", normalize_answer(items[k].answer)}, {"strict_match", sm},
               {"flexible_match", fm}});
      bar.advance();
    }
    bar.finish();
    const double n = static_cast<double>(items.size());
    out[file] = {{"n", items.size()}, {"num_fewshot", o.num_fewshot}, {"strict_match", strict / n},
                 {"flexible_extract", flexible / n}};
  }
  return out;
}

}  // namespace

std::vector<int64_t> token_bytes(const tok::Tokenizer& tokenizer, const std::vector<int64_t>& ids) {
  tok::StreamDecoder dec(tokenizer, /*skip_special_tokens=*/true);
  std::vector<int64_t> bytes(ids.size(), 0);
  for (size_t i = 0; i < ids.size(); ++i) bytes[i] = static_cast<int64_t>(dec.push(static_cast<int32_t>(ids[i])).size());
  if (!ids.empty()) bytes.back() += static_cast<int64_t>(dec.flush().size());
  return bytes;
}

json evaluate_model(CausalLM& model, const tok::Tokenizer& tokenizer, const SuiteOptions& o) {
  json m = json::object();
  SampleLog log;
  if (!o.text_file.empty()) m["perplexity"] = run_perplexity(model, tokenizer, o);
  if (!o.ruler_tasks.empty()) m["ruler"] = run_ruler(model, tokenizer, o, log);
  if (!o.choice_files.empty()) m["multiple_choice"] = run_choices(model, tokenizer, o, log);
  if (!o.cloze_file.empty()) m["cloze"] = run_cloze(model, tokenizer, o, log);
  if (!o.gen_files.empty()) m["generation"] = run_generation(model, tokenizer, o, log);
  if (!o.samples_path.empty()) write_file_atomic(o.samples_path, log.lines).value_or_throw();
  return m;
}

}  // namespace hylo::eval
