// Bounds-checked building and parsing of wire payloads: packed structs followed by
// trailing arrays and strings (ipc/wire.h). A reader never reads past its span; every
// short or over-long payload is a kProtocol error naming what was being read.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "base/status.h"

namespace pf::wire {

class PayloadWriter {
 public:
  template <typename T>
  PayloadWriter& put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return *this;
  }
  template <typename T>
  PayloadWriter& put_array(std::span<const T> values) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const std::byte*>(values.data());
    bytes_.insert(bytes_.end(), p, p + values.size_bytes());
    return *this;
  }
  PayloadWriter& put_text(std::string_view text) {
    const auto* p = reinterpret_cast<const std::byte*>(text.data());
    bytes_.insert(bytes_.end(), p, p + text.size());
    return *this;
  }
  std::size_t size() const { return bytes_.size(); }
  std::span<const std::byte> bytes() const { return bytes_; }
  std::vector<std::byte> take() { return std::move(bytes_); }

 private:
  std::vector<std::byte> bytes_;
};

class PayloadReader {
 public:
  explicit PayloadReader(std::span<const std::byte> bytes) : bytes_(bytes) {}

  template <typename T>
  Status read(T* out, const char* what) {
    static_assert(std::is_trivially_copyable_v<T>);
    PF_TRY(need(sizeof(T), what));
    std::memcpy(out, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return Status::ok();
  }
  template <typename T>
  Status read_array(std::size_t n, std::vector<T>* out, const char* what) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (n > bytes_.size() / sizeof(T)) return too_short(what);
    PF_TRY(need(n * sizeof(T), what));
    out->resize(n);
    if (n != 0) std::memcpy(out->data(), bytes_.data() + at_, n * sizeof(T));
    at_ += n * sizeof(T);
    return Status::ok();
  }
  Status read_text(std::size_t n, std::string* out, const char* what) {
    PF_TRY(need(n, what));
    out->assign(reinterpret_cast<const char*>(bytes_.data() + at_), n);
    at_ += n;
    return Status::ok();
  }
  // Everything was consumed: trailing garbage is a protocol error.
  Status finish(const char* what) const {
    if (at_ != bytes_.size()) {
      return PF_ERROR(Code::kProtocol, std::string(what) + ": " +
                                           std::to_string(bytes_.size() - at_) +
                                           " unexpected trailing bytes");
    }
    return Status::ok();
  }
  std::size_t remaining() const { return bytes_.size() - at_; }

 private:
  Status need(std::size_t n, const char* what) const {
    if (n > bytes_.size() - at_) return too_short(what);
    return Status::ok();
  }
  Status too_short(const char* what) const {
    return PF_ERROR(Code::kProtocol, std::string("payload too short reading ") + what);
  }

  std::span<const std::byte> bytes_;
  std::size_t at_ = 0;
};

}  // namespace pf::wire
