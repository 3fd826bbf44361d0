#include "hylo/eval/ruler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <numbers>
#include <set>

#include <nlohmann/json.hpp>

#include "hylo/core/file_util.h"
#include "hylo/eval/ruler_text.h"

namespace hylo::eval::ruler {
namespace {

// ---- task templates (RULER scripts/data/synthetic/constants.py; the prompt wording defines the benchmark) -----

constexpr std::string_view kNiahTemplate =
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will "
    "quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} "
    "for {query} mentioned in the provided text?";
constexpr std::string_view kNiahAnswer =
    " The special magic {type_needle_v} for {query} mentioned in the provided text are";
constexpr std::string_view kNeedle = "One of the special magic {type_needle_v} for {key} is: {value}.";
constexpr std::string_view kVtTemplate =
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above.";
constexpr std::string_view kVtAnswer =
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assigned the value {query}, they are: ";
constexpr std::string_view kCweTemplate =
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
    "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?";
constexpr std::string_view kCweAnswer = " Answer: The top 10 words that appear most often in the list are:";
constexpr std::string_view kFweTemplate =
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?";
constexpr std::string_view kFweAnswer =
    " Answer: According to the coded text above, the three most frequently appeared words are:";
constexpr std::string_view kQaTemplate =
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
    "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}";
constexpr std::string_view kQaAnswer = " Answer:";

// Substitutes {name} placeholders in one pass, so braces inside the substituted text stay as they are.
std::string fill(std::string_view tpl, const std::map<std::string, std::string>& values) {
  std::string out;
  out.reserve(tpl.size() + 64);
  for (size_t i = 0; i < tpl.size();) {
    if (tpl[i] == '{') {
      size_t close = tpl.find('}', i);
      if (close != std::string_view::npos) {
        auto it = values.find(std::string(tpl.substr(i + 1, close - i - 1)));
        if (it != values.end()) {
          out += it->second;
          i = close + 1;
          continue;
        }
      }
    }
    out += tpl[i++];
  }
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

// ---- randomness: splitmix64, so that samples are identical on every platform and standard library ----------

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), unbiased (rejection of the short last block).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = next();
    while (v >= limit);
    return v % n;
  }
  int64_t between(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1))); }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
  // k distinct indices of [0, n), in draw order.
  std::vector<size_t> sample(size_t n, size_t k) {
    std::vector<size_t> idx(n);
    for (size_t i = 0; i < n; ++i) idx[i] = i;
    for (size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + below(n - i)]);
    idx.resize(k);
    return idx;
  }

 private:
  uint64_t s_;
};

uint64_t mix(uint64_t a, uint64_t b) { return Rng(a ^ (b * 0x9e3779b97f4a7c15ULL)).next(); }
uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// RULER's DEPTHS: np.round(np.linspace(0, 100, 40)) as integers.
std::vector<int> ruler_depths() {
  std::vector<int> d;
  for (int i = 0; i < 40; ++i) d.push_back(static_cast<int>(std::nearbyint(100.0 * i / 39.0)));
  return d;
}

std::string random_value(NeedleType type, Rng& rng) {
  switch (type) {
    case NeedleType::kNumbers: return std::to_string(rng.between(1000000, 9999999));
    case NeedleType::kWords: {
      auto a = adjectives(), n = nouns();
      return std::string(a[rng.below(a.size())]) + "-" + std::string(n[rng.below(n.size())]);
    }
    case NeedleType::kUuids: {
      // A version-4 UUID from 128 random bits, as uuid.UUID(int=getrandbits(128), version=4).
      uint64_t hi = rng.next(), lo = rng.next();
      hi = (hi & ~0xF000ULL) | 0x4000ULL;                            // version nibble
      lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;     // variant 10
      char buf[40];
      std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx",
                    static_cast<unsigned long long>(hi >> 32), static_cast<unsigned long long>((hi >> 16) & 0xFFFF),
                    static_cast<unsigned long long>(hi & 0xFFFF), static_cast<unsigned long long>(lo >> 48),
                    static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
      return buf;
    }
  }
  return {};
}

const char* type_plural(NeedleType t) {
  return t == NeedleType::kNumbers ? "numbers" : t == NeedleType::kWords ? "words" : "uuids";
}

