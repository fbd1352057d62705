// libprocessfork: the C ABI (shims/include/processfork.h) over pf::client::Connection.
//
// DESIGN: every exported function is a thin boundary — validate pointers and sizes,
// call the C++ client inside `boundary()` (which turns a Status into a pf_result and any
// escaping exception into PF_OUT_OF_MEMORY / PF_INTERNAL), record the message of a failure
// in a thread-local string for pf_last_error_message. Nothing here aborts, asserts or
// throws across the boundary. Only pf_* symbols are exported (processfork.map,
// -fvisibility=hidden); the static pf_vmm / pf_ipc code inside stays private.
#include "shims/include/processfork.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>

#include "shims/client/connection.h"
#include "shims/client/kv_transfer.h"

struct pf_client {
  std::unique_ptr<pf::client::Connection> conn;
  std::unique_ptr<pf::client::KVTransfer> kv;  // over *conn; made with it
};

namespace {

using pf::Code;
using pf::Result;
using pf::Status;
using pf::client::Connection;
using pf::client::Source;

static_assert(PF_OK == static_cast<int>(Code::kOk));
static_assert(PF_INVALID_ARGUMENT == static_cast<int>(Code::kInvalidArgument));
static_assert(PF_NOT_FOUND == static_cast<int>(Code::kNotFound));
static_assert(PF_ALREADY_EXISTS == static_cast<int>(Code::kAlreadyExists));
static_assert(PF_OUT_OF_MEMORY == static_cast<int>(Code::kOutOfMemory));
static_assert(PF_UNAVAILABLE == static_cast<int>(Code::kUnavailable));
static_assert(PF_UNSUPPORTED == static_cast<int>(Code::kUnsupported));
static_assert(PF_SYSTEM == static_cast<int>(Code::kSystem));
static_assert(PF_PROTOCOL == static_cast<int>(Code::kProtocol));
static_assert(PF_PERMISSION_DENIED == static_cast<int>(Code::kPermissionDenied));
static_assert(PF_CONFLICT == static_cast<int>(Code::kConflict));
static_assert(PF_DRIVER == static_cast<int>(Code::kDriver));
static_assert(PF_INTERNAL == static_cast<int>(Code::kInternal));
static_assert(PF_CID_BYTES == pf::wire::kCidBytes);
static_assert(PF_ABI_VERSION_MAJOR == 1, "pf_connect_config's minimum size is the 1.0 prefix");

thread_local std::string t_last_error;

pf_result fail(pf_result code, std::string message) {
  t_last_error = std::move(message);
  return code;
}

pf_result to_result(const Status& s) {
  if (s.is_ok()) return PF_OK;
  return fail(static_cast<pf_result>(s.code()), s.message());
}

// Runs `body` (returning Status) with every exception caught.
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

Status invalid(std::string message) {
  return Status(Code::kInvalidArgument, std::move(message));
}

Status check_client(const pf_client* client) {
  if (client == nullptr || client->conn == nullptr) return invalid("client is NULL");
  return Status::ok();
}

Status check_out(const void* p, const char* what) {
  if (p == nullptr) return invalid(std::string(what) + " is NULL");
  return Status::ok();
}

// A NUL-terminated string argument that must be present and non-empty.
Result<std::string_view> text_arg(const char* p, const char* what) {
  if (p == nullptr) return invalid(std::string(what) + " is NULL");
  std::string_view s(p, strnlen(p, pf::wire::kMaxNameBytes + 1));
  if (s.empty()) return invalid(std::string(what) + " is empty");
  if (s.size() > pf::wire::kMaxNameBytes) {
    return invalid(std::string(what) + " is longer than " +
                   std::to_string(pf::wire::kMaxNameBytes) + " bytes");
  }
  return s;
}

Result<Source> source_arg(const pf_source* source, const char* what) {
  if (source == nullptr) return invalid(std::string(what) + " is NULL");
  if (source->name == nullptr) return Source::of_branch(source->branch);
  PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(source->name, what));
  return Source::of_name(std::string(name));
}

// Copies a fixed-size text (CID) into a caller buffer of `capacity` bytes.
Status copy_cid(const std::string& cid, char* out, std::size_t capacity, const char* what) {
  if (out == nullptr) return Status::ok();
  if (capacity < PF_CID_BYTES) {
    return invalid(std::string(what) + " buffer holds " + std::to_string(capacity) +
                   " bytes; it needs PF_CID_BYTES (" + std::to_string(PF_CID_BYTES) + ")");
  }
  const std::size_t n = std::min(cid.size(), std::size_t{PF_CID_BYTES - 1});
  std::memcpy(out, cid.data(), n);
  out[n] = '\0';
  return Status::ok();
}

