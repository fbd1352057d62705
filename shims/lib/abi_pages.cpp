// libprocessfork C ABI (processfork.h): KV layout copies and keyed pages.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "base/hex.h"
#include "shims/lib/abi_support.h"

// The boundary vocabulary (abi_support.h): Status, Result, Code, Op, the checks.
using namespace pf::abi;  // NOLINT(google-build-using-namespace)

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

std::vector<pf::wire::Key> as_keys(const uint8_t* keys, std::size_t n) {
  std::vector<pf::wire::Key> out(n);
  if (n != 0) std::memcpy(out.data(), keys, n * PF_KEY_BYTES);
  return out;
}

// The daemon answers one page per key (or fewer found, for a lookup).
Status check_pages_answer(std::size_t got, std::size_t asked) {
  if (got > asked) {
    return Status(Code::kProtocol, "the daemon answered with " + std::to_string(got) +
                                       " pages for " + std::to_string(asked) + " asked");
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
  return pf_pages_lookup_keys_ns(client, keys, n_keys, nullptr, flags, pages, pages_capacity,
                                 n_found);
}

pf_result pf_pages_lookup_keys_ns(pf_client* client, const uint8_t* keys, size_t n_keys,
                                  const uint8_t* ns, uint32_t flags, uint32_t* pages,
                                  size_t pages_capacity, size_t* n_found) {
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
    pf::msg::LookupKeys request;
    PF_ASSIGN_OR_RETURN(request.ns, namespace_arg(client, ns));
    request.keys = as_keys(keys, n_keys);
    request.head.hold = (flags & PF_LOOKUP_HOLD) != 0 ? 1 : 0;
    PF_ASSIGN_OR_RETURN(auto found,
                        client->conn->request<Op::kPagesLookupKeys>(std::move(request)));
    PF_TRY(check_pages_answer(found.pages.size(), n_keys));
    std::copy(found.pages.begin(), found.pages.end(), pages);
    *n_found = found.pages.size();
    return Status::ok();
  });
}

pf_result pf_pages_alloc(pf_client* client, size_t n, uint32_t* pages, size_t pages_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_key_count(n, "pages"));
    PF_TRY(check_pages_buffer(pages, pages_capacity, n));
    pf::msg::AllocPages request;
    request.head.n_pages = static_cast<std::uint32_t>(n);
    PF_ASSIGN_OR_RETURN(auto got, client->conn->request<Op::kPagesAlloc>(request));
    PF_TRY(check_pages_answer(got.pages.size(), n));
    std::copy(got.pages.begin(), got.pages.end(), pages);
    return Status::ok();
  });
}

pf_result pf_pages_publish(pf_client* client, const uint8_t* keys, const uint32_t* pages, size_t n,
                           const uint8_t* parent_key, size_t* n_new) {
  return pf_pages_publish_ns(client, keys, pages, n, parent_key, nullptr, n_new);
}

pf_result pf_pages_publish_ns(pf_client* client, const uint8_t* keys, const uint32_t* pages,
                              size_t n, const uint8_t* parent_key, const uint8_t* ns,
                              size_t* n_new) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (n != 0 && (keys == nullptr || pages == nullptr)) {
      return invalid("keys or pages is NULL but n is not 0");
    }
    PF_TRY(check_key_count(n, "pages"));
    pf::msg::Publish request;
    PF_ASSIGN_OR_RETURN(request.ns, namespace_arg(client, ns));
    request.keys = as_keys(keys, n);
    request.pages.assign(pages, pages + n);
    if (parent_key != nullptr) {
      request.head.has_parent = 1;
      std::memcpy(request.head.parent_key, parent_key, PF_KEY_BYTES);
    }
    PF_TRY(fence_kv_copies(client));
    PF_ASSIGN_OR_RETURN(auto added, client->conn->request<Op::kPagesPublish>(std::move(request)));
    if (n_new != nullptr) *n_new = added.head.new_keys;
    return Status::ok();
  });
}

pf_result pf_pages_release(pf_client* client, const uint32_t* pages, size_t n) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (pages == nullptr && n != 0) return invalid("pages is NULL but n is not 0");
    PF_TRY(check_key_count(n, "pages"));
    pf::msg::ReleasePages request;
    request.pages.assign(pages, pages + n);
    return client->conn->request<Op::kPagesRelease>(std::move(request)).status();
  });
}

pf_result pf_key_from_hex(const char* hex, uint8_t* key) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(hex, "hex"));
    PF_TRY(check_out(key, "key"));
    std::uint8_t out[PF_KEY_BYTES];
    for (std::size_t i = 0; i < PF_KEY_BYTES; ++i) {
      // Stops at the first non-digit (a NUL included), so a short string is never overread.
      const int hi = pf::hex_nibble(hex[2 * i]);
      const int lo = hi < 0 ? -1 : pf::hex_nibble(hex[2 * i + 1]);
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
    const std::string digits = pf::hex_string(key, PF_KEY_BYTES);
    std::memcpy(hex, digits.c_str(), digits.size() + 1);
    return Status::ok();
  });
}

}  // extern "C"
