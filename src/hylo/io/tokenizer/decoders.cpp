// Decoders (tokenizers' decode_chain semantics) and the added-token matcher (see components.h); the decoders'
// streaming forms are in decoder_streams.cpp.
#include <algorithm>

#include "hylo/io/tokenizer/components.h"
#include "hylo/io/tokenizer/decoder_streams.h"

namespace hylo::tok {

// ---- per-token steps (decoder_streams.h) ----------------------------------------------------------------------
int byte_fallback_value(std::string_view t) {
  auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hexval(t[3]) >= 0 && hexval(t[4]) >= 0)
    return hexval(t[3]) * 16 + hexval(t[4]);
  return -1;
}

void append_byte_level_bytes(std::string_view t, std::string& bytes) {
  const auto& map = byte_level_map();
  const std::size_t mark = bytes.size();
  for (std::size_t i = 0; i < t.size();) {
    const int b = map.byte_of(utf8_next(t, i));
    if (b < 0) {
      bytes.resize(mark);
      bytes += t;
      return;
    }
    bytes.push_back(static_cast<char>(b));
  }
}

std::string metaspace_token(std::string_view t, std::string_view rep, bool first, PrependScheme scheme) {
  std::string out;
  for (std::size_t p = 0; p < t.size();) {
    if (t.compare(p, rep.size(), rep) == 0) {
      out += ' ';
      p += rep.size();
    } else {
      out += t[p++];
    }
  }
  if (first && scheme != PrependScheme::kNever && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

std::string strip_token(std::string_view t, std::string_view content, std::size_t start, std::size_t stop) {
  std::size_t b = 0, e = t.size();
  for (std::size_t k = 0; k < start && t.compare(b, content.size(), content) == 0 && b < e; ++k) b += content.size();
  for (std::size_t k = 0; k < stop && e >= b + content.size() && t.compare(e - content.size(), content.size(), content) == 0; ++k)
    e -= content.size();
  return std::string(t.substr(b, e - b));
}

namespace {

struct ByteLevelDecoder final : Decoder {
  // Each token whose characters are all in the byte-level alphabet becomes those bytes, any other token its
  // own UTF-8; the concatenation is decoded lossily into one string.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) append_byte_level_bytes(t, bytes);
    tokens.assign(1, utf8_lossy(bytes));
  }
  std::unique_ptr<DecoderStream> stream() const override { return make_byte_level_stream(); }
};

struct MetaspaceDecoder final : Decoder {
  std::string rep;
  PrependScheme scheme;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = metaspace_token(tokens[i], rep, i == 0, scheme);
  }
  std::unique_ptr<DecoderStream> stream() const override { return make_metaspace_stream(rep, scheme); }
};

struct ReplaceDecoder final : Decoder {
  std::unique_ptr<Normalizer> replace;
  Pattern pattern;  // what `replace` was made from, for the stream
  std::string content;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) replace->normalize(t);
  }
  std::unique_ptr<DecoderStream> stream() const override { return make_replace_stream(*replace, pattern, content); }
};

struct ByteFallbackDecoder final : Decoder {
  // A run of <0xNN> tokens becomes its bytes if they are valid UTF-8, else one U+FFFD per byte.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_valid(pending)) out.push_back(pending);
      else
        for (std::size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& t : tokens) {
      if (const int b = byte_fallback_value(t); b >= 0) {
        pending.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
  std::unique_ptr<DecoderStream> stream() const override { return make_byte_fallback_stream(); }
};

struct FuseDecoder final : Decoder {
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
  std::unique_ptr<DecoderStream> stream() const override { return make_fuse_stream(); }
};

struct StripDecoder final : Decoder {
  std::string content;  // one character
  std::size_t start, stop;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = strip_token(t, content, start, stop);
  }
  std::unique_ptr<DecoderStream> stream() const override { return make_strip_stream(content, start, stop); }
};

struct SequenceDecoder final : Decoder {
  std::vector<std::unique_ptr<Decoder>> parts;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& p : parts) p->decode_chain(tokens);
  }
  std::unique_ptr<DecoderStream> stream() const override {
    std::vector<std::unique_ptr<DecoderStream>> streams;
    for (auto& p : parts) streams.push_back(p->stream());
    return make_sequence_stream(std::move(streams));
  }
};

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevelDecoder>(); }
std::unique_ptr<Decoder> make_metaspace_decoder(uint32_t replacement, PrependScheme scheme) {
  auto d = std::make_unique<MetaspaceDecoder>();
  utf8_append(d->rep, replacement);
  d->scheme = scheme;
  return d;
}
std::unique_ptr<Decoder> make_replace_decoder(Pattern pattern, std::string content) {
  auto d = std::make_unique<ReplaceDecoder>();
  d->pattern = pattern;
  d->content = content;
  d->replace = make_replace_normalizer(std::move(pattern), std::move(content));
  return d;
}
std::unique_ptr<Decoder> make_byte_fallback_decoder() { return std::make_unique<ByteFallbackDecoder>(); }
std::unique_ptr<Decoder> make_fuse_decoder() { return std::make_unique<FuseDecoder>(); }
std::unique_ptr<Decoder> make_strip_decoder(std::string content, std::size_t start, std::size_t stop) {
  auto d = std::make_unique<StripDecoder>();
  d->content = std::move(content);
  d->start = start;
  d->stop = stop;
  return d;
}
std::unique_ptr<Decoder> make_sequence_decoder(std::vector<std::unique_ptr<Decoder>> parts) {
  auto d = std::make_unique<SequenceDecoder>();
  d->parts = std::move(parts);
  return d;
}

// ---- TokenMatcher --------------------------------------------------------------------------------------------
void TokenMatcher::build(const std::vector<std::pair<std::string, int>>& patterns) {
  nodes_.assign(1, Node{});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (const auto& [pat, payload] : patterns) {
    if (pat.empty()) continue;
    first_byte_[static_cast<unsigned char>(pat[0])] = true;
    int node = 0;
    for (unsigned char c : pat) {
      int next = -1;
      for (auto& [k, v] : nodes_[node].next)
        if (k == c) next = v;
      if (next < 0) {
        next = static_cast<int>(nodes_.size());
        nodes_[node].next.emplace_back(c, next);
        nodes_.push_back(Node{});
      }
      node = next;
    }
    if (nodes_[node].payload < 0) nodes_[node].payload = payload;  // the first of duplicate patterns wins
  }
}

int TokenMatcher::find(std::string_view text, std::size_t from, std::size_t& start, std::size_t& end) const {
  for (std::size_t i = from; i < text.size(); ++i) {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
    int node = 0, best = -1;
    std::size_t best_end = 0;
    for (std::size_t j = i; j < text.size(); ++j) {
      int next = -1;
      for (auto& [k, v] : nodes_[node].next)
        if (k == static_cast<unsigned char>(text[j])) next = v;
      if (next < 0) break;
      node = next;
      if (nodes_[node].payload >= 0) {
        best = nodes_[node].payload;
        best_end = j + 1;
      }
    }
    if (best >= 0) {
      start = i;
      end = best_end;
      return best;
    }
  }
  return -1;
}

}  // namespace hylo::tok