Status check_cid_buffer(const char* out, std::size_t capacity, const char* what) {
  if (out != nullptr && capacity < PF_CID_BYTES) {
    return invalid(std::string(what) + " buffer holds " + std::to_string(capacity) +
                   " bytes; it needs PF_CID_BYTES (" + std::to_string(PF_CID_BYTES) + ")");
  }
  return Status::ok();
}

// The capacity/size-needed protocol of the JSON answers.
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

Status check_json_args(const pf_client* client, const char* json, std::size_t capacity) {
  PF_TRY(check_client(client));
  if (json == nullptr && capacity != 0) return invalid("json buffer is NULL but capacity is not 0");
  return Status::ok();
}

// Writes a size-tagged output struct: fields that fit in the caller's struct_size.
template <typename T>
Status write_sized(const T& full, T* out, const char* what) {
  if (out == nullptr) return invalid(std::string(what) + " is NULL");
  const std::uint32_t size = out->struct_size;
  if (size < 2 * sizeof(std::uint32_t)) {
    return invalid(std::string(what) + "->struct_size is " + std::to_string(size) +
                   "; set it to sizeof(" + what + ")");
  }
  if (size > sizeof(T)) {
    return Status(Code::kUnsupported, std::string(what) + "->struct_size is " +
                                          std::to_string(size) + " but this libprocessfork knows " +
                                          std::to_string(sizeof(T)) +
                                          " bytes (built against a newer processfork.h?)");
  }
  std::memcpy(reinterpret_cast<char*>(out) + sizeof(std::uint32_t),
              reinterpret_cast<const char*>(&full) + sizeof(std::uint32_t),
              size - sizeof(std::uint32_t));
  return Status::ok();
}

void copy_fixed(char* dst, std::size_t capacity, const std::string& src) {
  const std::size_t n = std::min(src.size(), capacity - 1);
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

extern "C" {

const char* pf_result_string(pf_result result) {
  switch (result) {
    case PF_OK:
      return "PF_OK";
    case PF_INVALID_ARGUMENT:
      return "PF_INVALID_ARGUMENT";
    case PF_NOT_FOUND:
      return "PF_NOT_FOUND";
    case PF_ALREADY_EXISTS:
      return "PF_ALREADY_EXISTS";
    case PF_OUT_OF_MEMORY:
      return "PF_OUT_OF_MEMORY";
    case PF_UNAVAILABLE:
      return "PF_UNAVAILABLE";
    case PF_UNSUPPORTED:
      return "PF_UNSUPPORTED";
    case PF_SYSTEM:
      return "PF_SYSTEM";
    case PF_PROTOCOL:
      return "PF_PROTOCOL";
    case PF_PERMISSION_DENIED:
      return "PF_PERMISSION_DENIED";
    case PF_CONFLICT:
      return "PF_CONFLICT";
    case PF_DRIVER:
      return "PF_DRIVER";
    case PF_INTERNAL:
      return "PF_INTERNAL";
  }
  return "PF_UNKNOWN_RESULT";
}

const char* pf_last_error_message(const pf_client* /*client*/) {
  return t_last_error.c_str();
}

uint32_t pf_abi_version(void) {
  return (uint32_t{PF_ABI_VERSION_MAJOR} << 16) | PF_ABI_VERSION_MINOR;
}

const char* pf_version_string(void) {
  return PF_VERSION_STRING;
}

pf_result pf_connect(const pf_connect_config* config, pf_client** out) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(out, "out"));
    *out = nullptr;
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    if (config != nullptr) {
      const std::uint32_t size = config->struct_size;
      constexpr std::uint32_t kMinSize = offsetof(pf_connect_config, flags);
      if (size < kMinSize) {
        return invalid("config->struct_size is " + std::to_string(size) + "; at least " +
                       std::to_string(kMinSize) + " (set it to sizeof(pf_connect_config))");
      }
      if (size > sizeof(pf_connect_config)) {
        return Status(Code::kUnsupported, "config->struct_size is " + std::to_string(size) +
                                              " but this libprocessfork knows " +
                                              std::to_string(sizeof(pf_connect_config)) +
                                              " bytes (built against a newer processfork.h?)");
      }
      std::memcpy(&cfg, config, size);
    }
    if ((cfg.flags & ~PF_CONNECT_NO_ATTACH) != 0) {
      return invalid("config->flags has unknown bits " +
                     std::to_string(cfg.flags & ~PF_CONNECT_NO_ATTACH));
    }
    if (cfg.spin_us > 1000000) {
      return invalid("config->spin_us is " + std::to_string(cfg.spin_us) +
                     "; at most 1000000 (1 s)");
    }
    pf::client::ConnectOptions options;
    if (cfg.socket_path != nullptr) options.socket_path = cfg.socket_path;
    options.timeout_ms = cfg.timeout_ms == 0 ? pf::client::kDefaultTimeoutMs : cfg.timeout_ms;
    options.attach = (cfg.flags & PF_CONNECT_NO_ATTACH) == 0;
    options.spin_us = cfg.spin_us;
    PF_ASSIGN_OR_RETURN(auto conn, Connection::connect(options));
    auto kv = std::make_unique<pf::client::KVTransfer>(*conn);
    *out = new pf_client{std::move(conn), std::move(kv)};
    return Status::ok();
  });
}

