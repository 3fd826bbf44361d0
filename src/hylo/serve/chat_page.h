// The built-in chat page served at `/`: one self-contained HTML document (no external assets) that streams
// answers from /v1/chat/completions and shows the model's info and how much of its context is used.
#pragma once

#include <string_view>

namespace hylo::serve {

std::string_view chat_page_html();

}  // namespace hylo::serve
