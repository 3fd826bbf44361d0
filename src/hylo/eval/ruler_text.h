// Fixed text material for the RULER-style task generators (ruler.h): the noise haystack sentence, an essay-like
// haystack paragraph, and word lists for needle keys and the common-words task. RULER itself draws keys from the
// `wonderwords` package lists and the essay haystack from downloaded Paul Graham essays; hylo needs no outside
// data, so these lists and the paragraph were written for hylo (plain common English words; the paragraph is
// original prose). Users who want a different haystack pass a text file instead.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hylo::eval::ruler {

// RULER's noise haystack: one line repeated, needles inserted between lines.
inline constexpr std::string_view kNoiseSentence =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

std::string_view essay_text();                     // a few hundred words of essay-like prose, repeated as needed
std::span<const std::string_view> adjectives();    // distinct, lowercase
std::span<const std::string_view> nouns();         // distinct, lowercase, disjoint from adjectives()

// The whitespace-separated words of `text` (haystack words for RULER, cloze items for eval/harness).
std::vector<std::string> split_words(std::string_view text);

}  // namespace hylo::eval::ruler