void pf_disconnect(pf_client* client) {
  try {
    delete client;
  } catch (...) {
    // A destructor that throws has nowhere to report to; the host process goes on.
  }
}

pf_result pf_pool_info_get(const pf_client* client, pf_pool_info* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    const auto& p = client->conn->pool();
    pf_pool_info full{};
    full.struct_size = sizeof full;
    full.layers = p.layers;
    full.kv_heads = p.kv_heads;
    full.head_dim = p.head_dim;
    full.page_tokens = p.page_tokens;
    full.dtype = p.dtype;
    full.page_bytes = p.page_bytes;
    full.chunk_bytes = p.chunk_bytes;
    full.capacity_bytes = p.capacity_bytes;
    full.capacity_pages = p.capacity_pages;
    full.lease = p.lease;
    full.daemon_pid = p.daemon_pid;
    full.protocol_major = p.protocol_major;
    full.protocol_minor = p.protocol_minor;
    copy_fixed(full.backend, sizeof full.backend, p.backend);
    copy_fixed(full.device, sizeof full.device, p.device);
    full.device_memory = p.backend == "host" ? 0 : 1;
    return write_sized(full, out, "pf_pool_info");
  });
}

pf_result pf_mapping_info_get(const pf_client* client, pf_mapping_info* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    const auto m = client->conn->mapping_info();
    *out = pf_mapping_info{};
    out->attached = m.attached ? 1 : 0;
    out->mapped_chunks = static_cast<uint32_t>(m.mapped_chunks);
    out->mapped_bytes = m.mapped_bytes;
    out->epoch = m.epoch;
    out->latest_epoch = m.latest_epoch;
    out->base = m.base;
    return Status::ok();
  });
}

pf_result pf_attach(pf_client* client) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return client->conn->attach();
  });
}

pf_result pf_page_ptr(pf_client* client, uint32_t page, void** out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    PF_ASSIGN_OR_RETURN(std::byte * p, client->conn->page_ptr(page));
    *out = p;
    return Status::ok();
  });
}

pf_result pf_branch_create(pf_client* client, const uint32_t* tokens, size_t n_tokens,
                           pf_new_branch* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    if (tokens == nullptr && n_tokens != 0) return invalid("tokens is NULL but n_tokens is not 0");
    PF_ASSIGN_OR_RETURN(auto b, client->conn->branch_create({tokens, n_tokens}));
    *out = pf_new_branch{b.branch, b.n_tokens, b.reused_tokens};
    return Status::ok();
  });
}

size_t pf_append_max_runs(const pf_client* client, size_t n_tokens) {
  if (client == nullptr || client->conn == nullptr) return 0;
  return client->conn->max_runs(n_tokens);
}