// Sentences of a space-joined text: a sentence ends with a word ending in . ! or ? (optionally followed by a
// closing quote or bracket). A stand-in for nltk's sent_tokenize, which RULER uses on the essay haystack.
std::vector<std::string> split_sentences(const std::vector<std::string>& words, size_t n) {
  std::vector<std::string> sents;
  std::string cur;
  for (size_t i = 0; i < n; ++i) {
    const std::string& w = words[i % words.size()];
    if (!cur.empty()) cur += ' ';
    cur += w;
    size_t e = w.find_last_not_of("\"')]");
    if (e != std::string::npos && (w[e] == '.' || w[e] == '!' || w[e] == '?')) {
      sents.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) sents.push_back(std::move(cur));
  return sents;
}

// ---- the haystack: a stream of units cut to a word count, with items inserted at depths ------------------------

struct Haystack {
  HaystackType type;
  std::vector<std::string> words;     // essay / user text, whitespace-normalised
  std::vector<std::string> noise_words;
  NeedleType key_type, value_type;    // needle haystack: distractor needles
  uint64_t seed = 0;

  std::string distractor(size_t i) const {
    Rng rng(mix(seed, 0x5EED0000ULL + i));
    std::string key = random_value(key_type, rng);
    return fill(kNeedle, {{"type_needle_v", type_plural(value_type)}, {"key", key},
                          {"value", random_value(value_type, rng)}});
  }

  // Essay: sentences of the first n words. Noise / needle haystacks: units holding exactly n characters in total
  // (not counting joiners); the last unit may be cut short. Characters, not words, because a UUID distractor's
  // single "word" is ~25 tokens, too coarse to land within 1% of a short target.
  std::vector<std::string> units(size_t n) const {
    if (type == HaystackType::kEssay) return split_sentences(words, n);
    std::vector<std::string> out;
    size_t left = n;
    for (size_t i = 0; left > 0; ++i) {
      std::string unit = type == HaystackType::kNoise ? std::string(kNoiseSentence) : distractor(i);
      if (unit.size() > left) {
        unit.resize(left);
        // A noise line is cut at a word boundary (its words are short); a distractor at any character.
        if (type == HaystackType::kNoise) unit.resize(std::min(unit.size(), unit.rfind(' ') == std::string::npos ? 0 : unit.rfind(' ')));
        left = 0;
        if (!unit.empty()) out.push_back(std::move(unit));
        break;
      }
      left -= unit.size();
      out.push_back(std::move(unit));
    }
    return out;
  }
  const char* joiner() const { return type == HaystackType::kEssay ? " " : "\n"; }
};

struct Insert {
  double depth;          // fraction of units before it
  std::string text;
};

// Inserts items before unit floor(depth * U) (stable for equal positions) and joins. Returns the text and the
// character offset where each insert starts, in `inserts` order.
std::string assemble(const std::vector<std::string>& units, const std::vector<Insert>& inserts, const char* joiner,
                     std::vector<size_t>* offsets = nullptr) {
  const size_t U = units.size();
  std::vector<std::pair<size_t, size_t>> at;  // (unit index, insert index)
  for (size_t k = 0; k < inserts.size(); ++k) {
    size_t idx = std::min(U, static_cast<size_t>(std::floor(inserts[k].depth * static_cast<double>(U))));
    at.emplace_back(idx, k);
  }
  std::stable_sort(at.begin(), at.end(), [](auto& a, auto& b) { return a.first < b.first; });
  if (offsets) offsets->assign(inserts.size(), 0);
  std::string out;
  size_t next = 0;
  auto add = [&](const std::string& piece) {
    if (!out.empty()) out += joiner;
    out += piece;
  };
  for (size_t u = 0; u <= U; ++u) {
    while (next < at.size() && at[next].first == u) {
      if (!out.empty()) out += joiner;
      if (offsets) (*offsets)[at[next].second] = out.size();
      out += inserts[at[next].second].text;
      ++next;
    }
    if (u < U) add(units[u]);
  }
  return out;
}

// ---- rendering and length fitting ------------------------------------------------------------------------------

struct Rendered {
  std::string prompt;
  std::vector<int64_t> ids;
};

Result<Rendered> render(const tok::Tokenizer& tok, bool chat, const std::string& user, const std::string& prefix) {
  Rendered r;
  std::vector<int32_t> ids;
  if (chat && tok.has_chat_template()) {
    auto t = tok.apply_chat_template({{"user", user}}, true);
    if (!t.ok()) return make_error("ruler: chat template: " + t.error());
    r.prompt = *t + prefix;
    ids = tok.encode(r.prompt, /*add_special_tokens=*/false);
  } else {
    r.prompt = user + prefix;
    ids = tok.encode(r.prompt, /*add_special_tokens=*/true);
  }
  r.ids.assign(ids.begin(), ids.end());
  return r;
}

struct Built {
  std::string user, prefix;
  std::vector<std::string> outputs;
  std::vector<double> depths;
  std::vector<std::string> needles;
};

// Finds the largest size n with length(n) <= target by doubling then bisection; length is (near) monotone in n.
// Returns the Built/Rendered at that size.
Result<std::pair<Built, Rendered>> fit(const std::function<Built(int64_t)>& build, const tok::Tokenizer& tok,
                                       bool chat, int64_t target, int tokens_to_generate, int64_t n_min,
                                       const std::string& task) {
  std::map<int64_t, std::pair<Built, Rendered>> cache;
  auto length = [&](int64_t n) -> Result<int64_t> {
    auto it = cache.find(n);
    if (it == cache.end()) {
      Built b = build(n);
      auto r = render(tok, chat, b.user, b.prefix);
      if (!r.ok()) return r.error_info();
      it = cache.emplace(n, std::make_pair(std::move(b), std::move(r).value())).first;
    }
    return static_cast<int64_t>(it->second.second.ids.size()) + tokens_to_generate;
  };
  auto l0 = length(n_min);
  if (!l0.ok()) return l0.error_info();
  if (*l0 > target)
    return make_error("ruler " + task + ": the prompt without haystack is already " + std::to_string(*l0) +
                      " tokens (with " + std::to_string(tokens_to_generate) + " to generate), over the target " +
                      std::to_string(target));
  int64_t lo = n_min, hi = std::max<int64_t>(n_min + 1, 2 * n_min);
  // Grow hi from an estimate of tokens per unit until it overshoots.
  for (int guard = 0;; ++guard) {
    auto l = length(hi);
    if (!l.ok()) return l.error_info();
    if (*l > target) break;
    lo = hi;
    const double per = std::max(0.05, static_cast<double>(*l - *l0) / static_cast<double>(std::max<int64_t>(1, hi - n_min)));
    hi = std::max(hi + 1, hi + static_cast<int64_t>(static_cast<double>(target - *l) / per * 1.1) + 1);
    if (guard > 60) return make_error("ruler " + task + ": cannot reach " + std::to_string(target) + " tokens");
  }
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    auto l = length(mid);
    if (!l.ok()) return l.error_info();
    (*l <= target ? lo : hi) = mid;
  }
  (void)length(lo);
  return std::move(cache.at(lo));
}

