// Errors as values. A Status is ok or carries an errno-style code and a message that says what
// failed, on what, and what to do. Result<T> is a T or a Status. Exceptions never cross a
// component boundary.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "common/check.h"

namespace repld {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(int errno_value, std::string message) {
    return Status(errno_value == 0 ? -1 : errno_value, std::move(message));
  }
  // An error that is not a system call failure (bad config, protocol violation, ...).
  static Status Invalid(std::string message) { return Status(-1, std::move(message)); }

  bool ok() const { return code_ == 0; }
  // errno value, or -1 for errors that have none.
  int code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    REPLD_CHECK(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    REPLD_CHECK(!ok());
    return std::get<Status>(v_);
  }
  T& value() & {
    REPLD_CHECK(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    REPLD_CHECK(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    REPLD_CHECK(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

// errno as text, for messages.
std::string ErrnoText(int errno_value);

}  // namespace repld
