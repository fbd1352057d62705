// processfork.hpp: header-only C++ RAII over libprocessfork's C ABI (processfork.h).
//
// Error model: every failing call throws processfork::Error, which carries the pf_result
// code and the library's message (pf_last_error_message). Destructors never throw (a
// Branch that cannot be freed, e.g. because the daemon is gone, is dropped silently: the
// daemon frees it with the lease anyway). Nothing here aborts.
//
// Ownership:
//  - Client owns one pf_client (one session); movable, not copyable.
//  - Branch is a handle to a branch of a Client's lease: its destructor frees the branch
//    unless release() (give the id back to the caller) or detach() (the branch outlives
//    the connection) was called. A Branch must not outlive its Client.
//  - Page pointers from Client::page_ptr stay valid while the page is held and the
//    Client is connected.
//
// Daemon restarts (docs/c_api.md "Daemon restarts"): a Client reconnects by itself;
// Client::generation() counts the reconnections. Branch handles of an earlier daemon throw
// StaleHandle (an Error with code PF_STALE); their destructors stay silent. After a
// reconnect re-read page pointers: the pool is mapped at a new base.
//
// Threading: as the C ABI — a Client may be shared by threads (requests are serialized);
// a Branch handle is not synchronized.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "processfork.h"

namespace processfork {

class Error : public std::runtime_error {
 public:
  Error(pf_result code, const std::string& what)
      : std::runtime_error(std::string(pf_result_string(code)) + ": " + what), code_(code) {}
  pf_result code() const noexcept { return code_; }

 private:
  pf_result code_;
};

// A branch id or page hold of an earlier daemon boot epoch (PF_STALE): the daemon restarted
// since the handle was made, and what it named is gone.
class StaleHandle : public Error {
 public:
  explicit StaleHandle(const std::string& what) : Error(PF_STALE, what) {}
};

namespace detail {
inline void check(pf_result r) {
  if (r == PF_OK) return;
  if (r == PF_STALE) throw StaleHandle(pf_last_error_message(nullptr));
  throw Error(r, pf_last_error_message(nullptr));
}
}  // namespace detail

struct ConnectOptions {
  std::string socket_path;       // "" = $PROCESSFORK_SOCKET, else the daemon's default
  std::uint32_t timeout_ms = 0;  // 0 = 10 s
  bool attach = true;            // map the pool while connecting
  bool reconnect = true;         // reconnect to a restarted daemon (PF_CONNECT_NO_RECONNECT)
  std::uint32_t reconnect_timeout_ms = 0;  // 0 = 3 s
};

using WriteRun = pf_write_run;
using PoolInfo = pf_pool_info;
using PoolStats = pf_pool_stats;
using BranchInfo = pf_branch_info;
using MappingInfo = pf_mapping_info;
using GcResult = pf_gc_result;

// A branch or a snapshot (CID or ref name), for fork, merge and diff.
class Source {
 public:
  Source(pf_branch_id branch) : name_(), branch_(branch), is_branch_(true) {}  // NOLINT
  Source(std::string cid_or_ref)
      : name_(std::move(cid_or_ref)), branch_(0), is_branch_(false) {}  // NOLINT
  Source(const char* cid_or_ref) : Source(std::string(cid_or_ref)) {}   // NOLINT
  pf_source c() const {
    return is_branch_ ? pf_source_branch(branch_) : pf_source_named(name_.c_str());
  }

 private:
  std::string name_;
  pf_branch_id branch_;
  bool is_branch_;
};

struct AppendResult {
  std::uint64_t first_token = 0;
  std::uint32_t pages_added = 0;
  bool copied_page = false;
  std::vector<WriteRun> runs;
};

struct Snapshot {
  std::string cid;
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  bool created = false;
};

struct View {
  BranchInfo info{};  // info.ready_pages: leading pages readable when the daemon answered
  std::vector<std::uint32_t> pages;
  std::vector<std::uint32_t> tokens;
  std::uint64_t ready_pages() const { return info.ready_pages; }
};

class Client;

class Branch {
 public:
  Branch() = default;
  Branch(pf_client* client, pf_branch_id id) : client_(client), id_(id) {}
  Branch(Branch&& other) noexcept
      : client_(std::exchange(other.client_, nullptr)), id_(std::exchange(other.id_, 0)) {}
  Branch& operator=(Branch&& other) noexcept {
    if (this != &other) {
      reset();
      client_ = std::exchange(other.client_, nullptr);
      id_ = std::exchange(other.id_, 0);
    }
    return *this;
  }
  Branch(const Branch&) = delete;
  Branch& operator=(const Branch&) = delete;
  ~Branch() { reset(); }

