// Connection: the C++ client core behind libprocessfork — one Unix-socket session with the
// daemon (ipc/wire.h, docs/protocol.md): HELLO, lease, pool mapping, every wire op.
//
// DESIGN
//  - One request at a time per connection: a mutex is held from sending a request until
//    its reply is read, so replies never interleave. Threads that need parallelism open
//    several connections.
//  - Mapping: attach() maps the pool (PoolMapping). Every reply carries the pool epoch;
//    when it differs from the mapped epoch the connection re-attaches before returning,
//    so page ids in that reply are mapped by the time the caller sees them. If that remap
//    fails the op's own result is still returned (it happened on the daemon); page_ptr()
//    retries the attach and reports the failure.
//  - page_ptr() is lock-cheap: it reads the mapping under a separate mutex and only takes
//    the request mutex (to re-attach) when the page is not mapped yet — e.g. a page id
//    learned from another process after the pool grew.
//  - Errors: every call returns Status/Result. A broken session (daemon gone, timeout,
//    protocol violation) is remembered: later calls fail with kUnavailable without
//    touching the socket. The daemon's own error codes come back unchanged, with its
//    message.
//  - Nothing here throws on purpose; the C ABI boundary still catches everything
//    (std::bad_alloc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/frame_io.h"
#include "ipc/wire.h"
#include "shims/client/pool_mapping.h"
#include "vmm/status.h"
#include "vmm/unique_fd.h"

namespace pf::client {

inline constexpr std::uint32_t kDefaultTimeoutMs = 10000;

struct ConnectOptions {
  std::string socket_path;  // "" = $PROCESSFORK_SOCKET, else the daemon's default path
  std::uint32_t timeout_ms = kDefaultTimeoutMs;  // per send / receive; 0 = none
  bool attach = true;                            // map the pool during connect()
  // Busy-wait up to this many microseconds for each reply before sleeping in recv
  // (0 = never). Trades CPU for one scheduler wake-up less per round trip.
  std::uint32_t spin_us = 0;
};

// What HELLO told us about the daemon and its pool.
struct PoolInfo {
  std::uint16_t protocol_major = 0;
  std::uint16_t protocol_minor = 0;  // the session's minor: min(client, daemon)
  std::uint32_t daemon_pid = 0;
  std::uint64_t lease = 0;
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t page_tokens = 0;
  std::uint8_t dtype = 0;  // rt::DType numbering: bf16, fp16, fp32, fp8_e4m3, fp8_e5m2
  std::uint64_t page_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t capacity_pages = 0;
  std::string backend;  // "host" / "cuda"
  std::string device;   // "host" / "cuda:0"
};

struct MappingInfo {
  bool attached = false;
  std::uint64_t epoch = 0;         // the pool epoch the mapping reflects
  std::uint64_t latest_epoch = 0;  // the newest epoch any reply carried
  std::size_t mapped_chunks = 0;
  std::size_t mapped_bytes = 0;
  std::byte* base = nullptr;
};

struct NewBranch {
  std::uint64_t branch = 0;
  std::uint64_t n_tokens = 0;
  std::uint64_t reused_tokens = 0;
};

struct WriteRun {
  std::uint32_t page = 0;
  std::uint32_t first_slot = 0;
  std::uint32_t count = 0;
  std::uint64_t first_token = 0;
};

struct AppendResult {
  std::uint64_t first_token = 0;
  std::uint32_t pages_added = 0;
  bool copied_page = false;
  std::vector<WriteRun> runs;
};

struct BranchView {
  std::uint64_t branch = 0;
  std::uint64_t owner = 0;  // lease id; 0 = detached
  std::uint64_t n_tokens = 0;
  std::uint32_t fill_in_last_page = 0;
  std::vector<std::uint32_t> pages;
  std::vector<std::uint32_t> tokens;  // only when asked for
};

struct SnapshotResult {
  std::string cid;
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  bool created = false;
};

// Where fork/merge/diff start: a branch, or a snapshot named by CID or ref.
struct Source {
  bool is_branch = true;
  std::uint64_t branch = 0;
  std::string name;
  static Source of_branch(std::uint64_t id) { return Source{true, id, {}}; }
  static Source of_name(std::string cid_or_ref) { return Source{false, 0, std::move(cid_or_ref)}; }
};

struct ForkResult {
  std::string source;  // the CID forked from; empty when forked from a branch
  std::vector<std::uint64_t> branches;
};

struct CheckoutResult {
  std::uint64_t branch = 0;
  std::string cid;
};

struct MergeResult {
  bool fast_forward = true;
  std::uint64_t branch = 0;
  std::string cid;
  std::string base;
  std::uint64_t common_tokens = 0;
  std::vector<std::uint32_t> recompute_tokens;
};

struct PoolStats {
  std::uint64_t capacity_pages = 0;
  std::uint64_t used_pages = 0;
  std::uint64_t shared_pages = 0;
  std::uint64_t cached_pages = 0;
  std::uint64_t free_pages = 0;
  std::uint64_t page_bytes = 0;
  std::uint64_t chunk_bytes = 0;
};

struct GcResult {
  std::uint64_t evicted_pages = 0;
  std::uint64_t released_chunks = 0;
};

class Connection {
 public:
  // Connects, says HELLO (protocol major must match) and, with options.attach, maps the
  // pool. kUnavailable when nothing listens at the socket; kUnsupported for a daemon of
  // another protocol major; kPermissionDenied when the daemon refuses this uid.
  static Result<std::unique_ptr<Connection>> connect(const ConnectOptions& options);
  // Closes the socket (the daemon frees every branch of this lease that was not
  // snapshotted or detached) and unmaps the pool.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const PoolInfo& pool() const { return pool_; }
  const std::string& socket_path() const { return socket_path_; }

