// The streaming forms of the decoders of decoders.cpp (components.h's DecoderStream), and the per-token steps that
// both forms share, so that the two cannot drift apart.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hylo/io/tokenizer/components.h"

namespace hylo::tok {

// ---- steps shared by decode_chain and the streams -------------------------------------------------------------
// The byte of a byte-fallback token "<0xNN>", or -1 for any other token.
int byte_fallback_value(std::string_view token);
// Appends the bytes of a byte-level token: its characters mapped back through the GPT-2 byte map when all of them
// are in it, else the token's own UTF-8.
void append_byte_level_bytes(std::string_view token, std::string& bytes);
// Metaspace on one token: each `rep` becomes a space; the first token (unless `scheme` is kNever) loses a leading one.
std::string metaspace_token(std::string_view token, std::string_view rep, bool first, PrependScheme scheme);
// Strip on one token: up to `start` copies of `content` off its front, then up to `stop` off its back.
std::string strip_token(std::string_view token, std::string_view content, std::size_t start, std::size_t stop);

// ---- streams ---------------------------------------------------------------------------------------------------
std::unique_ptr<DecoderStream> make_byte_level_stream();
std::unique_ptr<DecoderStream> make_byte_fallback_stream();
std::unique_ptr<DecoderStream> make_fuse_stream();
// `replace` is the decoder's own normalizer (used on whole tokens); a literal `pattern` is also streamed within
// the fused token, any other pattern waits for that token to end.
std::unique_ptr<DecoderStream> make_replace_stream(const Normalizer& replace, const Pattern& pattern,
                                                   const std::string& content);
std::unique_ptr<DecoderStream> make_metaspace_stream(std::string rep, PrependScheme scheme);
std::unique_ptr<DecoderStream> make_strip_stream(std::string content, std::size_t start, std::size_t stop);
std::unique_ptr<DecoderStream> make_sequence_stream(std::vector<std::unique_ptr<DecoderStream>> parts);

}  // namespace hylo::tok