// Moves a fitted task text into a Sample (the task-level fields -- task, seed, metric, ... -- are filled by the
// generator's caller). Built's needle fields are empty for tasks without needles.
Sample to_sample(std::pair<Built, Rendered>&& fitted) {
  auto& [b, r] = fitted;
  Sample s;
  s.user_text = std::move(b.user);
  s.answer_prefix = std::move(b.prefix);
  s.outputs = std::move(b.outputs);
  s.needle_depths = std::move(b.depths);
  s.needles = std::move(b.needles);
  s.prompt = std::move(r.prompt);
  s.ids = std::move(r.ids);
  return s;
}

// ---- tasks -------------------------------------------------------------------------------------------------------

Haystack make_haystack(const TaskSpec& task, const GenerateSpec& spec, uint64_t seed) {
  Haystack h;
  h.type = task.haystack;
  h.key_type = task.key_type;
  h.value_type = task.value_type;
  h.seed = seed;
  if (h.type == HaystackType::kEssay)
    h.words = split_words(spec.haystack_text ? std::string_view(*spec.haystack_text) : essay_text());
  return h;
}

Result<Sample> niah(const TaskSpec& task, const tok::Tokenizer& tok, const GenerateSpec& spec, uint64_t seed) {
  Rng rng(seed);
  const int num_k = std::max(task.num_k, task.num_q);
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> values;
  std::vector<std::string> needles;
  for (int k = 0; k < num_k; ++k) {
    keys.push_back(random_value(task.key_type, rng));
    values.emplace_back();
    for (int v = 0; v < task.num_v; ++v) {
      values.back().push_back(random_value(task.value_type, rng));
      needles.push_back(fill(kNeedle, {{"type_needle_v", type_plural(task.value_type)}, {"key", keys.back()},
                                       {"value", values.back().back()}}));
    }
  }
  rng.shuffle(needles);
  std::vector<double> depths;
  if (spec.depth) {
    depths.assign(needles.size(), *spec.depth);
  } else {
    auto all = ruler_depths();
    for (size_t i : rng.sample(all.size(), needles.size())) depths.push_back(all[i] / 100.0);
    std::sort(depths.begin(), depths.end());
  }
  std::vector<Insert> inserts;
  for (size_t i = 0; i < needles.size(); ++i) inserts.push_back({depths[i], needles[i]});
  // Query and answers.
  std::vector<std::string> queries, answers;
  for (size_t i : rng.sample(static_cast<size_t>(num_k), static_cast<size_t>(task.num_q))) {
    queries.push_back(keys[i]);
    for (const auto& v : values[i]) answers.push_back(v);
  }
  std::string query = queries.back();
  if (queries.size() > 1) {
    query.clear();
    for (size_t i = 0; i + 1 < queries.size(); ++i) query += (i ? ", " : "") + queries[i];
    query += ", and " + queries.back();
  }
  std::string tpl(kNiahTemplate), prefix_tpl(kNiahAnswer), type_v = type_plural(task.value_type);
  if (task.num_q * task.num_v == 1) {
    for (std::string* t : {&tpl, &prefix_tpl}) {
      replace_all(*t, "Some", "A");
      replace_all(*t, "are all", "is");
      replace_all(*t, "are", "is");
      replace_all(*t, "answers", "answer");
    }
    type_v.pop_back();
  }
  Haystack hay = make_haystack(task, spec, seed);
  auto build = [&](int64_t n) {
    Built b;
    b.user = fill(tpl, {{"type_needle_v", type_v}, {"context", assemble(hay.units(n), inserts, hay.joiner())},
                        {"query", query}});
    b.prefix = fill(prefix_tpl, {{"type_needle_v", type_v}, {"query", query}});
    b.outputs = answers;
    b.depths = depths;
    b.needles = needles;
    return b;
  };
  auto fitted = fit(build, tok, spec.use_chat_template, spec.target_tokens, task.tokens_to_generate, 0, task.name);
  if (!fitted.ok()) return fitted.error_info();
  return to_sample(std::move(fitted).value());
}

