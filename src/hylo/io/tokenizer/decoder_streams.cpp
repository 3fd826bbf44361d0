// Streaming forms of the decoders (decoder_streams.h). Each holds back only what a later token can still change:
// ByteLevel the bytes of an unfinished character (at most 3), ByteFallback a run of byte tokens that is still valid
// UTF-8 (tokenizers renders a whole run as U+FFFD per byte once any byte of it is ill-formed, so a valid run's text
// is not final until the run ends; an ill-formed run's bytes are final at once), Strip the copies of its content
// that may turn out to be at the end, a literal Replace/Metaspace a tail that may begin a match.
#include "hylo/io/tokenizer/decoder_streams.h"

#include <algorithm>
#include <optional>
#include <utility>

namespace hylo::tok {
namespace {

const char kFffd[] = "\xEF\xBF\xBD";

// A stage that works on whole tokens. Parts of a fused token are collected and handed to token() as one whole
// token when the stream ends (exact for any stage; stages that can do better override part()).
class TokenStage : public DecoderStream {
 public:
  void push(StreamPiece piece, std::vector<StreamPiece>& out) override {
    if (piece.whole) token(std::move(piece.text), out);
    else part(piece.text, out);
  }
  void finish(std::vector<StreamPiece>& out) override {
    if (fused_) {
      fused_ = false;
      std::string t;
      t.swap(fused_text_);
      token(std::move(t), out);
    }
    end(out);
  }
  std::size_t held_bytes() const override { return fused_text_.size() + held(); }

 protected:
  virtual void token(std::string t, std::vector<StreamPiece>& out) = 0;
  virtual void part(std::string_view text, std::vector<StreamPiece>&) {
    fused_ = true;
    fused_text_ += text;
  }
  virtual void end(std::vector<StreamPiece>&) {}
  virtual std::size_t held() const { return 0; }

 private:
  bool fused_ = false;
  std::string fused_text_;
};

// Leftmost, non-overlapping replacement of a literal (what find_matches does for a string pattern) in text that
// arrives in parts: a tail shorter than the literal that begins it is held until the next part decides it.
class LiteralReplacer {
 public:
  LiteralReplacer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::string push(std::string_view text) {
    tail_ += text;
    std::string out;
    std::size_t i = 0;
    while (i < tail_.size()) {
      const std::size_t left = tail_.size() - i;
      if (left >= from_.size()) {
        if (tail_.compare(i, from_.size(), from_) == 0) {
          out += to_;
          i += from_.size();
          continue;
        }
      } else if (from_.compare(0, left, tail_, i, left) == 0) {
        break;  // may still become a match
      }
      out += tail_[i++];
    }
    tail_.erase(0, i);
    return out;
  }
  std::string finish() { return std::exchange(tail_, {}); }  // a tail that never became a match stays as it is
  std::size_t held() const { return tail_.size(); }

 private:
  std::string from_, to_, tail_;
};

class ByteLevelStream final : public TokenStage {
  void token(std::string t, std::vector<StreamPiece>& out) override {
    append_byte_level_bytes(t, pending_);
    const std::size_t keep = utf8_incomplete_tail(pending_);
    if (pending_.size() == keep) return;
    out.push_back({utf8_lossy(std::string_view(pending_).substr(0, pending_.size() - keep)), false});
    pending_.erase(0, pending_.size() - keep);
  }
  void end(std::vector<StreamPiece>& out) override {
    if (!pending_.empty()) out.push_back({utf8_lossy(pending_), false});  // an unfinished character: one U+FFFD
    pending_.clear();
  }
  std::size_t held() const override { return pending_.size(); }
  std::string pending_;  // bytes of an unfinished character (utf8_incomplete_tail), starting at a character start
};

class ByteFallbackStream final : public TokenStage {
  void token(std::string t, std::vector<StreamPiece>& out) override {
    const int b = byte_fallback_value(t);
    if (b < 0) {
      end_run(out);
      out.push_back({std::move(t), true});
      return;
    }
    ++run_length_;
    if (valid_.failed()) {
      out.push_back({kFffd, true});  // the run is ill-formed whatever follows: one U+FFFD per byte
      return;
    }
    run_.push_back(static_cast<char>(b));
    valid_.feed(static_cast<unsigned char>(b));
    if (!valid_.failed()) return;  // valid so far: a later byte of the run may still make all of it U+FFFD
    for (std::size_t k = 0; k < run_length_; ++k) out.push_back({kFffd, true});
    run_.clear();
  }
  void end(std::vector<StreamPiece>& out) override { end_run(out); }
  std::size_t held() const override { return run_.size(); }

