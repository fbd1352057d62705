// The codec of the Unix-socket messages (ipc/messages.h): one description per message, three
// walkers over it.
//
// DESIGN
//  - A message describes its bytes once, as `template <class IO> Status io(IO& io)`, a list
//    of fields in wire order. The same function encodes (Sizer, then Writer) and decodes
//    (Reader), so an encode/decode pair can never disagree.
//  - Field kinds:
//      fixed(v)                      a packed, static_assert-sized struct or an integer
//      array(count, v, limit, what)  a trailing array whose count is a field of a fixed
//                                    head written earlier (the fast-path layouts of wire.h)
//      text(bytes, s, limit, what)   the same for text
//      list(v, limit, what)          a uint32 count, then the elements (integers in bulk,
//                                    structs through their own io())
//      str(s, limit, what)           a uint32 length, then the bytes
//      tail(v, what)                 an optional packed struct that ends the message: written
//                                    only when set; read when bytes are left (a field a
//                                    later protocol minor appended to a request, so that an
//                                    older peer's message, which ends before it, still
//                                    decodes; docs/protocol.md "Optional tail fields")
//  - Encoding is two passes: the Sizer stores every array's size into its count field
//    (so a caller never sets counts by hand), then the Writer appends bytes. Heads are
//    therefore encoded from a non-const message.
//  - Decoding never reads past the payload (PayloadReader) and checks every count against
//    its limit before allocating: a count over its limit is kInvalidArgument naming the
//    field (the request is well framed but asks too much), a payload too short or too long
//    for its counts is kProtocol.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "base/status.h"
#include "ipc/payload.h"

namespace pf::wire {

namespace detail {
Status over_limit(std::size_t n, std::size_t limit, const char* what);
Status too_short(const char* what);
}  // namespace detail

template <typename T>
concept Bulk = std::is_trivially_copyable_v<T>;

// Bytes of one string inside a list (a CID, a name).
inline constexpr std::size_t kMaxListString = 4096;

// Pass 1 of encoding: makes every count field match its array.
class Sizer {
 public:
  template <Bulk T>
  Status fixed(T&) {
    return Status::ok();
  }
  template <typename T>
  Status array(std::uint32_t& count, std::vector<T>& v, std::size_t, const char*) {
    count = static_cast<std::uint32_t>(v.size());
    return Status::ok();
  }
  Status text(std::uint32_t& bytes, std::string& s, std::size_t, const char*) {
    bytes = static_cast<std::uint32_t>(s.size());
    return Status::ok();
  }
  template <typename T>
  Status list(std::vector<T>& v, std::size_t, const char*) {
    if constexpr (!Bulk<T> && !std::is_same_v<T, std::string>) {
      for (T& e : v) PF_TRY(e.io(*this));
    }
    return Status::ok();
  }
  Status str(std::string&, std::size_t, const char*) { return Status::ok(); }
  template <Bulk T>
  Status tail(std::optional<T>&, const char*) {
    return Status::ok();
  }
};

// Pass 2 of encoding: appends the bytes.
class Writer {
 public:
  explicit Writer(PayloadWriter& out) : out_(out) {}
  template <Bulk T>
  Status fixed(T& v) {
    out_.put(v);
    return Status::ok();
  }
  template <typename T>
  Status array(std::uint32_t&, std::vector<T>& v, std::size_t, const char*) {
    return put_elements(v);
  }
  Status text(std::uint32_t&, std::string& s, std::size_t, const char*) {
    out_.put_text(s);
    return Status::ok();
  }
  template <typename T>
  Status list(std::vector<T>& v, std::size_t, const char*) {
    out_.put(static_cast<std::uint32_t>(v.size()));
    return put_elements(v);
  }
  Status str(std::string& s, std::size_t, const char*) {
    out_.put(static_cast<std::uint32_t>(s.size()));
    out_.put_text(s);
    return Status::ok();
  }
  template <Bulk T>
  Status tail(std::optional<T>& v, const char*) {
    if (v) out_.put(*v);
    return Status::ok();
  }

