// Result<T>: the return type of fallible operations (I/O, parsing, validation). An error carries one
// human-readable message that names the file, the field and what was expected (DESIGN.md section 6).
// Code above the I/O layer may turn an error into an exception with value_or_throw(); the CLI catches
// hylo::Error and prints it with a non-zero exit.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace hylo {

// Exception form of an error, thrown by value_or_throw() and by code that cannot return a Result.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

struct ErrorInfo {
  std::string message;
};

inline ErrorInfo make_error(std::string message) { return ErrorInfo{std::move(message)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT(google-explicit-constructor)
  Result(ErrorInfo error) : v_(std::move(error)) {}    // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const std::string& error() const { return std::get<1>(v_).message; }
  ErrorInfo error_info() const { return std::get<1>(v_); }

  T value_or_throw() && {
    if (!ok()) throw Error(error());
    return std::get<0>(std::move(v_));
  }

 private:
  std::variant<T, ErrorInfo> v_;
};

// Result<void>: success or an error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(ErrorInfo error) : error_(std::move(error.message)), failed_(true) {}  // NOLINT
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const std::string& error() const { return error_; }
  ErrorInfo error_info() const { return ErrorInfo{error_}; }
  void value_or_throw() const {
    if (failed_) throw Error(error_);
  }

 private:
  std::string error_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace hylo

// Propagates an error from an expression returning Result<...>: HYLO_TRY(auto x, parse(...));
#define HYLO_CONCAT_INNER(a, b) a##b
#define HYLO_CONCAT(a, b) HYLO_CONCAT_INNER(a, b)
#define HYLO_TRY_IMPL(tmp, decl, expr)        \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.error_info();     \
  decl = std::move(tmp).value()
#define HYLO_TRY(decl, expr) HYLO_TRY_IMPL(HYLO_CONCAT(hylo_try_, __LINE__), decl, expr)
// For Result<void> expressions.
#define HYLO_CHECK_OK(expr)                                        \
  do {                                                             \
    auto hylo_status_ = (expr);                                    \
    if (!hylo_status_.ok()) return hylo_status_.error_info();      \
  } while (0)
