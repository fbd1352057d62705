// pf::Status — the error type of every layer inside ProcessFork.
//
// Contract:
//  - Every fallible function returns a [[nodiscard]] Status (or Result<T>); nothing throws
//    across a layer boundary and nothing aborts the process on a recoverable error.
//  - An ok Status carries no allocation; an error carries a code, a human message and a
//    trail of file:line entries appended as it propagates (PF_TRY / PF_ASSIGN_OR_RETURN).
//  - Codes are stable: the C ABI (shims/) maps them one to one onto `enum pf_result`.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pf {

enum class Code : int {
  kOk = 0,
  kInvalidArgument = 1,   // the caller passed something malformed or out of range
  kNotFound = 2,          // unknown id, CID, ref, backend or symbol
  kAlreadyExists = 3,     // creating something that is already there
  kOutOfMemory = 4,       // physical memory, pages or VA space exhausted
  kUnavailable = 5,       // the backend or device is not present on this machine
  kUnsupported = 6,       // present, but lacks a required capability
  kSystem = 7,            // an OS call failed (errno in the message)
  kProtocol = 8,          // a peer violated the wire protocol
  kPermissionDenied = 9,  // wrong uid, token or access mode
  kConflict = 10,         // state held by someone else (e.g. another lease)
  kDriver = 11,           // the CUDA driver returned an error
  kInternal = 12,         // an invariant broke: a bug in ProcessFork
  kDataCorrupt = 13,      // stored data failed its integrity check (a quarantined page)
  kStale = 14,            // a handle of an earlier daemon boot epoch (client side only)
};
// The highest code.
inline constexpr Code kLastCode = Code::kStale;
// The highest code a daemon answers with; a peer's code above it is a protocol error
// (kStale is the client library's own: it never crosses the socket).
inline constexpr Code kLastWireCode = Code::kDataCorrupt;

std::string_view code_name(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(Code code, std::string message);

  static Status ok() { return Status(); }

  bool is_ok() const { return payload_ == nullptr; }
  explicit operator bool() const { return is_ok(); }
  Code code() const { return payload_ ? payload_->code : Code::kOk; }
  const std::string& message() const;
  // "file:line <- file:line ..." from the innermost frame outwards; empty when ok.
  const std::string& trail() const;

  // Appends a frame to the trail; a no-op on an ok status.
  Status& add_frame(const char* file, int line);
  // "CODE: message [at trail]".
  std::string to_string() const;

  // Marks a status as intentionally ignored (cleanup paths whose failure has no remedy).
  void ignore() const {}

 private:
  struct Payload {
    Code code;
    std::string message;
    std::string trail;
  };
  std::shared_ptr<Payload> payload_;
};

// Result<T>: a value or an error Status. Never holds an ok Status without a value.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status)                          // NOLINT: implicit by design
      : status_(status.is_ok() ? Status(Code::kInternal, "Result built from an ok Status")
                               : std::move(status)) {}
  bool is_ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  Status take_status() { return std::move(status_); }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

// errno-based helper: "what: strerror(errno)" with code kSystem (kOutOfMemory for ENOMEM).
Status errno_status(std::string_view what, int err);

namespace detail {
inline Status&& with_frame(Status&& s, const char* file, int line) {
  s.add_frame(file, line);
  return std::move(s);
}
}  // namespace detail

}  // namespace pf

#define PF_CONCAT_INNER(a, b) a##b
#define PF_CONCAT(a, b) PF_CONCAT_INNER(a, b)

// Evaluates a Status expression; on error returns it with this file:line added.
#define PF_TRY(expr)                                                                  \
  do {                                                                                \
    ::pf::Status pf_try_status_ = (expr);                                             \
    if (!pf_try_status_.is_ok()) {                                                    \
      return ::pf::detail::with_frame(std::move(pf_try_status_), __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)

// `PF_ASSIGN_OR_RETURN(auto x, f())`: unwraps a Result<T> or returns its error.
#define PF_ASSIGN_OR_RETURN(lhs, expr) \
  PF_ASSIGN_OR_RETURN_IMPL(PF_CONCAT(pf_result_, __LINE__), lhs, expr)
#define PF_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)                            \
  auto tmp = (expr);                                                        \
  if (!tmp.is_ok()) {                                                       \
    return ::pf::detail::with_frame(tmp.take_status(), __FILE__, __LINE__); \
  }                                                                         \
  lhs = std::move(tmp).value()

// An errno-based error (see errno_status) with the current file:line; PF_ERRNO_OF takes a
// saved errno value.
#define PF_ERRNO_OF(what, err) \
  ::pf::detail::with_frame(::pf::errno_status((what), (err)), __FILE__, __LINE__)
#define PF_ERRNO(what) PF_ERRNO_OF((what), errno)

// Builds an error Status with the current file:line as the first trail frame.
#define PF_ERROR(code, msg) \
  ::pf::detail::with_frame(::pf::Status((code), (msg)), __FILE__, __LINE__)