std::string random_letters(Rng& rng, int k) {
  std::string s;
  for (int i = 0; i < k; ++i) s += static_cast<char>('A' + rng.below(26));
  return s;
}

// One variable-tracking text: chains of `hops` assignments inserted into n noise words.
struct VtChains {
  std::vector<std::vector<std::string>> vars, statements;
  std::vector<std::vector<double>> depths;
  std::string value;
};

VtChains vt_chains(Rng& rng, int chains, int hops, int letters) {
  VtChains c;
  std::set<std::string> used;
  for (int ch = 0; ch < chains; ++ch) {
    std::vector<std::string> vars;
    while (static_cast<int>(vars.size()) < hops + 1) {
      std::string v = random_letters(rng, letters);
      if (used.insert(v).second) vars.push_back(v);
    }
    std::vector<std::string> st{"VAR " + vars[0] + " = " + std::to_string(rng.between(10000, 99999))};
    for (int j = 0; j < hops; ++j) st.push_back("VAR " + vars[j + 1] + " = VAR " + vars[j] + " ");
    std::vector<double> d;
    for (size_t k = 0; k < st.size(); ++k) d.push_back(static_cast<double>(rng.below(1000000)) / 1e6);
    std::sort(d.begin(), d.end());
    c.vars.push_back(vars);
    c.statements.push_back(st);
    c.depths.push_back(d);
  }
  c.value = c.statements[0][0].substr(c.statements[0][0].rfind(' ') + 1);
  return c;
}