pf_result pf_append(pf_client* client, pf_branch_id branch, const uint32_t* tokens, size_t n_tokens,
                    pf_write_run* runs, size_t runs_capacity, pf_append_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (tokens == nullptr && n_tokens != 0) return invalid("tokens is NULL but n_tokens is not 0");
    const std::size_t bound = client->conn->max_runs(n_tokens);
    if (runs_capacity < bound) {
      if (out != nullptr) *out = pf_append_result{0, 0, 0, bound};
      return invalid("runs array holds " + std::to_string(runs_capacity) + " runs; appending " +
                     std::to_string(n_tokens) + " tokens needs room for " + std::to_string(bound) +
                     " (pf_append_max_runs)");
    }
    if (runs == nullptr && runs_capacity != 0) return invalid("runs is NULL but capacity is not 0");
    PF_TRY(check_out(out, "out"));
    PF_ASSIGN_OR_RETURN(auto a, client->conn->append(branch, {tokens, n_tokens}));
    for (std::size_t i = 0; i < a.runs.size(); ++i) {
      const auto& r = a.runs[i];
      runs[i] = pf_write_run{r.page, r.first_slot, r.count, 0, r.first_token};
    }
    *out = pf_append_result{a.first_token, a.pages_added, a.copied_page ? 1u : 0u, a.runs.size()};
    return Status::ok();
  });
}

pf_result pf_commit(pf_client* client, pf_branch_id branch) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return client->conn->commit(branch);
  });
}

pf_result pf_truncate(pf_client* client, pf_branch_id branch, uint64_t n_tokens) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return client->conn->truncate(branch, n_tokens);
  });
}

pf_result pf_branch_free(pf_client* client, pf_branch_id branch) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return client->conn->branch_free(branch);
  });
}

pf_result pf_detach(pf_client* client, pf_branch_id branch) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return client->conn->detach(branch);
  });
}

pf_result pf_branch_view(pf_client* client, pf_branch_id branch, pf_branch_info* info,
                         uint32_t* pages, size_t pages_capacity, uint32_t* tokens,
                         size_t tokens_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(info, "info"));
    if (pages == nullptr && pages_capacity != 0) {
      return invalid("pages is NULL but pages_capacity is not 0");
    }
    if (tokens == nullptr && tokens_capacity != 0) {
      return invalid("tokens is NULL but tokens_capacity is not 0");
    }
    PF_ASSIGN_OR_RETURN(auto v, client->conn->branch_view(branch, tokens != nullptr));
    *info = pf_branch_info{v.branch, v.owner, v.n_tokens, v.pages.size(), v.fill_in_last_page, 0};
    if (pages != nullptr && pages_capacity < v.pages.size()) {
      return invalid("pages array holds " + std::to_string(pages_capacity) + "; the branch has " +
                     std::to_string(v.pages.size()) + " pages");
    }
    if (tokens != nullptr && tokens_capacity < v.tokens.size()) {
      return invalid("tokens array holds " + std::to_string(tokens_capacity) + "; the branch has " +
                     std::to_string(v.tokens.size()) + " tokens");
    }
    if (pages != nullptr) std::copy(v.pages.begin(), v.pages.end(), pages);
    if (tokens != nullptr) std::copy(v.tokens.begin(), v.tokens.end(), tokens);
    return Status::ok();
  });
}

pf_result pf_snapshot(pf_client* client, pf_branch_id branch, const char* name,
                      pf_snapshot_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    std::string_view n;
    if (name != nullptr && *name != '\0') {
      PF_ASSIGN_OR_RETURN(n, text_arg(name, "name"));
    }
    PF_ASSIGN_OR_RETURN(auto s, client->conn->snapshot(branch, n));
    *out = pf_snapshot_result{};
    copy_fixed(out->cid, sizeof out->cid, s.cid);
    out->n_tokens = s.n_tokens;
    out->n_pages = s.n_pages;
    out->created = s.created ? 1 : 0;
    return Status::ok();
  });
}

pf_result pf_fork(pf_client* client, const pf_source* source, uint32_t n, pf_branch_id* branches,
                  size_t branches_capacity, char* source_cid, size_t source_cid_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(Source src, source_arg(source, "source"));
    if (n == 0 || n > PF_MAX_FORK) {
      return invalid("n is " + std::to_string(n) + "; it must be 1.." +
                     std::to_string(PF_MAX_FORK));
    }
    PF_TRY(check_out(branches, "branches"));
    if (branches_capacity < n) {
      return invalid("branches array holds " + std::to_string(branches_capacity) + "; " +
                     std::to_string(n) + " needed");
    }
    PF_TRY(check_cid_buffer(source_cid, source_cid_capacity, "source_cid"));
    PF_ASSIGN_OR_RETURN(auto f, client->conn->fork(src, n));
    std::copy(f.branches.begin(), f.branches.end(), branches);
    return copy_cid(f.source, source_cid, source_cid_capacity, "source_cid");
  });
}

