#include "shims/lib/abi_support.h"

#include <algorithm>

namespace pf::abi {
namespace {

thread_local std::string t_last_error;
thread_local std::string t_last_trail;

}  // namespace

pf_result fail(pf_result code, std::string message, std::string trail) {
  t_last_error = std::move(message);
  t_last_trail = std::move(trail);
  return code;
}

pf_result to_result(const Status& s) {
  if (s.is_ok()) return PF_OK;
  return fail(static_cast<pf_result>(s.code()), s.message(), s.trail());
}

const std::string& last_error_message() {
  return t_last_error;
}

const std::string& last_error_trail() {
  return t_last_trail;
}

Status invalid(std::string message) {
  return Status(Code::kInvalidArgument, std::move(message));
}

Result<std::optional<wire::Namespace>> namespace_arg(const pf_client* client,
                                                     const std::uint8_t* ns) {
  std::optional<wire::Namespace> out;
  if (ns == nullptr) return out;
  wire::Namespace tag{};
  std::memcpy(tag.data(), ns, tag.size());
  if (tag == wire::Namespace{}) return out;
  if (client->conn->pool().protocol_minor < wire::kNamespaceMinor) {
    return Status(Code::kUnsupported, "the daemon speaks protocol " +
                                          std::to_string(wire::kVersionMajor) + "." +
                                          std::to_string(client->conn->pool().protocol_minor) +
                                          ", which has no prefix-index namespaces (3." +
                                          std::to_string(wire::kNamespaceMinor) + " and later)");
  }
  out = tag;
  return out;
}

Status check_client(const pf_client* client) {
  if (client == nullptr || client->conn == nullptr) return invalid("client is NULL");
  return Status::ok();
}

Status fence_kv_copies(pf_client* client) {
  return client->kv->fence();
}

Status check_out(const void* p, const char* what) {
  if (p == nullptr) return invalid(std::string(what) + " is NULL");
  return Status::ok();
}

Result<std::string_view> text_arg(const char* p, const char* what) {
  if (p == nullptr) return invalid(std::string(what) + " is NULL");
  std::string_view s(p, strnlen(p, wire::kMaxNameBytes + 1));
  if (s.empty()) return invalid(std::string(what) + " is empty");
  if (s.size() > wire::kMaxNameBytes) {
    return invalid(std::string(what) + " is longer than " + std::to_string(wire::kMaxNameBytes) +
                   " bytes");
  }
  return s;
}

Result<msg::Source> source_arg(const pf_source* source, const char* what) {
  if (source == nullptr) return invalid(std::string(what) + " is NULL");
  if (source->name == nullptr) return msg::Source::of_branch(source->branch);
  PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(source->name, what));
  return msg::Source::of_name(std::string(name));
}

Status check_cid_buffer(const char* out, std::size_t capacity, const char* what) {
  if (out != nullptr && capacity < PF_CID_BYTES) {
    return invalid(std::string(what) + " buffer holds " + std::to_string(capacity) +
                   " bytes; it needs PF_CID_BYTES (" + std::to_string(PF_CID_BYTES) + ")");
  }
  return Status::ok();
}

void copy_cid(std::string_view cid, char* out) {
  if (out != nullptr) copy_fixed(out, PF_CID_BYTES, cid);
}

void copy_fixed(char* dst, std::size_t capacity, std::string_view src) {
  const std::size_t n = std::min(src.size(), capacity - 1);
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

Status check_json_args(const pf_client* client, const char* json, std::size_t capacity) {
  PF_TRY(check_client(client));
  if (json == nullptr && capacity != 0) return invalid("json buffer is NULL but capacity is not 0");
  return Status::ok();
}

Status deliver_json(const Result<std::string>& answer, char* json, std::size_t capacity,
                    std::size_t* needed) {
  if (!answer.is_ok()) return answer.status();
  const std::size_t need = answer.value().size() + 1;
  if (needed != nullptr) *needed = need;
  if (json == nullptr) {
    if (capacity != 0) return invalid("json buffer is NULL but capacity is not 0");
    return Status::ok();
  }
  if (capacity < need) {
    return invalid("json buffer of " + std::to_string(capacity) + " bytes is too small; " +
                   std::to_string(need) + " needed");
  }
  std::memcpy(json, answer.value().data(), need - 1);
  json[need - 1] = '\0';
  return Status::ok();
}

Status check_sized(std::uint32_t size, std::size_t full_size, const char* what) {
  if (size < 2 * sizeof(std::uint32_t)) {
    return invalid(std::string(what) + "->struct_size is " + std::to_string(size) +
                   "; set it to sizeof(" + what + ")");
  }
  if (size > full_size) {
    return Status(Code::kUnsupported, std::string(what) + "->struct_size is " +
                                          std::to_string(size) + " but this libprocessfork knows " +
                                          std::to_string(full_size) +
                                          " bytes (built against a newer processfork.h?)");
  }
  return Status::ok();
}

}  // namespace pf::abi