std::string vt_context(const VtChains& c, const Haystack& hay, int64_t n) {
  std::vector<Insert> inserts;
  for (size_t ch = 0; ch < c.statements.size(); ++ch)
    for (size_t j = 0; j < c.statements[ch].size(); ++j) {
      std::string st = c.statements[ch][j];
      if (hay.type == HaystackType::kEssay) {
        while (!st.empty() && st.back() == ' ') st.pop_back();
        st += ".";
      }
      inserts.push_back({c.depths[ch][j], st});
    }
  return assemble(hay.units(static_cast<size_t>(n)), inserts, hay.joiner());
}

Result<Sample> variable_tracking(const TaskSpec& task, const tok::Tokenizer& tok, const GenerateSpec& spec,
                                 uint64_t seed) {
  Rng rng(seed);
  const std::string num_v = std::to_string(task.num_hops + 1);
  Haystack hay = make_haystack(task, spec, seed);
  // The worked example (RULER: three-letter variables, about 500 tokens, the answer appended).
  Rng icl_rng(mix(seed, 0x1C1));
  VtChains icl = vt_chains(icl_rng, task.num_chains, task.num_hops, 3);
  Haystack icl_hay = hay;
  icl_hay.type = HaystackType::kNoise;
  auto icl_text = [&](int64_t n) {
    std::string ans;
    for (const auto& v : icl.vars[0]) ans += (ans.empty() ? "" : " ") + v;
    return fill(kVtTemplate, {{"context", vt_context(icl, icl_hay, n)}, {"query", icl.value}, {"num_v", num_v}}) +
           " " + ans + "\n";
  };
  auto icl_fit = fit([&](int64_t n) { Built b; b.user = icl_text(n); return b; }, tok, false, 500, 0, 0,
                     task.name + " example");
  if (!icl_fit.ok()) return icl_fit.error_info();
  const std::string example = icl_fit->first.user;

  VtChains c = vt_chains(rng, task.num_chains, task.num_hops, 5);
  auto build = [&](int64_t n) {
    Built b;
    b.user = example + "\n" +
             fill(kVtTemplate, {{"context", vt_context(c, hay, n)}, {"query", c.value}, {"num_v", num_v}});
    b.prefix = fill(kVtAnswer, {{"query", c.value}, {"num_v", num_v}});
    b.outputs = c.vars[0];
    return b;
  };
  auto fitted = fit(build, tok, spec.use_chat_template, spec.target_tokens, task.tokens_to_generate, 0, task.name);
  if (!fitted.ok()) return fitted.error_info();
  return to_sample(std::move(fitted).value());
}

// Words for cwe: hylo's adjectives and nouns, then generated consonant-vowel words when more are needed.
std::vector<std::string> cwe_pool(size_t n, Rng& rng) {
  std::vector<std::string> pool;
  for (auto w : adjectives()) pool.emplace_back(w);
  for (auto w : nouns()) pool.emplace_back(w);
  rng.shuffle(pool);
  std::set<std::string> seen(pool.begin(), pool.end());
  static constexpr char kCons[] = "bdfgklmnprstvz", kVow[] = "aeiou";
  while (pool.size() < n) {
    std::string w;
    int syll = 2 + static_cast<int>(rng.below(2));
    for (int k = 0; k < syll; ++k) {
      w += kCons[rng.below(sizeof kCons - 1)];
      w += kVow[rng.below(sizeof kVow - 1)];
    }
    if (seen.insert(w).second) pool.push_back(w);
  }
  return pool;
}

std::string numbered(const std::vector<std::string>& words) {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i) s += (i ? " " : "") + std::to_string(i + 1) + ". " + words[i];
  return s;
}