  pf_branch_id id() const { return id_; }
  explicit operator bool() const { return client_ != nullptr; }

  AppendResult append(std::span<const std::uint32_t> tokens) {
    std::vector<WriteRun> runs(pf_append_max_runs(client_, tokens.size()));
    pf_append_result r{};
    detail::check(
        pf_append(client_, id_, tokens.data(), tokens.size(), runs.data(), runs.size(), &r));
    runs.resize(r.n_runs);
    return AppendResult{r.first_token, r.pages_added, r.copied_page != 0, std::move(runs)};
  }
  void commit() { detail::check(pf_commit(client_, id_)); }
  void truncate(std::uint64_t n_tokens) { detail::check(pf_truncate(client_, id_, n_tokens)); }
  Snapshot snapshot(const std::string& name = "") {
    pf_snapshot_result r{};
    detail::check(pf_snapshot(client_, id_, name.empty() ? nullptr : name.c_str(), &r));
    return Snapshot{r.cid, r.n_tokens, r.n_pages, r.created != 0};
  }
  // The branch's page ids (and tokens), once its first min(wait_pages, n_pages) pages are
  // readable (pf_branch_view_ready): UINT64_MAX waits for every page, 0 for none; the
  // View's ready_pages() says how many leading pages may be read.
  View view(bool with_tokens = false, std::uint64_t wait_pages = UINT64_MAX) {
    View v;
    for (;;) {  // the branch may grow between the size query and the read: retry
      detail::check(pf_branch_view_ready(client_, id_, 0, &v.info, nullptr, 0, nullptr, 0));
      v.pages.resize(v.info.n_pages);
      v.tokens.resize(with_tokens ? v.info.n_tokens : 0);
      const pf_result r =
          pf_branch_view_ready(client_, id_, wait_pages, &v.info, v.pages.data(), v.pages.size(),
                               with_tokens ? v.tokens.data() : nullptr, v.tokens.size());
      if (r == PF_INVALID_ARGUMENT &&
          (v.info.n_pages > v.pages.size() || (with_tokens && v.info.n_tokens > v.tokens.size()))) {
        continue;
      }
      detail::check(r);
      v.pages.resize(v.info.n_pages);
      if (with_tokens) v.tokens.resize(v.info.n_tokens);
      return v;
    }
  }
  std::vector<Branch> fork(std::uint32_t n);
  // The branch outlives the connection (until freed); this handle lets go of it.
  pf_branch_id detach() {
    detail::check(pf_detach(client_, id_));
    return release();
  }
  // This handle lets go of the branch without freeing it (it stays in the lease).
  pf_branch_id release() {
    client_ = nullptr;
    return std::exchange(id_, 0);
  }
  // Frees the branch now; throws on failure.
  void free() {
    if (client_ == nullptr) return;
    detail::check(pf_branch_free(client_, id_));
    release();
  }

 private:
  void reset() noexcept {
    if (client_ != nullptr) (void)pf_branch_free(client_, id_);
    client_ = nullptr;
    id_ = 0;
  }

