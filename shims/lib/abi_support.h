// What every C ABI entry point of libprocessfork shares: the client handle, the exception
// and error boundary (pf_result codes, the calling thread's last error and its trail), and
// argument checks. Internal to libprocessfork; not installed.
#pragma once

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "ipc/messages.h"
#include "shims/client/connection.h"
#include "shims/client/kv_transfer.h"
#include "shims/include/processfork.h"

struct pf_client {
  std::unique_ptr<pf::client::Connection> conn;
  std::unique_ptr<pf::client::KVTransfer> kv;  // over *conn; made with it
};

namespace pf::abi {

// The names every abi_*.cpp uses (`using namespace pf::abi` brings them along).
using client::Connection;
using ipc::Op;
using pf::Code;
using pf::Result;
using pf::Status;

// Records the failure for pf_last_error_message / pf_last_error_trail and returns its code.
pf_result fail(pf_result code, std::string message, std::string trail = {});
pf_result to_result(const Status& s);
const std::string& last_error_message();
const std::string& last_error_trail();

// Runs `body` (returning Status) with every exception caught: the shim never throws into,
// nor aborts, its host process.
template <typename F>
pf_result boundary(F&& body) noexcept {
  try {
    return to_result(body());
  } catch (const std::bad_alloc&) {
    return fail(PF_OUT_OF_MEMORY, "out of host memory in libprocessfork");
  } catch (const std::exception& e) {
    return fail(PF_INTERNAL, std::string("libprocessfork: unexpected exception: ") + e.what());
  } catch (...) {
    return fail(PF_INTERNAL, "libprocessfork: unexpected exception");
  }
}

Status invalid(std::string message);
Status check_client(const pf_client* client);
// The library's half of the GPU fence (processfork.h "GPU fences"): waits for any pf_kv_copy
// of this client still running on the device. Every call that seals pages calls it after
// check_client and before its request. Free on a host pool.
Status fence_kv_copies(pf_client* client);
Status check_out(const void* p, const char* what);
// A NUL-terminated string argument that must be present, non-empty and at most
// wire::kMaxNameBytes long.
Result<std::string_view> text_arg(const char* p, const char* what);
Result<msg::Source> source_arg(const pf_source* source, const char* what);
// A CID buffer argument (NULL allowed) must hold PF_CID_BYTES.
Status check_cid_buffer(const char* out, std::size_t capacity, const char* what);
// Copies a CID into a caller buffer checked by check_cid_buffer (nothing when NULL).
void copy_cid(std::string_view cid, char* out);
// Copies text NUL-terminated into dst[capacity] (truncating).
void copy_fixed(char* dst, std::size_t capacity, std::string_view src);

// A namespace argument (PF_NAMESPACE_BYTES bytes, or NULL) as a request's optional tail:
// NULL and the all-zero tag are the default namespace (nullopt: the request is then byte
// for byte a protocol 3.0 one). kUnsupported, before anything is sent, for a non-default
// namespace when the daemon speaks a protocol minor without namespaces.
Result<std::optional<wire::Namespace>> namespace_arg(const pf_client* client,
                                                     const std::uint8_t* ns);

// The capacity / size-needed protocol of the JSON answers (processfork.h).
Status check_json_args(const pf_client* client, const char* json, std::size_t capacity);
Status deliver_json(const Result<std::string>& answer, char* json, std::size_t capacity,
                    std::size_t* needed);

// Writes a size-tagged output struct: the fields that fit in the caller's struct_size.
Status check_sized(std::uint32_t struct_size, std::size_t full_size, const char* what);
template <typename T>
Status write_sized(const T& full, T* out, const char* what) {
  if (out == nullptr) return invalid(std::string(what) + " is NULL");
  const std::uint32_t size = out->struct_size;
  PF_TRY(check_sized(size, sizeof(T), what));
  std::memcpy(reinterpret_cast<char*>(out) + sizeof(std::uint32_t),
              reinterpret_cast<const char*>(&full) + sizeof(std::uint32_t),
              size - sizeof(std::uint32_t));
  return Status::ok();
}

}  // namespace pf::abi
