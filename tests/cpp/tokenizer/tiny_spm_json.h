// A tiny Llama-2-style tokenizer.json shared by the tokenizer tests: Prepend/Replace normalizer, byte fallback, the
// Replace/ByteFallback/Fuse/Strip decoder chain, pieces ▁ a b ▁a and byte tokens (ids 0..11), <s> added as id 12.
#pragma once

namespace hylo::tok {

inline constexpr const char* kTinySpmJson = R"({
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                 {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": null,
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "added_tokens": [{"id": 12, "content": "<s>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
            "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "\u2581a": 4, "<0xE2>": 5, "<0x82>": 6, "<0xAC>": 7,
                      "<0xFF>": 8, "<0xEF>": 9, "<0xBF>": 10, "<0xBD>": 11},
            "merges": ["\u2581 a"]}
})";

}  // namespace hylo::tok
