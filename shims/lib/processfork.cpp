// libprocessfork: the C ABI (shims/include/processfork.h) over pf::client::Connection.
// This file: errors, versions, dtypes, connecting, the pool and gc. Branches, snapshots and
// merge: abi_branches.cpp; JSON answers and refs: abi_history.cpp; layout copies and keyed
// pages: abi_pages.cpp.
//
// DESIGN: every exported function is a thin boundary — validate pointers and sizes,
// build the request message and call the C++ client inside `boundary()` (abi_support.h:
// a Status becomes a pf_result, any escaping exception PF_OUT_OF_MEMORY / PF_INTERNAL, and
// the failure's message and trail are kept per thread for pf_last_error_message /
// pf_last_error_trail). Nothing here aborts, asserts or throws across the boundary. Only
// pf_* symbols are exported (processfork.map, -fvisibility=hidden); the static pf_vmm /
// pf_ipc code inside stays private.
#include "shims/include/processfork.h"

#include <cstddef>
#include <cstring>
#include <string>

#include "base/dtype.h"
#include "shims/lib/abi_support.h"

static_assert(PF_OK == static_cast<int>(pf::Code::kOk));
static_assert(PF_INVALID_ARGUMENT == static_cast<int>(pf::Code::kInvalidArgument));
static_assert(PF_NOT_FOUND == static_cast<int>(pf::Code::kNotFound));
static_assert(PF_ALREADY_EXISTS == static_cast<int>(pf::Code::kAlreadyExists));
static_assert(PF_OUT_OF_MEMORY == static_cast<int>(pf::Code::kOutOfMemory));
static_assert(PF_UNAVAILABLE == static_cast<int>(pf::Code::kUnavailable));
static_assert(PF_UNSUPPORTED == static_cast<int>(pf::Code::kUnsupported));
static_assert(PF_SYSTEM == static_cast<int>(pf::Code::kSystem));
static_assert(PF_PROTOCOL == static_cast<int>(pf::Code::kProtocol));
static_assert(PF_PERMISSION_DENIED == static_cast<int>(pf::Code::kPermissionDenied));
static_assert(PF_CONFLICT == static_cast<int>(pf::Code::kConflict));
static_assert(PF_DRIVER == static_cast<int>(pf::Code::kDriver));
static_assert(PF_INTERNAL == static_cast<int>(pf::Code::kInternal));
static_assert(PF_DATA_CORRUPT == static_cast<int>(pf::Code::kDataCorrupt));
static_assert(PF_STALE == static_cast<int>(pf::Code::kStale));
static_assert(pf::kLastCode == pf::Code::kStale, "a new Code needs its pf_result");
static_assert(PF_CID_BYTES == pf::wire::kCidBytes);
static_assert(PF_MAX_FORK == pf::wire::kMaxForkChildren);
static_assert(PF_ABI_VERSION_MAJOR == 1, "pf_connect_config's minimum size is the 1.0 prefix");

// The boundary vocabulary (abi_support.h): Status, Result, Code, Op, the checks.
using namespace pf::abi;  // NOLINT(google-build-using-namespace)

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
    case PF_DATA_CORRUPT:
      return "PF_DATA_CORRUPT";
    case PF_STALE:
      return "PF_STALE";
  }
  return "PF_UNKNOWN_RESULT";
}

const char* pf_last_error_message(const pf_client* /*client*/) {
  return last_error_message().c_str();
}

const char* pf_last_error_trail(const pf_client* /*client*/) {
  return last_error_trail().c_str();
}

uint32_t pf_abi_version(void) {
  return (uint32_t{PF_ABI_VERSION_MAJOR} << 16) | PF_ABI_VERSION_MINOR;
}

const char* pf_version_string(void) {
  return PF_VERSION_STRING;
}

static_assert(PF_DTYPE_BF16 == static_cast<int>(pf::DType::kBF16) &&
                  PF_DTYPE_FP16 == static_cast<int>(pf::DType::kFP16) &&
                  PF_DTYPE_FP32 == static_cast<int>(pf::DType::kFP32) &&
                  PF_DTYPE_FP8_E4M3 == static_cast<int>(pf::DType::kFP8E4M3) &&
                  PF_DTYPE_FP8_E5M2 == static_cast<int>(pf::DType::kFP8E5M2) &&
                  pf::kDTypes.size() == 5,
              "enum pf_dtype must number the dtypes as base/dtype.h does");

const char* pf_dtype_name(uint32_t dtype) {
  // The table's names are string literals: NUL-terminated, static storage.
  const pf::DTypeInfo* info = pf::dtype_info(dtype);
  return info ? info->name.data() : nullptr;
}

size_t pf_dtype_bytes(uint32_t dtype) {
  const pf::DTypeInfo* info = pf::dtype_info(dtype);
  return info ? info->bytes : 0;
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
    constexpr std::uint32_t kKnownFlags = PF_CONNECT_NO_ATTACH | PF_CONNECT_NO_RECONNECT;
    if ((cfg.flags & ~kKnownFlags) != 0) {
      return invalid("config->flags has unknown bits " + std::to_string(cfg.flags & ~kKnownFlags));
    }
    if (cfg.reconnect_timeout_ms > 600000) {
      return invalid("config->reconnect_timeout_ms is " + std::to_string(cfg.reconnect_timeout_ms) +
                     "; at most 600000 (10 min)");
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
    options.reconnect = (cfg.flags & PF_CONNECT_NO_RECONNECT) == 0;
    options.reconnect_timeout_ms = cfg.reconnect_timeout_ms == 0
                                       ? pf::client::kDefaultReconnectTimeoutMs
                                       : cfg.reconnect_timeout_ms;
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
    full.boot_epoch = p.boot_epoch;
    return write_sized(full, out, "pf_pool_info");
  });
}

uint64_t pf_client_generation(const pf_client* client) {
  return client == nullptr || client->conn == nullptr ? 0 : client->conn->generation();
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

pf_result pf_page_access(pf_client* client, uint32_t page, uint32_t* flags) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(flags, "flags"));
    const std::uint64_t capacity = client->conn->pool().capacity_pages;
    if (page >= capacity) {
      return invalid("page " + std::to_string(page) + " is beyond the pool's capacity of " +
                     std::to_string(capacity) + " pages");
    }
    *flags = (client->conn->page_writable(page) ? PF_PAGE_WRITABLE : 0u) |
             (client->conn->page_guarded(page) ? PF_PAGE_GUARDED : 0u);
    return Status::ok();
  });
}

pf_result pf_pool_stats_get(pf_client* client, pf_pool_stats* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    // Validate the struct before the round trip.
    pf_pool_stats probe{};
    probe.struct_size = out->struct_size;
    PF_TRY(check_sized(probe.struct_size, sizeof(pf_pool_stats), "pf_pool_stats"));
    PF_ASSIGN_OR_RETURN(auto s, client->conn->request<Op::kPool>({}));
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
    pf::msg::Gc request;
    request.drop_cache = (flags & PF_GC_DROP_CACHE) != 0 ? 1 : 0;
    PF_ASSIGN_OR_RETURN(auto g, client->conn->request<Op::kGc>(request));
    if (out != nullptr) *out = pf_gc_result{g.evicted_pages, g.released_chunks};
    return Status::ok();
  });
}

}  // extern "C"