  void end_run(std::vector<StreamPiece>& out) {
    if (run_length_ > 0 && !valid_.failed()) {
      if (valid_.complete()) out.push_back({std::move(run_), true});
      else
        for (std::size_t k = 0; k < run_length_; ++k) out.push_back({kFffd, true});
    }
    run_.clear();
    run_length_ = 0;
    valid_ = Utf8Validator{};
  }
  std::string run_;             // bytes of the current run while it is valid
  std::size_t run_length_ = 0;  // byte tokens in the current run
  Utf8Validator valid_;
};

class FuseStream final : public DecoderStream {
 public:
  void push(StreamPiece piece, std::vector<StreamPiece>& out) override {
    if (!piece.text.empty()) out.push_back({std::move(piece.text), false});
  }
  void finish(std::vector<StreamPiece>&) override {}
  std::size_t held_bytes() const override { return 0; }
};

class ReplaceStream final : public TokenStage {
 public:
  ReplaceStream(const Normalizer& replace, const Pattern& pattern, const std::string& content) : replace_(replace) {
    if (pattern.kind == Pattern::Kind::kString && !pattern.literal.empty()) literal_.emplace(pattern.literal, content);
  }

 private:
  void token(std::string t, std::vector<StreamPiece>& out) override {
    replace_.normalize(t);
    out.push_back({std::move(t), true});
  }
  void part(std::string_view text, std::vector<StreamPiece>& out) override {
    if (!literal_) return TokenStage::part(text, out);  // a regex or character class waits for the whole token
    if (std::string r = literal_->push(text); !r.empty()) out.push_back({std::move(r), false});
  }
  void end(std::vector<StreamPiece>& out) override {
    if (!literal_) return;
    if (std::string r = literal_->finish(); !r.empty()) out.push_back({std::move(r), false});
  }
  std::size_t held() const override { return literal_ ? literal_->held() : 0; }
  const Normalizer& replace_;
  std::optional<LiteralReplacer> literal_;
};

class MetaspaceStream final : public TokenStage {
 public:
  MetaspaceStream(std::string rep, PrependScheme scheme) : rep_(rep), scheme_(scheme), replacer_(std::move(rep), " ") {}

 private:
  void token(std::string t, std::vector<StreamPiece>& out) override {
    out.push_back({metaspace_token(t, rep_, tokens_++ == 0, scheme_), true});
  }
  void part(std::string_view text, std::vector<StreamPiece>& out) override {
    if (!fused_) {
      fused_ = true;
      fused_first_ = tokens_++ == 0;
    }
    emit(replacer_.push(text), out);
  }
  void end(std::vector<StreamPiece>& out) override { emit(replacer_.finish(), out); }
  void emit(std::string text, std::vector<StreamPiece>& out) {
    if (text.empty()) return;
    // The first token's leading space goes (metaspace_token); the fused token's first text decides it.
    if (fused_first_ && scheme_ != PrependScheme::kNever && text[0] == ' ') text.erase(0, 1);
    fused_first_ = false;
    if (!text.empty()) out.push_back({std::move(text), false});
  }
  std::size_t held() const override { return replacer_.held(); }
  std::string rep_;
  PrependScheme scheme_;
  LiteralReplacer replacer_;
  std::size_t tokens_ = 0;
  bool fused_ = false, fused_first_ = false;
};

class StripStream final : public TokenStage {
 public:
  StripStream(std::string content, std::size_t start, std::size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop), start_left_(start) {}