Result<Sample> common_words(const TaskSpec& task, const tok::Tokenizer& tok, const GenerateSpec& spec,
                            uint64_t seed) {
  const bool short_ctx = spec.target_tokens < 4096;
  const int freq_cw = short_ctx ? 6 : task.freq_cw, freq_ucw = short_ctx ? 1 : task.freq_ucw;
  const int ex_words = short_ctx ? 20 : 40, ex_cw = short_ctx ? 3 : 10, ex_ucw = short_ctx ? 1 : 3;
  Rng rng(seed);
  // Upper bound of distinct words needed: every word at least freq_ucw times, ~2 tokens each.
  const size_t max_words = static_cast<size_t>(spec.target_tokens / (2 * std::max(1, freq_ucw))) + 64;
  std::vector<std::string> pool = cwe_pool(max_words, rng);
  auto example = [&](const std::vector<std::string>& distinct, int fc, int fu, uint64_t order_seed) {
    std::vector<std::string> list;
    for (size_t i = 0; i < distinct.size(); ++i)
      for (int r = 0; r < (static_cast<int>(i) < task.num_cw ? fc : fu); ++r) list.push_back(distinct[i]);
    Rng order(order_seed);
    order.shuffle(list);
    return list;
  };
  // The worked example uses words from the end of the pool, the task from its start.
  std::vector<std::string> ex_distinct(pool.end() - ex_words, pool.end());
  std::vector<std::string> ex_common(ex_distinct.begin(), ex_distinct.begin() + task.num_cw);
  const std::string shot = fill(kCweTemplate, {{"context", numbered(example(ex_distinct, ex_cw, ex_ucw, mix(seed, 7)))}}) +
                           std::string(kCweAnswer) + " " + numbered(ex_common);
  const int64_t available = static_cast<int64_t>(pool.size()) - ex_words;
  auto build = [&](int64_t n) {
    n = std::min<int64_t>(std::max<int64_t>(n, task.num_cw), available);
    std::vector<std::string> distinct(pool.begin(), pool.begin() + n);
    Built b;
    b.user = shot + "\n" + fill(kCweTemplate, {{"context", numbered(example(distinct, freq_cw, freq_ucw, mix(seed, 11)))}});
    b.prefix = std::string(kCweAnswer);
    b.outputs.assign(distinct.begin(), distinct.begin() + task.num_cw);
    return b;
  };
  auto fitted = fit(build, tok, spec.use_chat_template, spec.target_tokens, task.tokens_to_generate, task.num_cw,
                    task.name);
  if (!fitted.ok()) return fitted.error_info();
  return to_sample(std::move(fitted).value());
}

Result<Sample> frequent_words(const TaskSpec& task, const tok::Tokenizer& tok, const GenerateSpec& spec,
                              uint64_t seed) {
  Rng rng(seed);
  const int64_t vocab_size = std::max<int64_t>(8, (spec.target_tokens - task.tokens_to_generate) / 50);
  std::set<std::string> uniq;
  while (static_cast<int64_t>(uniq.size()) < vocab_size) {
    std::string w;
    for (int k = 0; k < 6; ++k) w += static_cast<char>('a' + rng.below(26));
    uniq.insert(w);
  }
  std::vector<std::string> vocab(uniq.begin(), uniq.end());
  rng.shuffle(vocab);
  vocab[0] = "...";  // the most frequent "word" is noise
  const double zeta = std::numbers::pi * std::numbers::pi / 6.0;  // zeta(2); general alpha below
  double z = zeta;
  if (task.alpha != 2.0) {
    z = 0.0;
    for (int k = 1; k < 1000000; ++k) z += std::pow(static_cast<double>(k), -task.alpha);
  }
  const uint64_t order_seed = mix(seed, 13);
  auto build = [&](int64_t n) {
    std::vector<std::string> words;
    for (size_t k = 0; k < vocab.size(); ++k) {
      const auto cnt = static_cast<int64_t>(static_cast<double>(n) * std::pow(static_cast<double>(k + 1), -task.alpha) / z);
      for (int64_t r = 0; r < cnt; ++r) words.push_back(vocab[k]);
    }
    Rng order(order_seed);
    order.shuffle(words);
    std::string ctx;
    for (const auto& w : words) ctx += (ctx.empty() ? "" : " ") + w;
    Built b;
    b.user = fill(kFweTemplate, {{"context", ctx}});
    b.prefix = std::string(kFweAnswer);
    b.outputs = {vocab[1], vocab[2], vocab[3]};
    return b;
  };
  auto fitted = fit(build, tok, spec.use_chat_template, spec.target_tokens, task.tokens_to_generate, 0, task.name);
  if (!fitted.ok()) return fitted.error_info();
  return to_sample(std::move(fitted).value());
}

