// tokenizer.json -> pipeline. Every component type this file cannot run exactly is an error naming the file,
// the component and the type, listing what is supported; so is every malformed field.
#include <nlohmann/json.hpp>

#include <cstdio>

#include "hylo/io/json_strict.h"
#include "hylo/io/tokenizer/tokenizer_impl.h"

namespace hylo::tok {
namespace {

using nlohmann::json;

struct Ctx {
  std::string file;
  ErrorInfo err(const std::string& where, const std::string& msg) const { return make_error(file + ": " + where + ": " + msg); }
};

Result<std::string> req_string(const Ctx& c, const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string()) return c.err(where, std::string("field '") + key + "' must be a string");
  return it->get<std::string>();
}

Result<bool> opt_bool(const Ctx& c, const json& o, const char* key, bool dflt, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) return c.err(where, std::string("field '") + key + "' must be true or false");
  return it->get<bool>();
}

Result<std::optional<std::string>> opt_string(const Ctx& c, const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return c.err(where, std::string("field '") + key + "' must be a string or null");
  return std::optional<std::string>(it->get<std::string>());
}

Result<std::string> type_of(const Ctx& c, const json& o, const std::string& where) {
  if (!o.is_object()) return c.err(where, "expected an object");
  return req_string(c, o, "type", where);
}