 private:
  void token(std::string t, std::vector<StreamPiece>& out) override {
    out.push_back({strip_token(t, content_, start_, stop_), true});
  }
  void part(std::string_view text, std::vector<StreamPiece>& out) override {
    if (content_.empty()) {  // strips nothing
      if (!text.empty()) out.push_back({std::string(text), false});
      return;
    }
    if (!started_) {
      // The fused token's front: up to start_ copies of content go; a front that may still be a copy waits.
      head_ += text;
      std::size_t b = 0;
      while (start_left_ > 0 && head_.compare(b, content_.size(), content_) == 0) {
        b += content_.size();
        --start_left_;
      }
      head_.erase(0, b);
      if (start_left_ > 0 && head_.size() < content_.size() && content_.compare(0, head_.size(), head_) == 0) return;
      started_ = true;
      text = head_;
      append_tail(text, out);
      head_.clear();
      return;
    }
    append_tail(text, out);
  }
  // Text after the front: what may still be stripped from the token's end is held, that is the last stop_ whole
  // copies of content before the end and a part of a copy at the very end.
  void append_tail(std::string_view text, std::vector<StreamPiece>& out) {
    tail_ += text;
    const std::size_t n = content_.size();
    std::size_t e = tail_.size(), partial = 0;
    for (std::size_t k = std::min(n - 1, e); k > 0; --k)
      if (tail_.compare(e - k, k, content_, 0, k) == 0) {
        partial = k;
        break;
      }
    e -= partial;
    for (std::size_t k = 0; k < stop_ && e >= n && tail_.compare(e - n, n, content_) == 0; ++k) e -= n;
    if (e == 0) return;
    out.push_back({tail_.substr(0, e), false});
    tail_.erase(0, e);
  }
  void end(std::vector<StreamPiece>& out) override {
    tail_ = head_ + tail_;  // a front that never became a copy is text (strip_token compares whole copies only)
    head_.clear();
    if (std::string t = strip_token(tail_, content_, 0, stop_); !t.empty()) out.push_back({std::move(t), false});
    tail_.clear();
  }
  std::size_t held() const override { return head_.size() + tail_.size(); }
  std::string content_;
  std::size_t start_, stop_, start_left_;
  bool started_ = false;
  std::string head_, tail_;
};

class SequenceStream final : public DecoderStream {
 public:
  explicit SequenceStream(std::vector<std::unique_ptr<DecoderStream>> parts) : parts_(std::move(parts)) {}
  void push(StreamPiece piece, std::vector<StreamPiece>& out) override {
    std::vector<StreamPiece> cur, next;
    cur.push_back(std::move(piece));
    for (auto& p : parts_) {
      next.clear();
      for (auto& q : cur) p->push(std::move(q), next);
      cur.swap(next);
    }
    for (auto& q : cur) out.push_back(std::move(q));
  }
  void finish(std::vector<StreamPiece>& out) override {
    // Each stage ends after what the stages before it release at their end has gone through it.
    std::vector<StreamPiece> cur, next;
    for (auto& p : parts_) {
      next.clear();
      for (auto& q : cur) p->push(std::move(q), next);
      p->finish(next);
      cur.swap(next);
    }
    for (auto& q : cur) out.push_back(std::move(q));
  }
  std::size_t held_bytes() const override {
    std::size_t n = 0;
    for (auto& p : parts_) n += p->held_bytes();
    return n;
  }

 private:
  std::vector<std::unique_ptr<DecoderStream>> parts_;
};

class JoinStream final : public TokenStage {
  void token(std::string t, std::vector<StreamPiece>& out) override {
    out.push_back({tokens_++ == 0 ? std::move(t) : " " + t, true});
  }
  std::size_t tokens_ = 0;
};

}  // namespace

std::unique_ptr<DecoderStream> make_byte_level_stream() { return std::make_unique<ByteLevelStream>(); }
std::unique_ptr<DecoderStream> make_byte_fallback_stream() { return std::make_unique<ByteFallbackStream>(); }
std::unique_ptr<DecoderStream> make_fuse_stream() { return std::make_unique<FuseStream>(); }
std::unique_ptr<DecoderStream> make_replace_stream(const Normalizer& replace, const Pattern& pattern,
                                                   const std::string& content) {
  return std::make_unique<ReplaceStream>(replace, pattern, content);
}
std::unique_ptr<DecoderStream> make_metaspace_stream(std::string rep, PrependScheme scheme) {
  return std::make_unique<MetaspaceStream>(std::move(rep), scheme);
}
std::unique_ptr<DecoderStream> make_strip_stream(std::string content, std::size_t start, std::size_t stop) {
  return std::make_unique<StripStream>(std::move(content), start, stop);
}
std::unique_ptr<DecoderStream> make_sequence_stream(std::vector<std::unique_ptr<DecoderStream>> parts) {
  return std::make_unique<SequenceStream>(std::move(parts));
}
std::unique_ptr<DecoderStream> make_join_stream() { return std::make_unique<JoinStream>(); }

}  // namespace hylo::tok