  // Maps the pool (the first time) or brings the mapping up to the daemon's epoch.
  Status attach();
  MappingInfo mapping_info() const;
  // The address of page `page` in this process (a device address on a CUDA pool).
  // Attaches or re-attaches when the page is not mapped yet. kInvalidArgument beyond the
  // pool's capacity; kNotFound when the daemon's pool has no chunk holding it.
  Result<std::byte*> page_ptr(std::uint32_t page);
  // Upper bound on the write runs append() can return for n tokens.
  std::size_t max_runs(std::size_t n_tokens) const;

  // --- fast path ----------------------------------------------------------------------
  Result<NewBranch> branch_create(std::span<const std::uint32_t> tokens);
  Result<AppendResult> append(std::uint64_t branch, std::span<const std::uint32_t> tokens);
  Status commit(std::uint64_t branch);
  Status truncate(std::uint64_t branch, std::uint64_t n_tokens);
  Status branch_free(std::uint64_t branch);
  Status detach(std::uint64_t branch);
  Result<BranchView> branch_view(std::uint64_t branch, bool with_tokens);
  Result<SnapshotResult> snapshot(std::uint64_t branch, std::string_view name);
  Result<ForkResult> fork(const Source& source, std::uint32_t n);
  Result<CheckoutResult> checkout(std::string_view cid_or_ref);

  // --- JSON ops (the DESIGN §6 answers, as text) --------------------------------------
  Result<std::string> merge_json(const Source& from, const Source& into);
  Result<MergeResult> merge(const Source& from, const Source& into);
  Result<std::string> diff_json(const Source& a, const Source& b);
  Result<std::string> log_json(std::string_view cid_or_ref);
  Result<std::string> manifest_json(std::string_view cid_or_ref);
  Result<std::string> snapshots_json();
  Status unpin(std::string_view cid);
  Status ref_set(std::string_view name, std::string_view cid_or_ref);
  Result<std::string> ref_get(std::string_view name);
  Status ref_delete(std::string_view name);
  Result<std::string> refs_json();
  Result<std::string> pool_json();
  Result<PoolStats> pool_stats();
  Result<std::string> gc_json(bool drop_cache);
  Result<GcResult> gc(bool drop_cache);
  Result<std::string> health_json();
  // Protocol 1.1: every branch of the daemon ({branches: [...]}) and one branch's info.
  Result<std::string> branches_json();
  Result<std::string> branch_info_json(std::uint64_t branch);
  // Protocol 1.2, keyed pages (docs/protocol.md): keys are 32-byte binary prefix keys,
  // n_keys of them back to back in `keys`. kUnsupported with an older daemon.
  Result<std::vector<std::uint32_t>> pages_lookup_keys(std::span<const std::uint8_t> keys,
                                                       bool hold);
  Result<std::vector<std::uint32_t>> pages_alloc(std::uint32_t n);
  // parent_key: nullptr or 32 bytes. Returns how many keys were new.
  Result<std::uint32_t> pages_publish(std::span<const std::uint8_t> keys,
                                      std::span<const std::uint32_t> pages,
                                      const std::uint8_t* parent_key);
  Status pages_release(std::span<const std::uint32_t> pages);

  // Any JSON op by type, for tools: request body in, answer body out.
  Result<std::string> json_op(wire::MsgType type, std::string_view request_json);

 private:
  struct Reply {
    wire::ReplyHeader header;
    std::vector<std::byte> payload;  // after the ReplyHeader
    std::vector<UniqueFd> fds;
  };

  Connection(UniqueFd sock, std::string socket_path);

  // Sends one request and reads its reply (mu_ held). Turns an error reply into its
  // Status; re-attaches when the reply's epoch is new (unless this is kAttach).
  Result<Reply> call_locked(wire::MsgType type, std::span<const std::byte> payload,
                            std::size_t max_fds = 0);
  Result<Reply> call(wire::MsgType type, std::span<const std::byte> payload);
  Status attach_locked();
  Status keyed_pages_supported() const;
  Status hello();
  Status broken(Status why);
  void wait_for_reply() const;

  mutable std::mutex mu_;  // one request at a time; guards sock_, next_id_, broken_
  UniqueFd sock_;
  std::string socket_path_;
  std::uint32_t next_id_ = 1;
  std::uint32_t spin_us_ = 0;
  Status broken_;  // ok while the session is usable
  PoolInfo pool_;

  mutable std::mutex map_mu_;  // guards the fields below (changed only with mu_ held too)
  std::unique_ptr<PoolMapping> mapping_;
  std::uint64_t mapped_epoch_ = 0;
  std::uint64_t latest_epoch_ = 0;
  bool stale_ = false;  // the mapping may not match mapped_epoch_: re-attach before use
};

// The socket path connect() uses for an empty ConnectOptions::socket_path:
// $PROCESSFORK_SOCKET, else $XDG_RUNTIME_DIR/processfork.sock, else
// /tmp/processfork-$UID.sock (the daemon's default).
std::string default_socket_path();

// "bf16", "fp16", "fp32", "fp8_e4m3", "fp8_e5m2", "unknown".
std::string_view dtype_name(std::uint8_t dtype);

}  // namespace pf::client