Result<Sample> qa(const TaskSpec& task, const tok::Tokenizer& tok, const GenerateSpec& spec, uint64_t seed) {
  if (spec.qa == nullptr || spec.qa->empty()) return make_error("ruler qa: needs a QA file (--qa-file)");
  const auto& items = *spec.qa;
  const QaItem& item = items[static_cast<size_t>(spec.sample_index) % items.size()];
  std::vector<std::string> others;
  std::set<std::string> gold(item.documents.begin(), item.documents.end());
  for (const auto& it : items)
    for (const auto& d : it.documents)
      if (!gold.count(d)) others.push_back(d);
  std::sort(others.begin(), others.end());
  others.erase(std::unique(others.begin(), others.end()), others.end());
  Rng rng(seed);
  rng.shuffle(others);
  const uint64_t order_seed = mix(seed, 17);
  auto build = [&](int64_t n) {
    std::vector<std::string> docs(item.documents);
    for (int64_t i = 0; i < n && !others.empty(); ++i) docs.push_back(others[static_cast<size_t>(i) % others.size()]);
    Rng order(order_seed);
    order.shuffle(docs);
    std::string ctx;
    for (size_t i = 0; i < docs.size(); ++i)
      ctx += (i ? "\n\n" : "") + std::string("Document ") + std::to_string(i + 1) + ":\n" + docs[i];
    Built b;
    b.user = fill(kQaTemplate, {{"context", ctx}, {"query", item.question}});
    b.prefix = std::string(kQaAnswer);
    b.outputs = item.answers;
    return b;
  };
  auto fitted = fit(build, tok, spec.use_chat_template, spec.target_tokens, task.tokens_to_generate, 0, task.name);
  if (!fitted.ok()) return fitted.error_info();
  return to_sample(std::move(fitted).value());
}

TaskSpec niah_task(std::string name, HaystackType h, NeedleType k, NeedleType v, int nk, int nv, int nq) {
  TaskSpec t;
  t.name = std::move(name);
  t.kind = Kind::kNiah;
  t.haystack = h;
  t.key_type = k;
  t.value_type = v;
  t.num_k = nk;
  t.num_v = nv;
  t.num_q = nq;
  t.tokens_to_generate = 128;
  return t;
}

std::vector<TaskSpec> all_tasks() {
  using H = HaystackType;
  using N = NeedleType;
  std::vector<TaskSpec> t = {
      niah_task("niah_single_1", H::kNoise, N::kWords, N::kNumbers, 1, 1, 1),
      niah_task("niah_single_2", H::kEssay, N::kWords, N::kNumbers, 1, 1, 1),
      niah_task("niah_single_3", H::kEssay, N::kWords, N::kUuids, 1, 1, 1),
      niah_task("niah_multikey_1", H::kEssay, N::kWords, N::kNumbers, 4, 1, 1),
      niah_task("niah_multikey_2", H::kNeedle, N::kWords, N::kNumbers, 1, 1, 1),
      niah_task("niah_multikey_3", H::kNeedle, N::kUuids, N::kUuids, 1, 1, 1),
      niah_task("niah_multivalue", H::kEssay, N::kWords, N::kNumbers, 1, 4, 1),
      niah_task("niah_multiquery", H::kEssay, N::kWords, N::kNumbers, 1, 1, 4),
  };
  TaskSpec vt;
  vt.name = "vt";
  vt.kind = Kind::kVariableTracking;
  vt.haystack = H::kNoise;
  vt.tokens_to_generate = 30;
  t.push_back(vt);
  TaskSpec cwe;
  cwe.name = "cwe";
  cwe.kind = Kind::kCommonWords;
  cwe.tokens_to_generate = 120;
  t.push_back(cwe);
  TaskSpec fwe;
  fwe.name = "fwe";
  fwe.kind = Kind::kFrequentWords;
  fwe.tokens_to_generate = 50;
  t.push_back(fwe);
  TaskSpec q;
  q.name = "qa";
  q.kind = Kind::kQa;
  q.tokens_to_generate = 32;
  q.metric = Metric::kStringMatchPart;
  t.push_back(q);
  return t;
}

}  // namespace

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& t : all_tasks())
    if (t.kind != Kind::kQa) names.push_back(t.name);
  return names;
}

Result<TaskSpec> task_by_name(const std::string& name) {
  std::string known;
  for (const auto& t : all_tasks()) {
    if (t.name == name) return t;
    known += (known.empty() ? "" : ", ") + t.name;
  }
  return make_error("unknown RULER task '" + name + "' (known: " + known + ")");
}

