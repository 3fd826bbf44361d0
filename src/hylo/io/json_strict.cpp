#include "hylo/io/json_strict.h"

#include <set>
#include <vector>

namespace hylo::io {

namespace {
using json = nlohmann::json;

// First pass: a SAX walk (nlohmann's SAX driver is iterative, so any nesting is safe here) that finds syntax
// errors, duplicate keys and excessive depth before any DOM is built.
class CheckingSax : public nlohmann::json_sax<json> {
 public:
  explicit CheckingSax(int max_depth) : max_depth_(max_depth) {}
  std::string problem;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return enter();
  }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) return fail("duplicate key \"" + k + "\"");
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    return fail(ex.what());
  }

 private:
  bool enter() {
    if (++depth_ > max_depth_) return fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
    return true;
  }
  bool fail(std::string message) {
    if (problem.empty()) problem = std::move(message);
    return false;  // stops the walk
  }
  int max_depth_;
  int depth_ = 0;
  std::vector<std::set<std::string>> keys_;  // keys seen in each currently open object
};
}  // namespace

Result<json> parse_json_strict(std::string_view text, const std::string& what, int max_depth) {
  try {
    CheckingSax sax(max_depth);
    bool ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json, /*strict=*/true);
    if (!ok || !sax.problem.empty())
      return make_error(what + ": invalid JSON: " +
                        (sax.problem.empty() ? std::string("syntax error") : sax.problem));
    json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return make_error(what + ": invalid JSON");
    return j;
  } catch (const std::exception& e) {  // nlohmann reports some limits by exception even in non-throwing mode
    return make_error(what + ": invalid JSON: " + e.what());
  }
}

}  // namespace hylo::io