 private:
  template <typename T>
  Status put_elements(std::vector<T>& v) {
    if constexpr (Bulk<T>) {
      out_.put_array(std::span<const T>(v));
    } else if constexpr (std::is_same_v<T, std::string>) {
      for (std::string& e : v) PF_TRY(str(e, kMaxListString, "string"));
    } else {
      for (T& e : v) PF_TRY(e.io(*this));
    }
    return Status::ok();
  }
  PayloadWriter& out_;
};

// Decoding.
class Reader {
 public:
  explicit Reader(PayloadReader& in) : in_(in) {}
  template <Bulk T>
  Status fixed(T& v) {
    return in_.read(&v, "message head");
  }
  template <typename T>
  Status array(std::uint32_t& count, std::vector<T>& v, std::size_t limit, const char* what) {
    if (count > limit) return detail::over_limit(count, limit, what);
    return get_elements(count, v, what);
  }
  Status text(std::uint32_t& bytes, std::string& s, std::size_t limit, const char* what) {
    if (bytes > limit) return detail::over_limit(bytes, limit, what);
    return in_.read_text(bytes, &s, what);
  }
  template <typename T>
  Status list(std::vector<T>& v, std::size_t limit, const char* what) {
    std::uint32_t count = 0;
    PF_TRY(in_.read(&count, what));
    if (count > limit) return detail::over_limit(count, limit, what);
    return get_elements(count, v, what);
  }
  Status str(std::string& s, std::size_t limit, const char* what) {
    std::uint32_t bytes = 0;
    PF_TRY(in_.read(&bytes, what));
    if (bytes > limit) return detail::over_limit(bytes, limit, what);
    return in_.read_text(bytes, &s, what);
  }
  // Absent when the payload ends here; otherwise the whole struct must follow (a partial
  // one is kProtocol, and decode() refuses bytes after it).
  template <Bulk T>
  Status tail(std::optional<T>& v, const char* what) {
    if (in_.remaining() == 0) {
      v.reset();
      return Status::ok();
    }
    T t{};
    PF_TRY(in_.read(&t, what));
    v = t;
    return Status::ok();
  }

 private:
  template <typename T>
  Status get_elements(std::uint32_t count, std::vector<T>& v, const char* what) {
    if constexpr (Bulk<T>) {
      return in_.read_array(count, &v, what);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (count > in_.remaining() / sizeof(std::uint32_t)) return detail::too_short(what);
      v.assign(count, std::string());
      for (std::string& e : v) PF_TRY(str(e, kMaxListString, what));
      return Status::ok();
    } else {
      // Each element takes at least one byte: a count beyond the bytes left is a lie,
      // refused before anything is allocated.
      if (count > in_.remaining()) return detail::too_short(what);
      v.clear();
      v.resize(count);
      for (T& e : v) PF_TRY(e.io(*this));
      return Status::ok();
    }
  }
  PayloadReader& in_;
};

// The payload of a message (count fields of its heads are set from its arrays).
template <typename M>
std::vector<std::byte> encode(M& message) {
  Sizer sizer;
  message.io(sizer).ignore();  // sizing cannot fail
  PayloadWriter out;
  Writer writer(out);
  message.io(writer).ignore();  // writing cannot fail
  return out.take();
}

// Appends a message to `out` (the daemon's replies follow a ReplyHeader).
template <typename M>
void encode_into(PayloadWriter& out, M& message) {
  Sizer sizer;
  message.io(sizer).ignore();
  Writer writer(out);
  message.io(writer).ignore();
}

// Decodes a whole payload: trailing bytes are kProtocol.
template <typename M>
Status decode(std::span<const std::byte> payload, M* out, const char* what) {
  PayloadReader in(payload);
  Reader reader(in);
  PF_TRY(out->io(reader));
  return in.finish(what);
}

}  // namespace pf::wire