Result<std::vector<QaItem>> load_qa_file(const std::string& path) {
  auto text = read_text_file(path);
  if (!text.ok()) return text.error_info();
  std::vector<QaItem> items;
  size_t line_no = 0, pos = 0;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(line_no);
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return make_error(where + ": not a JSON object");
    QaItem it;
    if (!j.contains("question") || !j["question"].is_string())
      return make_error(where + ": field \"question\" must be a string");
    it.question = j["question"];
    if (!j.contains("answers") || !j["answers"].is_array() || j["answers"].empty())
      return make_error(where + ": field \"answers\" must be a non-empty array of strings");
    for (const auto& a : j["answers"]) {
      if (!a.is_string()) return make_error(where + ": field \"answers\" must hold strings");
      it.answers.push_back(a);
    }
    if (j.contains("context") && j["context"].is_string()) {
      it.documents.push_back(j["context"]);
    } else if (j.contains("documents") && j["documents"].is_array() && !j["documents"].empty()) {
      for (const auto& d : j["documents"]) {
        if (!d.is_string()) return make_error(where + ": field \"documents\" must hold strings");
        it.documents.push_back(d);
      }
    } else {
      return make_error(where + ": needs \"context\" (string) or \"documents\" (non-empty array of strings)");
    }
    items.push_back(std::move(it));
  }
  if (items.empty()) return make_error(path + ": no QA items");
  return items;
}

Result<Sample> make_sample(const TaskSpec& task, const tok::Tokenizer& tokenizer, const GenerateSpec& spec) {
  if (spec.target_tokens < 64)
    return make_error("ruler " + task.name + ": target length " + std::to_string(spec.target_tokens) +
                      " is too short (need >= 64 tokens)");
  if (spec.depth && !(*spec.depth >= 0.0 && *spec.depth <= 1.0))
    return make_error("ruler " + task.name + ": depth must be in [0, 1]");
  const uint64_t seed = mix(mix(spec.seed, hash_name(task.name)), static_cast<uint64_t>(spec.sample_index));
  Result<Sample> s = make_error("ruler: unknown task kind");
  switch (task.kind) {
    case Kind::kNiah: s = niah(task, tokenizer, spec, seed); break;
    case Kind::kVariableTracking: s = variable_tracking(task, tokenizer, spec, seed); break;
    case Kind::kCommonWords: s = common_words(task, tokenizer, spec, seed); break;
    case Kind::kFrequentWords: s = frequent_words(task, tokenizer, spec, seed); break;
    case Kind::kQa: s = qa(task, tokenizer, spec, seed); break;
  }
  if (!s.ok()) return s;
  s->task = task.name;
  s->target_tokens = spec.target_tokens;
  s->seed = spec.seed;
  s->tokens_to_generate = task.tokens_to_generate;
  s->metric = task.metric;
  return s;
}

namespace {
std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

double string_match_all(const std::string& prediction, const std::vector<std::string>& refs) {
  if (refs.empty()) return 0.0;
  const std::string p = lower_ascii(prediction);
  double hit = 0;
  for (const auto& r : refs) hit += p.find(lower_ascii(r)) != std::string::npos ? 1.0 : 0.0;
  return hit / static_cast<double>(refs.size());
}

double string_match_part(const std::string& prediction, const std::vector<std::string>& refs) {
  const std::string p = lower_ascii(prediction);
  for (const auto& r : refs)
    if (p.find(lower_ascii(r)) != std::string::npos) return 1.0;
  return 0.0;
}

double score(Metric metric, const std::string& prediction, const std::vector<std::string>& refs) {
  return metric == Metric::kStringMatchAll ? string_match_all(prediction, refs) : string_match_part(prediction, refs);
}

std::string postprocess_prediction(const std::string& text) {
  auto strip = [](const std::string& s) {
    const char* ws = " \t\n\r\f\v";
    size_t a = s.find_first_not_of(ws);
    if (a == std::string::npos) return std::string();
    return s.substr(a, s.find_last_not_of(ws) - a + 1);
  };
  std::string s = strip(text);
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  return strip(s);
}

}  // namespace hylo::eval::ruler