  pf_client* client_ = nullptr;
  pf_branch_id id_ = 0;
};

// A prefix-index namespace tag (PF_NAMESPACE_BYTES bytes; all zero = the default namespace).
using Namespace = std::array<std::uint8_t, PF_NAMESPACE_BYTES>;

struct NewBranch {
  Branch branch;
  std::uint64_t n_tokens = 0;
  std::uint64_t reused_tokens = 0;
};

struct Merge {
  bool fast_forward = true;
  Branch branch;
  std::string cid;
  std::string base;
  std::uint64_t common_tokens = 0;
  std::vector<std::uint32_t> recompute_tokens;
};

class Client {
 public:
  explicit Client(const ConnectOptions& options = {}) {
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    cfg.socket_path = options.socket_path.empty() ? nullptr : options.socket_path.c_str();
    cfg.timeout_ms = options.timeout_ms;
    cfg.flags = (options.attach ? 0u : PF_CONNECT_NO_ATTACH) |
                (options.reconnect ? 0u : PF_CONNECT_NO_RECONNECT);
    cfg.reconnect_timeout_ms = options.reconnect_timeout_ms;
    detail::check(pf_connect(&cfg, &client_));
  }
  Client(Client&& other) noexcept : client_(std::exchange(other.client_, nullptr)) {}
  Client& operator=(Client&& other) noexcept {
    if (this != &other) {
      pf_disconnect(client_);
      client_ = std::exchange(other.client_, nullptr);
    }
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() { pf_disconnect(client_); }

  pf_client* get() const { return client_; }
  // Reconnections to a restarted daemon so far (pf_client_generation).
  std::uint64_t generation() const { return pf_client_generation(client_); }

  PoolInfo pool() const {
    PoolInfo info{};
    info.struct_size = sizeof info;
    detail::check(pf_pool_info_get(client_, &info));
    return info;
  }
  MappingInfo mapping() const {
    MappingInfo m{};
    detail::check(pf_mapping_info_get(client_, &m));
    return m;
  }
  void attach() { detail::check(pf_attach(client_)); }
  void* page_ptr(std::uint32_t page) {
    void* p = nullptr;
    detail::check(pf_page_ptr(client_, page, &p));
    return p;
  }
  template <typename T>
  T* page_as(std::uint32_t page) {
    return static_cast<T*>(page_ptr(page));
  }
  // PF_PAGE_WRITABLE / PF_PAGE_GUARDED bits (pf_page_access).
  std::uint32_t page_access(std::uint32_t page) {
    std::uint32_t flags = 0;
    detail::check(pf_page_access(client_, page, &flags));
    return flags;
  }
  bool page_writable(std::uint32_t page) { return (page_access(page) & PF_PAGE_WRITABLE) != 0; }

  // A new branch in namespace `ns` (nullptr: the default one; pf_branch_create_ns).
  NewBranch branch(std::span<const std::uint32_t> tokens = {}, const Namespace* ns = nullptr) {
    pf_new_branch b{};
    detail::check(pf_branch_create_ns(client_, tokens.data(), tokens.size(),
                                      ns == nullptr ? nullptr : ns->data(), &b));
    return NewBranch{Branch(client_, b.branch), b.n_tokens, b.reused_tokens};
  }
  // Takes ownership of an existing branch id of this client's lease (or a detached one).
  Branch adopt(pf_branch_id id) { return Branch(client_, id); }

  std::vector<Branch> fork(const Source& source, std::uint32_t n,
                           std::string* source_cid = nullptr) {
    std::vector<pf_branch_id> ids(n);
    char cid[PF_CID_BYTES] = {};
    const pf_source src = source.c();
    detail::check(pf_fork(client_, &src, n, ids.data(), ids.size(), cid, sizeof cid));
    if (source_cid != nullptr) *source_cid = cid;
    std::vector<Branch> out;
    out.reserve(n);
    for (pf_branch_id id : ids) out.emplace_back(client_, id);
    return out;
  }
  Branch checkout(const std::string& cid_or_ref, std::string* cid = nullptr) {
    pf_branch_id id = 0;
    char resolved[PF_CID_BYTES] = {};
    detail::check(pf_checkout(client_, cid_or_ref.c_str(), &id, resolved, sizeof resolved));
    if (cid != nullptr) *cid = resolved;
    return Branch(client_, id);
  }
  Merge merge(const Source& from, const Source& into) {
    const pf_source f = from.c();
    const pf_source i = into.c();
    std::vector<std::uint32_t> tokens;
    pf_merge_result r{};
    for (;;) {
      const pf_result rc =
          pf_merge(client_, &f, &i, &r, tokens.empty() ? nullptr : tokens.data(), tokens.size());
      if (rc == PF_INVALID_ARGUMENT && r.n_recompute_tokens > tokens.size()) {
        tokens.resize(r.n_recompute_tokens);
        continue;
      }
      detail::check(rc);
      break;
    }
    tokens.resize(r.n_recompute_tokens);
    return Merge{r.outcome == PF_MERGE_FAST_FORWARD,
                 Branch(client_, r.branch),
                 r.cid,
                 r.base,
                 r.common_tokens,
                 std::move(tokens)};
  }

  std::string diff(const Source& a, const Source& b) {
    const pf_source sa = a.c();
    const pf_source sb = b.c();
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_diff(client_, &sa, &sb, buf, cap, need);
    });
  }
  std::string log(const std::string& cid_or_ref) {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_log(client_, cid_or_ref.c_str(), buf, cap, need);
    });
  }
  std::string manifest(const std::string& cid_or_ref) {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_manifest(client_, cid_or_ref.c_str(), buf, cap, need);
    });
  }
  std::string snapshots() {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_snapshots(client_, buf, cap, need);
    });
  }
  std::string refs() {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_refs_list(client_, buf, cap, need);
    });
  }
  std::string health() {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_health(client_, buf, cap, need);
    });
  }
  std::string branches() {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_branches(client_, buf, cap, need);
    });
  }
  std::string pool_json() {
    return json_call([&](char* buf, std::size_t cap, std::size_t* need) {
      return pf_pool_json(client_, buf, cap, need);
    });
  }

  void ref_set(const std::string& name, const std::string& cid_or_ref) {
    detail::check(pf_ref_set(client_, name.c_str(), cid_or_ref.c_str()));
  }
  std::string ref_get(const std::string& name) {
    char cid[PF_CID_BYTES] = {};
    detail::check(pf_ref_get(client_, name.c_str(), cid, sizeof cid));
    return cid;
  }
  void ref_delete(const std::string& name) { detail::check(pf_ref_delete(client_, name.c_str())); }
  void unpin(const std::string& cid) { detail::check(pf_unpin(client_, cid.c_str())); }
  // Blocks until the snapshot is durable in the daemon's store (pf_wait_durable).
  void wait_durable(const std::string& cid_or_ref) {
    detail::check(pf_wait_durable(client_, cid_or_ref.c_str()));
  }

  PoolStats pool_stats() {
    PoolStats s{};
    s.struct_size = sizeof s;
    detail::check(pf_pool_stats_get(client_, &s));
    return s;
  }
  GcResult gc(bool drop_cache = false) {
    GcResult g{};
    detail::check(pf_gc(client_, drop_cache ? PF_GC_DROP_CACHE : 0u, &g));
    return g;
  }

  // ---- KV layout copies (processfork.h "KV layout copies") ----
  // Copies layers [layer_begin, layer_end) of `runs` between the engine tensors `layout`
  // describes and pool pages; returns the bytes copied. Blocking. Store only into pages
  // this client holds exclusively. `cuda_stream`: the cudaStream_t that wrote (store) or
  // will read (load) the tensors; nullptr is the legacy default stream (PyTorch's default
  // stream), PF_CUDA_STREAM_OWN the library's own stream (processfork.h, ABI 1.5). Before
  // commit / snapshot / fork / merge / publish, synchronize every stream of yours that wrote
  // the pages (processfork.h "GPU fences"); the library waits for its own copies.
  std::uint64_t kv_copy(const pf_kv_layout& layout, std::span<const pf_kv_run> runs,
                        pf_kv_direction direction, std::uint32_t layer_begin = 0,
                        std::uint32_t layer_end = UINT32_MAX, void* cuda_stream = nullptr) {
    if (layer_end == UINT32_MAX) layer_end = pool().layers;
    std::uint64_t bytes = 0;
    detail::check(pf_kv_copy(client_, &layout, runs.data(), runs.size(), layer_begin, layer_end,
                             direction, cuda_stream, &bytes));
    return bytes;
  }

  // ---- keyed pages (protocol 1.2; processfork.h "keyed pages") ----
  // Keys are 32-byte binary prefix keys (Key); key_from_hex / key_to_hex convert.
  using Key = std::array<std::uint8_t, PF_KEY_BYTES>;
  static_assert(sizeof(Key) == PF_KEY_BYTES, "keys are passed as one contiguous array");
  static Key key_from_hex(std::string_view hex) {
    if (hex.size() != 2 * PF_KEY_BYTES) {
      throw Error(PF_INVALID_ARGUMENT,
                  "a key is 64 hex digits, got " + std::to_string(hex.size()) + " characters");
    }
    Key k{};
    const std::string text(hex);
    detail::check(pf_key_from_hex(text.c_str(), k.data()));
    return k;
  }
  static std::string key_to_hex(const Key& key) {
    char hex[2 * PF_KEY_BYTES + 1] = {};
    detail::check(pf_key_to_hex(key.data(), hex));
    return hex;
  }
  // Pages of the longest leading run of `keys` present; held by this client if `hold`.
  // Within namespace `ns` (nullptr: the default one).
  std::vector<std::uint32_t> lookup_keys(std::span<const Key> keys, bool hold = true,
                                         const Namespace* ns = nullptr) {
    std::vector<std::uint32_t> pages(keys.size());
    std::size_t found = 0;
    detail::check(pf_pages_lookup_keys_ns(client_, keys.empty() ? nullptr : keys.front().data(),
                                          keys.size(), ns == nullptr ? nullptr : ns->data(),
                                          hold ? PF_LOOKUP_HOLD : 0u, pages.data(), pages.size(),
                                          &found));
    pages.resize(found);
    return pages;
  }
  // n fresh exclusive pages held by this client.
  std::vector<std::uint32_t> alloc_pages(std::size_t n) {
    std::vector<std::uint32_t> pages(n);
    detail::check(pf_pages_alloc(client_, n, pages.data(), pages.size()));
    return pages;
  }
  // Seals pages[i] under keys[i], chained after parent_key (nullptr: first page); returns
  // how many keys were new. Ends this client's holds on `pages`. Within namespace `ns`
  // (nullptr: the default one).
  std::size_t publish_pages(std::span<const Key> keys, std::span<const std::uint32_t> pages,
                            const Key* parent_key = nullptr, const Namespace* ns = nullptr) {
    if (keys.size() != pages.size()) {
      throw Error(PF_INVALID_ARGUMENT, "publish_pages: " + std::to_string(keys.size()) +
                                           " keys for " + std::to_string(pages.size()) + " pages");
    }
    std::size_t added = 0;
    detail::check(pf_pages_publish_ns(client_, keys.empty() ? nullptr : keys.front().data(),
                                      pages.data(), pages.size(),
                                      parent_key == nullptr ? nullptr : parent_key->data(),
                                      ns == nullptr ? nullptr : ns->data(), &added));
    return added;
  }
  void release_pages(std::span<const std::uint32_t> pages) {
    detail::check(pf_pages_release(client_, pages.data(), pages.size()));
  }
  // ---- end of keyed pages ----

 private:
  // The size query / fill loop of the JSON answers (the answer may change in between).
  template <typename F>
  static std::string json_call(F&& f) {
    std::string out(4096, '\0');
    for (;;) {
      std::size_t need = 0;
      const pf_result r = f(out.data(), out.size(), &need);
      if (r == PF_INVALID_ARGUMENT && need > out.size()) {
        out.resize(need);
        continue;
      }
      detail::check(r);
      out.resize(need - 1);
      return out;
    }
  }

  pf_client* client_ = nullptr;
};

inline std::vector<Branch> Branch::fork(std::uint32_t n) {
  std::vector<pf_branch_id> ids(n);
  const pf_source src = pf_source_branch(id_);
  detail::check(pf_fork(client_, &src, n, ids.data(), ids.size(), nullptr, 0));
  std::vector<Branch> out;
  out.reserve(n);
  for (pf_branch_id id : ids) out.emplace_back(client_, id);
  return out;
}

}  // namespace processfork