pf_result pf_checkout(pf_client* client, const char* cid_or_ref, pf_branch_id* branch, char* cid,
                      size_t cid_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(cid_or_ref, "cid_or_ref"));
    PF_TRY(check_out(branch, "branch"));
    PF_TRY(check_cid_buffer(cid, cid_capacity, "cid"));
    PF_ASSIGN_OR_RETURN(auto c, client->conn->checkout(name));
    *branch = c.branch;
    return copy_cid(c.cid, cid, cid_capacity, "cid");
  });
}

pf_result pf_merge(pf_client* client, const pf_source* from, const pf_source* into,
                   pf_merge_result* out, uint32_t* recompute_tokens, size_t capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(Source f, source_arg(from, "from"));
    PF_ASSIGN_OR_RETURN(Source i, source_arg(into, "into"));
    PF_TRY(check_out(out, "out"));
    if (recompute_tokens == nullptr && capacity != 0) {
      return invalid("recompute_tokens is NULL but capacity is not 0");
    }
    PF_ASSIGN_OR_RETURN(auto m, client->conn->merge(f, i));
    *out = pf_merge_result{};
    out->outcome = m.fast_forward ? PF_MERGE_FAST_FORWARD : PF_MERGE_THREE_WAY;
    out->common_tokens = m.common_tokens;
    out->n_recompute_tokens = m.recompute_tokens.size();
    copy_fixed(out->cid, sizeof out->cid, m.cid);
    copy_fixed(out->base, sizeof out->base, m.base);
    if (capacity < m.recompute_tokens.size()) {
      // Undo the one thing that is not content-addressed: the result branch.
      client->conn->branch_free(m.branch).ignore();
      return invalid("recompute_tokens holds " + std::to_string(capacity) + "; the merge needs " +
                     std::to_string(m.recompute_tokens.size()) +
                     " (its branch was freed again; retry with a larger buffer)");
    }
    out->branch = m.branch;
    std::copy(m.recompute_tokens.begin(), m.recompute_tokens.end(), recompute_tokens);
    return Status::ok();
  });
}

pf_result pf_diff(pf_client* client, const pf_source* a, const pf_source* b, char* json,
                  size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    PF_ASSIGN_OR_RETURN(Source sa, source_arg(a, "a"));
    PF_ASSIGN_OR_RETURN(Source sb, source_arg(b, "b"));
    return deliver_json(client->conn->diff_json(sa, sb), json, capacity, needed);
  });
}

pf_result pf_log(pf_client* client, const char* cid_or_ref, char* json, size_t capacity,
                 size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(cid_or_ref, "cid_or_ref"));
    return deliver_json(client->conn->log_json(name), json, capacity, needed);
  });
}

pf_result pf_manifest(pf_client* client, const char* cid_or_ref, char* json, size_t capacity,
                      size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(cid_or_ref, "cid_or_ref"));
    return deliver_json(client->conn->manifest_json(name), json, capacity, needed);
  });
}

pf_result pf_snapshots(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(client->conn->snapshots_json(), json, capacity, needed);
  });
}

pf_result pf_refs_list(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(client->conn->refs_json(), json, capacity, needed);
  });
}

pf_result pf_health(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(client->conn->health_json(), json, capacity, needed);
  });
}

pf_result pf_branches(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(client->conn->branches_json(), json, capacity, needed);
  });
}

pf_result pf_pool_json(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(client->conn->pool_json(), json, capacity, needed);
  });
}

pf_result pf_ref_set(pf_client* client, const char* name, const char* cid_or_ref) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
    PF_ASSIGN_OR_RETURN(std::string_view c, text_arg(cid_or_ref, "cid_or_ref"));
    return client->conn->ref_set(n, c);
  });
}

pf_result pf_ref_get(pf_client* client, const char* name, char* cid, size_t cid_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
    PF_TRY(check_out(cid, "cid"));
    PF_TRY(check_cid_buffer(cid, cid_capacity, "cid"));
    PF_ASSIGN_OR_RETURN(std::string value, client->conn->ref_get(n));
    return copy_cid(value, cid, cid_capacity, "cid");
  });
}