Result<Pattern> parse_pattern(const Ctx& c, const json& o, const std::string& where) {
  if (!o.is_object()) return c.err(where, "field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
  Pattern p;
  if (auto it = o.find("String"); it != o.end() && it->is_string()) {
    p.kind = Pattern::Kind::kString;
    p.literal = it->get<std::string>();
    if (p.literal.empty()) return c.err(where, "an empty String pattern is not supported");
    return p;
  }
  if (auto it = o.find("Regex"); it != o.end() && it->is_string()) {
    p.kind = Pattern::Kind::kRegex;
    HYLO_TRY(p.regex, Regex::compile(it->get<std::string>(), c.file + ": " + where));
    return p;
  }
  return c.err(where, "field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
}

Result<uint32_t> one_char(const Ctx& c, const std::string& s, const std::string& where, const char* field) {
  if (s.empty() || !utf8_valid(s)) return c.err(where, std::string("field '") + field + "' must be one character");
  std::size_t i = 0;
  const uint32_t cp = utf8_next(s, i);
  if (i != s.size()) return c.err(where, std::string("field '") + field + "' must be one character");
  return cp;
}

Result<PrependScheme> prepend_scheme(const Ctx& c, const json& o, const std::string& where) {
  auto it = o.find("prepend_scheme");
  if (it == o.end() || it->is_null()) {
    // Files written before prepend_scheme existed say add_prefix_space instead.
    HYLO_TRY(bool add, opt_bool(c, o, "add_prefix_space", true, where));
    return add ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  const std::string s = it->is_string() ? it->get<std::string>() : "";
  if (s == "first") return PrependScheme::kFirst;
  if (s == "never") return PrependScheme::kNever;
  if (s == "always") return PrependScheme::kAlways;
  return c.err(where, "field 'prepend_scheme' must be \"first\", \"never\" or \"always\"");
}

Result<std::unique_ptr<Normalizer>> parse_normalizer(const Ctx& c, const json& o, const std::string& where) {
  HYLO_TRY(auto type, type_of(c, o, where));
  if (type == "NFC") return make_unicode_normalizer(NormForm::kNFC);
  if (type == "NFD") return make_unicode_normalizer(NormForm::kNFD);
  if (type == "NFKC") return make_unicode_normalizer(NormForm::kNFKC);
  if (type == "NFKD") return make_unicode_normalizer(NormForm::kNFKD);
  if (type == "Prepend") {
    HYLO_TRY(auto p, req_string(c, o, "prepend", where));
    return make_prepend_normalizer(p);
  }
  if (type == "Replace") {
    if (!o.contains("pattern")) return c.err(where, "Replace needs 'pattern'");
    HYLO_TRY(auto pat, parse_pattern(c, o["pattern"], where));
    HYLO_TRY(auto content, req_string(c, o, "content", where));
    return make_replace_normalizer(std::move(pat), content);
  }
  if (type == "Strip") {
    HYLO_TRY(bool l, opt_bool(c, o, "strip_left", false, where));
    HYLO_TRY(bool r, opt_bool(c, o, "strip_right", false, where));
    return make_strip_normalizer(l, r);
  }
  if (type == "Sequence") {
    auto it = o.find("normalizers");
    if (it == o.end() || !it->is_array()) return c.err(where, "Sequence needs an array 'normalizers'");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (std::size_t i = 0; i < it->size(); ++i) {
      HYLO_TRY(auto n, parse_normalizer(c, (*it)[i], where + ".normalizers[" + std::to_string(i) + "]"));
      parts.push_back(std::move(n));
    }
    return make_sequence_normalizer(std::move(parts));
  }
  return c.err(where, "unsupported normalizer type '" + type +
                          "' (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, Sequence)");
}

Result<SplitBehavior> parse_behavior(const Ctx& c, const json& o, const std::string& where) {
  auto it = o.find("behavior");
  const std::string b = (it != o.end() && it->is_string()) ? it->get<std::string>() : "";
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return c.err(where, "field 'behavior' must be one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

Result<std::unique_ptr<PreTokenizer>> parse_pre_tokenizer(const Ctx& c, const json& o, const std::string& where) {
  HYLO_TRY(auto type, type_of(c, o, where));
  if (type == "Sequence") {
    auto it = o.find("pretokenizers");
    if (it == o.end() || !it->is_array()) return c.err(where, "Sequence needs an array 'pretokenizers'");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (std::size_t i = 0; i < it->size(); ++i) {
      HYLO_TRY(auto p, parse_pre_tokenizer(c, (*it)[i], where + ".pretokenizers[" + std::to_string(i) + "]"));
      parts.push_back(std::move(p));
    }
    return make_sequence_pre_tokenizer(std::move(parts));
  }
  if (type == "Split") {
    if (!o.contains("pattern")) return c.err(where, "Split needs 'pattern'");
    HYLO_TRY(auto pat, parse_pattern(c, o["pattern"], where));
    HYLO_TRY(auto behavior, parse_behavior(c, o, where));
    HYLO_TRY(bool invert, opt_bool(c, o, "invert", false, where));
    return make_split_pre_tokenizer(std::move(pat), behavior, invert);
  }
  if (type == "ByteLevel") {
    HYLO_TRY(bool aps, opt_bool(c, o, "add_prefix_space", true, where));
    HYLO_TRY(bool use_regex, opt_bool(c, o, "use_regex", true, where));
    return make_byte_level_pre_tokenizer(aps, use_regex);
  }
  if (type == "Digits") {
    HYLO_TRY(bool ind, opt_bool(c, o, "individual_digits", false, where));
    return make_digits_pre_tokenizer(ind);
  }
  if (type == "Metaspace") {
    HYLO_TRY(auto rep, req_string(c, o, "replacement", where));
    HYLO_TRY(uint32_t cp, one_char(c, rep, where, "replacement"));
    HYLO_TRY(auto scheme, prepend_scheme(c, o, where));
    HYLO_TRY(bool split, opt_bool(c, o, "split", true, where));
    return make_metaspace_pre_tokenizer(cp, scheme, split);
  }
  if (type == "Whitespace") return make_whitespace_pre_tokenizer();
  if (type == "WhitespaceSplit") return make_whitespace_split_pre_tokenizer();
  return c.err(where, "unsupported pre_tokenizer type '" + type +
                          "' (supported: Sequence, Split, ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit)");
}

Result<std::unique_ptr<Decoder>> parse_decoder(const Ctx& c, const json& o, const std::string& where) {
  HYLO_TRY(auto type, type_of(c, o, where));
  if (type == "ByteLevel") return make_byte_level_decoder();
  if (type == "Metaspace") {
    HYLO_TRY(auto rep, req_string(c, o, "replacement", where));
    HYLO_TRY(uint32_t cp, one_char(c, rep, where, "replacement"));
    HYLO_TRY(auto scheme, prepend_scheme(c, o, where));
    return make_metaspace_decoder(cp, scheme);
  }
  if (type == "Replace") {
    if (!o.contains("pattern")) return c.err(where, "Replace needs 'pattern'");
    HYLO_TRY(auto pat, parse_pattern(c, o["pattern"], where));
    HYLO_TRY(auto content, req_string(c, o, "content", where));
    return make_replace_decoder(std::move(pat), content);
  }
  if (type == "ByteFallback") return make_byte_fallback_decoder();
  if (type == "Fuse") return make_fuse_decoder();
  if (type == "Strip") {
    HYLO_TRY(auto content, req_string(c, o, "content", where));
    HYLO_TRY(uint32_t cp, one_char(c, content, where, "content"));
    (void)cp;
    auto num = [&](const char* k) -> Result<std::size_t> {
      auto it = o.find(k);
      if (it == o.end() || !it->is_number_unsigned()) return c.err(where, std::string("field '") + k + "' must be a non-negative integer");
      return it->get<std::size_t>();
    };
    HYLO_TRY(auto start, num("start"));
    HYLO_TRY(auto stop, num("stop"));
    return make_strip_decoder(content, start, stop);
  }
  if (type == "Sequence") {
    auto it = o.find("decoders");
    if (it == o.end() || !it->is_array()) return c.err(where, "Sequence needs an array 'decoders'");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (std::size_t i = 0; i < it->size(); ++i) {
      HYLO_TRY(auto d, parse_decoder(c, (*it)[i], where + ".decoders[" + std::to_string(i) + "]"));
      parts.push_back(std::move(d));
    }
    return make_sequence_decoder(std::move(parts));
  }
  return c.err(where, "unsupported decoder type '" + type +
                          "' (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)");
}

Status parse_post_processor(const Ctx& c, const json& o, const std::string& where, PostProcessor& post) {
  HYLO_TRY(auto type, type_of(c, o, where));
  if (type == "ByteLevel") return {};  // only trims offsets; ids are unchanged
  if (type == "Sequence") {
    auto it = o.find("processors");
    if (it == o.end() || !it->is_array()) return c.err(where, "Sequence needs an array 'processors'");
    for (std::size_t i = 0; i < it->size(); ++i)
      HYLO_CHECK_OK(parse_post_processor(c, (*it)[i], where + ".processors[" + std::to_string(i) + "]", post));
    return {};
  }
  if (type == "TemplateProcessing") {
    auto single = o.find("single");
    auto specials = o.find("special_tokens");
    if (single == o.end() || !single->is_array()) return c.err(where, "TemplateProcessing needs an array 'single'");
    if (specials == o.end() || !specials->is_object()) return c.err(where, "TemplateProcessing needs an object 'special_tokens'");
    std::vector<int32_t> prefix, suffix;
    bool seen_sequence = false;
    for (const auto& piece : *single) {
      if (piece.is_object() && piece.contains("Sequence")) {
        if (seen_sequence) return c.err(where, "'single' holds more than one Sequence");
        seen_sequence = true;
        continue;
      }
      if (!piece.is_object() || !piece.contains("SpecialToken") || !piece["SpecialToken"].is_object() ||
          !piece["SpecialToken"].contains("id") || !piece["SpecialToken"]["id"].is_string())
        return c.err(where, "each item of 'single' must be {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}");
      const std::string name = piece["SpecialToken"]["id"].get<std::string>();
      auto st = specials->find(name);
      if (st == specials->end() || !st->is_object() || !st->contains("ids") || !(*st)["ids"].is_array())
        return c.err(where, "special token '" + name + "' is not defined in 'special_tokens'");
      for (const auto& id : (*st)["ids"]) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
          return c.err(where, "special token '" + name + "' has an invalid id");
        (seen_sequence ? suffix : prefix).push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
    }
    if (!seen_sequence) return c.err(where, "'single' has no Sequence");
    post.prefix.insert(post.prefix.begin(), prefix.begin(), prefix.end());
    post.suffix.insert(post.suffix.end(), suffix.begin(), suffix.end());
    post.any = true;
    return {};
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto tok_id = [&](const char* k) -> Result<int32_t> {
      auto it = o.find(k);
      if (it == o.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer())
        return c.err(where, std::string("field '") + k + "' must be [token, id]");
      return static_cast<int32_t>((*it)[1].get<int64_t>());
    };
    HYLO_TRY(int32_t cls, tok_id("cls"));
    HYLO_TRY(int32_t sep, tok_id("sep"));
    post.prefix.insert(post.prefix.begin(), cls);
    post.suffix.push_back(sep);
    post.any = true;
    return {};
  }
  return c.err(where, "unsupported post_processor type '" + type +
                          "' (supported: TemplateProcessing, ByteLevel, Sequence, RobertaProcessing, BertProcessing)");
}

Status parse_bpe(const Ctx& c, const json& m, Bpe& bpe) {
  const std::string where = "model";
  if (!m.is_object()) return c.err(where, "expected an object");
  if (auto t = m.find("type"); t != m.end()) {
    if (!t->is_string() || t->get<std::string>() != "BPE")
      return c.err(where, "unsupported model type '" + (t->is_string() ? t->get<std::string>() : t->dump()) +
                              "' (supported: BPE)");
  } else if (!m.contains("merges")) {
    return c.err(where, "field 'type' missing and no 'merges' (only BPE models are supported)");
  }
  if (auto d = m.find("dropout"); d != m.end() && !d->is_null() && !(d->is_number() && d->get<double>() == 0.0))
    return c.err(where, "BPE dropout is not supported (encoding would be random)");
  auto v = m.find("vocab");
  if (v == m.end() || !v->is_object()) return c.err(where, "field 'vocab' must be an object {token: id}");
  int64_t max_id = -1;
  bpe.vocab.reserve(v->size());
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= (1ll << 30))
      return c.err(where, "vocab entry '" + it.key() + "' must have a non-negative integer id");
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    bpe.vocab[it.key()] = id;
    max_id = std::max<int64_t>(max_id, id);
  }
  // Ids index a dense table: a sparse outlier id would make one tiny file allocate gigabytes.
  if (max_id >= 2 * static_cast<int64_t>(v->size()) + 1024)
    return c.err(where, "vocab ids reach " + std::to_string(max_id) + " for only " + std::to_string(v->size()) +
                            " entries (ids must be dense)");
  bpe.id_to_token.assign(static_cast<std::size_t>(max_id + 1), std::string());
  for (const auto& [tok, id] : bpe.vocab) bpe.id_to_token[static_cast<std::size_t>(id)] = tok;
  HYLO_TRY(auto unk, opt_string(c, m, "unk_token", where));
  bpe.unk_token = unk;
  if (unk && !bpe.vocab.count(*unk)) return c.err(where, "unk_token '" + *unk + "' is not in the vocabulary");
  HYLO_TRY(auto prefix, opt_string(c, m, "continuing_subword_prefix", where));
  HYLO_TRY(auto suffix, opt_string(c, m, "end_of_word_suffix", where));
  bpe.continuing_subword_prefix = prefix.value_or("");
  bpe.end_of_word_suffix = suffix.value_or("");
  HYLO_TRY(bpe.fuse_unk, opt_bool(c, m, "fuse_unk", false, where));
  HYLO_TRY(bpe.byte_fallback, opt_bool(c, m, "byte_fallback", false, where));
  HYLO_TRY(bpe.ignore_merges, opt_bool(c, m, "ignore_merges", false, where));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto it = bpe.vocab.find(std::string_view(name)); it != bpe.vocab.end()) bpe.byte_token[b] = it->second;
  }
  auto merges = m.find("merges");
  if (merges == m.end() || merges->is_null()) return {};
  if (!merges->is_array()) return c.err(where, "field 'merges' must be an array");
  bpe.merges.reserve(merges->size());
  const std::size_t plen = bpe.continuing_subword_prefix.size();
  std::string a, b;
  for (std::size_t i = 0; i < merges->size(); ++i) {
    const json& e = (*merges)[i];
    const std::string mw = "merges[" + std::to_string(i) + "]";
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos) return c.err(where, mw + " '" + s + "' must be two tokens separated by a space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return c.err(where, mw + " must be \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b);
    if (ia == bpe.vocab.end()) return c.err(where, mw + " references unknown token '" + a + "'");
    if (ib == bpe.vocab.end()) return c.err(where, mw + " references unknown token '" + b + "'");
    const std::string merged = a + (b.size() >= plen ? b.substr(plen) : std::string());
    auto im = bpe.vocab.find(merged);
    if (im == bpe.vocab.end()) return c.err(where, mw + " makes '" + merged + "', which is not in the vocabulary");
    bpe.merges[Bpe::pair_key(ia->second, ib->second)] = Bpe::MergeInfo{static_cast<int32_t>(i), im->second};
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<TokenizerImpl>> load_tokenizer_json(const std::string& json_text, const std::string& config_text,
                                                           const std::string& what) {
  Ctx c{what};
  HYLO_TRY(json j, io::parse_json_strict(json_text, what));
  if (!j.is_object()) return make_error(what + ": expected a JSON object at the top level");
  auto impl = std::make_unique<TokenizerImpl>();
  impl->source = what;
  try {
    for (const char* k : {"truncation", "padding"})
      if (auto it = j.find(k); it != j.end() && !it->is_null())
        return c.err(k, "must be null (hylo encodes without truncation or padding)");
    auto model = j.find("model");
    if (model == j.end()) return make_error(what + ": missing field 'model'");
    HYLO_CHECK_OK(parse_bpe(c, *model, impl->model));
    if (auto n = j.find("normalizer"); n != j.end() && !n->is_null()) {
      HYLO_TRY(impl->normalizer, parse_normalizer(c, *n, "normalizer"));
    }
    if (auto p = j.find("pre_tokenizer"); p != j.end() && !p->is_null()) {
      HYLO_TRY(impl->pre_tokenizer, parse_pre_tokenizer(c, *p, "pre_tokenizer"));
    }
    if (auto p = j.find("post_processor"); p != j.end() && !p->is_null())
      HYLO_CHECK_OK(parse_post_processor(c, *p, "post_processor", impl->post));
    if (auto d = j.find("decoder"); d != j.end() && !d->is_null()) {
      HYLO_TRY(impl->decoder, parse_decoder(c, *d, "decoder"));
    }
    std::vector<AddedToken> added;
    if (auto a = j.find("added_tokens"); a != j.end() && !a->is_null()) {
      if (!a->is_array()) return c.err("added_tokens", "must be an array");
      for (std::size_t i = 0; i < a->size(); ++i) {
        const json& t = (*a)[i];
        const std::string w = "added_tokens[" + std::to_string(i) + "]";
        if (!t.is_object()) return c.err(w, "expected an object");
        AddedToken tok;
        HYLO_TRY(tok.content, req_string(c, t, "content", w));
        HYLO_TRY(tok.special, opt_bool(c, t, "special", false, w));
        HYLO_TRY(tok.lstrip, opt_bool(c, t, "lstrip", false, w));
        HYLO_TRY(tok.rstrip, opt_bool(c, t, "rstrip", false, w));
        HYLO_TRY(tok.single_word, opt_bool(c, t, "single_word", false, w));
        HYLO_TRY(tok.normalized, opt_bool(c, t, "normalized", !tok.special, w));
        added.push_back(std::move(tok));
      }
    }
    impl->add_tokens(added);
    // Template ids must exist.
    for (int32_t id : impl->post.prefix)
      if (!impl->id_to_token(id)) return c.err("post_processor", "special token id " + std::to_string(id) + " is not in the vocabulary");
    for (int32_t id : impl->post.suffix)
      if (!impl->id_to_token(id)) return c.err("post_processor", "special token id " + std::to_string(id) + " is not in the vocabulary");
    if (!impl->post.prefix.empty()) impl->bos = impl->post.prefix.front();
    if (!config_text.empty()) {
      const std::string cw = (std::filesystem::path(what).parent_path() / "tokenizer_config.json").string();
      HYLO_TRY(json cfg, io::parse_json_strict(config_text, cw));
      HYLO_CHECK_OK(impl->apply_config(cfg, cw));
    }
  } catch (const std::exception& e) {
    return make_error(what + ": malformed tokenizer file: " + e.what());
  }
  impl->finish_special_ids();
  return impl;
}

}  // namespace hylo::tok