pf_result pf_ref_delete(pf_client* client, const char* name) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
    return client->conn->ref_delete(n);
  });
}

pf_result pf_unpin(pf_client* client, const char* cid) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view c, text_arg(cid, "cid"));
    return client->conn->unpin(c);
  });
}

pf_result pf_pool_stats_get(pf_client* client, pf_pool_stats* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    // Validate the struct before the round trip.
    pf_pool_stats probe{};
    probe.struct_size = out->struct_size;
    PF_TRY(write_sized(pf_pool_stats{}, &probe, "pf_pool_stats"));
    PF_ASSIGN_OR_RETURN(auto s, client->conn->pool_stats());
    pf_pool_stats full{};
    full.struct_size = sizeof full;
    full.capacity_pages = s.capacity_pages;
    full.used_pages = s.used_pages;
    full.shared_pages = s.shared_pages;
    full.cached_pages = s.cached_pages;
    full.free_pages = s.free_pages;
    full.page_bytes = s.page_bytes;
    full.chunk_bytes = s.chunk_bytes;
    return write_sized(full, out, "pf_pool_stats");
  });
}

pf_result pf_gc(pf_client* client, uint32_t flags, pf_gc_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if ((flags & ~PF_GC_DROP_CACHE) != 0) {
      return invalid("flags has unknown bits " + std::to_string(flags & ~PF_GC_DROP_CACHE));
    }
    PF_ASSIGN_OR_RETURN(auto g, client->conn->gc((flags & PF_GC_DROP_CACHE) != 0));
    if (out != nullptr) *out = pf_gc_result{g.evicted_pages, g.released_chunks};
    return Status::ok();
  });
}

}  // extern "C"

// ---- KV layout copies -------------------------------------------------------------------

extern "C" {

pf_result pf_kv_copy(pf_client* client, const pf_kv_layout* layout, const pf_kv_run* runs,
                     size_t n_runs, uint32_t layer_begin, uint32_t layer_end,
                     pf_kv_direction direction, void* cuda_stream, uint64_t* bytes_copied) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (layout == nullptr) return invalid("layout is NULL");
    if (layout->struct_size != sizeof(pf_kv_layout)) {
      return invalid("layout->struct_size is " + std::to_string(layout->struct_size) +
                     "; set it to sizeof(pf_kv_layout) (" + std::to_string(sizeof(pf_kv_layout)) +
                     ")");
    }
    if (layout->reserved != 0) return invalid("layout->reserved must be 0");
    if (layout->k_ptrs == nullptr || layout->v_ptrs == nullptr) {
      return invalid("layout->k_ptrs or layout->v_ptrs is NULL");
    }
    if (runs == nullptr && n_runs != 0) return invalid("runs is NULL but n_runs is not 0");
    if (direction != PF_KV_STORE && direction != PF_KV_LOAD) {
      return invalid("direction is neither PF_KV_STORE nor PF_KV_LOAD");
    }
    std::vector<pf::client::KVPageRun> page_runs;
    page_runs.reserve(n_runs);
    for (size_t i = 0; i < n_runs; ++i) {
      if (runs[i].reserved != 0)
        return invalid("runs[" + std::to_string(i) + "].reserved must be 0");
      page_runs.push_back({runs[i].page, runs[i].page_slot, runs[i].count, runs[i].engine_token});
    }
    const pf::client::KVLayoutDesc desc{{layout->k_ptrs, layout->n_layers},
                                        {layout->v_ptrs, layout->n_layers},
                                        layout->block_tokens,
                                        layout->block_stride,
                                        layout->token_stride,
                                        layout->head_stride,
                                        layout->elem_bytes};
    PF_ASSIGN_OR_RETURN(
        std::uint64_t bytes,
        client->kv->copy(desc, page_runs, layer_begin, layer_end,
                         direction == PF_KV_STORE ? pf::kernels::KVDirection::kEngineToPages
                                                  : pf::kernels::KVDirection::kPagesToEngine,
                         cuda_stream));
    if (bytes_copied != nullptr) *bytes_copied = bytes;
    return Status::ok();
  });
}

}  // extern "C"

// ---- keyed pages (protocol 1.2) -----------------------------------------------------------

static_assert(PF_KEY_BYTES == pf::wire::kKeyBytes);
static_assert(PF_MAX_KEYS_PER_CALL == pf::wire::kMaxKeysPerRequest);

namespace {

Status check_key_count(std::size_t n, const char* what) {
  if (n > PF_MAX_KEYS_PER_CALL) {
    return invalid(std::to_string(n) + " " + what + " in one call; at most " +
                   std::to_string(PF_MAX_KEYS_PER_CALL) + " (PF_MAX_KEYS_PER_CALL)");
  }
  return Status::ok();
}

Status check_pages_buffer(const uint32_t* pages, std::size_t capacity, std::size_t needed) {
  if (needed == 0) return Status::ok();
  if (pages == nullptr) return invalid("pages is NULL");
  if (capacity < needed) {
    return invalid("pages array holds " + std::to_string(capacity) + "; " + std::to_string(needed) +
                   " needed");
  }
  return Status::ok();
}

}  // namespace

extern "C" {

pf_result pf_pages_lookup_keys(pf_client* client, const uint8_t* keys, size_t n_keys,
                               uint32_t flags, uint32_t* pages, size_t pages_capacity,
                               size_t* n_found) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(n_found, "n_found"));
    *n_found = 0;
    if (keys == nullptr && n_keys != 0) return invalid("keys is NULL but n_keys is not 0");
    if ((flags & ~PF_LOOKUP_HOLD) != 0) {
      return invalid("flags has unknown bits " + std::to_string(flags & ~PF_LOOKUP_HOLD));
    }
    PF_TRY(check_key_count(n_keys, "keys"));
    PF_TRY(check_pages_buffer(pages, pages_capacity, n_keys));
    PF_ASSIGN_OR_RETURN(auto found, client->conn->pages_lookup_keys({keys, n_keys * PF_KEY_BYTES},
                                                                    (flags & PF_LOOKUP_HOLD) != 0));
    std::copy(found.begin(), found.end(), pages);
    *n_found = found.size();
    return Status::ok();
  });
}

pf_result pf_pages_alloc(pf_client* client, size_t n, uint32_t* pages, size_t pages_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_key_count(n, "pages"));
    PF_TRY(check_pages_buffer(pages, pages_capacity, n));
    PF_ASSIGN_OR_RETURN(auto got, client->conn->pages_alloc(static_cast<std::uint32_t>(n)));
    std::copy(got.begin(), got.end(), pages);
    return Status::ok();
  });
}

pf_result pf_pages_publish(pf_client* client, const uint8_t* keys, const uint32_t* pages, size_t n,
                           const uint8_t* parent_key, size_t* n_new) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (n != 0 && (keys == nullptr || pages == nullptr)) {
      return invalid("keys or pages is NULL but n is not 0");
    }
    PF_TRY(check_key_count(n, "pages"));
    PF_ASSIGN_OR_RETURN(std::uint32_t added, client->conn->pages_publish({keys, n * PF_KEY_BYTES},
                                                                         {pages, n}, parent_key));
    if (n_new != nullptr) *n_new = added;
    return Status::ok();
  });
}

pf_result pf_pages_release(pf_client* client, const uint32_t* pages, size_t n) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (pages == nullptr && n != 0) return invalid("pages is NULL but n is not 0");
    PF_TRY(check_key_count(n, "pages"));
    return client->conn->pages_release({pages, n});
  });
}

pf_result pf_key_from_hex(const char* hex, uint8_t* key) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(hex, "hex"));
    PF_TRY(check_out(key, "key"));
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    std::uint8_t out[PF_KEY_BYTES];
    for (std::size_t i = 0; i < PF_KEY_BYTES; ++i) {
      // Stops at the first non-digit (a NUL included), so a short string is never overread.
      const int hi = nibble(hex[2 * i]);
      const int lo = hi < 0 ? -1 : nibble(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        return invalid("a key is 64 hex digits; character " +
                       std::to_string(hi < 0 ? 2 * i : 2 * i + 1) + " is not one");
      }
      out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    std::memcpy(key, out, PF_KEY_BYTES);
    return Status::ok();
  });
}

pf_result pf_key_to_hex(const uint8_t* key, char* hex) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(key, "key"));
    PF_TRY(check_out(hex, "hex"));
    static constexpr char kDigits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < PF_KEY_BYTES; ++i) {
      hex[2 * i] = kDigits[key[i] >> 4];
      hex[2 * i + 1] = kDigits[key[i] & 0xf];
    }
    hex[2 * PF_KEY_BYTES] = '\0';
    return Status::ok();
  });
}

}  // extern "C"
