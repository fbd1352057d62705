// Connection: the C++ client core behind libprocessfork — one Unix-socket session with the
// daemon (ipc/wire.h, docs/protocol.md): HELLO, lease, pool mapping, every wire op.
//
// DESIGN
//  - One request at a time per connection: a mutex is held from sending a request until
//    its reply is read and decoded (and the writable pages updated), so replies never
//    interleave. Threads that need parallelism open several connections.
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
//  - Writable pages: the pages this session may write (ExclusivePages: append's write runs,
//    alloc'd keyed pages, until this session seals or frees them) are learned from the
//    replies that request() decodes; the pool mapping opens exactly those read-write where
//    the page size allows (PoolMapping "Page protection"). A broken session writes nothing.
//  - Daemon restarts (docs/c_api.md "Daemon restarts"). When a call finds the peer gone
//    (EOF, EPIPE, ECONNRESET — not a timeout, not a protocol error) the session is *lost*,
//    not broken: the call reconnects to the same socket path, retrying with backoff for up
//    to reconnect_timeout_ms, says HELLO again (the pool must be the same one: geometry,
//    page, chunk and capacity sizes, device), bumps generation() and re-attaches into a NEW
//    mapping; the previous mapping is kept (retired_) until the next reconnect or the
//    destructor, so pointers into it stay valid memory for one more generation. Later calls
//    on a session that could not reconnect make one immediate attempt each.
//    The detecting call: a request that never reached the daemon (the send failed) or that
//    does not mutate is sent once more on the new session; a mutating request that was sent
//    answers kUnavailable saying the client reconnected (never applied twice).
//  - Stale handles: ids carry the daemon's boot epoch (runtime/ids.h). A request naming a
//    branch of a boot epoch this client was connected to earlier, or a page this client
//    held (alloc'd / lookup-held) in an earlier session, is refused with kStale before
//    anything is sent. Holds and writable pages of a lost session are forgotten.
//  - Nothing here throws on purpose; the C ABI boundary still catches everything
//    (std::bad_alloc).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "ipc/frame_io.h"
#include "ipc/ops.h"
#include "ipc/wire.h"
#include "shims/client/exclusive_pages.h"
#include "shims/client/pool_mapping.h"

namespace pf::client {

inline constexpr std::uint32_t kDefaultTimeoutMs = 10000;
inline constexpr std::uint32_t kDefaultReconnectTimeoutMs = 3000;

struct ConnectOptions {
  std::string socket_path;  // "" = $PROCESSFORK_SOCKET, else the daemon's default path
  std::uint32_t timeout_ms = kDefaultTimeoutMs;  // per send / receive; 0 = none
  bool attach = true;                            // map the pool during connect()
  // Busy-wait up to this many microseconds for each reply before sleeping in recv
  // (0 = never). Trades CPU for one scheduler wake-up less per round trip.
  std::uint32_t spin_us = 0;
  // After the daemon went away: reconnect (to a restarted daemon on the same path).
  bool reconnect = true;
  // How long the call that finds the daemon gone keeps trying to reconnect (with backoff
  // while the socket is absent or refusing); each attempt is also bounded by timeout_ms.
  std::uint32_t reconnect_timeout_ms = kDefaultReconnectTimeoutMs;
};

// What HELLO told us about the daemon and its pool.
struct PoolInfo {
  std::uint16_t protocol_major = 0;
  std::uint16_t protocol_minor = 0;  // the session's minor: min(client, daemon)
  std::uint32_t daemon_pid = 0;
  std::uint64_t lease = 0;
  std::uint32_t boot_epoch = 0;  // the daemon's (HELLO 3.2 tail, else the lease id's)
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
  // This process's name for the pool's device: "host", or "cuda:M" with M this process's
  // ordinal of the daemon's GPU, found by UUID (local_device.h); it differs from
  // daemon_device when the two processes' CUDA_VISIBLE_DEVICES differ.
  std::string device;
  std::string daemon_device;      // the daemon's own name ("cuda:N", its ordinal)
  std::string device_uuid;        // "GPU-..." (HELLO 3.3 tail); "" for host or older daemons
  std::string device_pci_bus_id;  // likewise
  // Why this process cannot use the daemon's GPU (not visible here, no driver); attaching
  // fails with it. Ok otherwise.
  Status device_status;
};

struct MappingInfo {
  bool attached = false;
  std::uint64_t epoch = 0;         // the pool epoch the mapping reflects
  std::uint64_t latest_epoch = 0;  // the newest epoch any reply carried
  std::size_t mapped_chunks = 0;
  std::size_t mapped_bytes = 0;
  std::byte* base = nullptr;
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

  // A copy: the session's fields (lease, daemon_pid, protocol_minor, boot_epoch) change when
  // the client reconnects; the pool's description never does.
  PoolInfo pool() const;
  const std::string& socket_path() const { return socket_path_; }
  // Reconnections so far (0 for the first session). Lock-free.
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Maps the pool (the first time) or brings the mapping up to the daemon's epoch.
  Status attach();
  MappingInfo mapping_info() const;
  // The address of page `page` in this process (a device address on a CUDA pool).
  // Attaches or re-attaches when the page is not mapped yet. kInvalidArgument beyond the
  // pool's capacity; kNotFound when the daemon's pool has no chunk holding it.
  Result<std::byte*> page_ptr(std::uint32_t page);
  // True when this session may write page `page`: a page of one of its append's write runs
  // or of pf_pages_alloc that it has not sealed, shared or freed since. Lock-cheap.
  bool page_writable(std::uint32_t page) const;
  // kPermissionDenied naming the first of `pages` this session may not write, else ok.
  // `what` names the caller's operation in the message.
  Status check_writable(std::span<const std::uint32_t> pages, std::string_view what) const;
  // True when a store into `page` through this process's mapping faults (SIGSEGV) unless
  // the page is writable: the chunk is guarded (host pool, page size a multiple of the
  // protection unit).
  bool page_guarded(std::uint32_t page) const;
  // Upper bound on the write runs append() can return for n tokens.
  std::size_t max_runs(std::size_t n_tokens) const;

  // Runs one operation of ipc/ops.def: encodes the request message, waits for the reply and
  // decodes it (ipc/messages.h). The daemon's error codes come back unchanged; a reply that
  // does not decode is kProtocol. Blocking; one request at a time per connection.
  // Replies that hand out or take back writable pages update page_writable().
  template <ipc::Op op>
  Result<ipc::ReplyOf<op>> request(ipc::RequestOf<op> message) {
    const std::vector<std::byte> payload = wire::encode(message);
    // Held until the writable pages are updated too, so that ops of several threads on one
    // branch update them in the order the daemon answered.
    std::lock_guard lock(mu_);
    PF_TRY(revive_locked(false));
    PF_TRY(check_current<op>(message));
    bool sent = false;
    Result<Reply> reply = call_locked(ipc::OpTraits<op>::message, payload, 0, &sent);
    if (!reply.is_ok() && lost_) {
      // The daemon went away during this call: reconnect, then send it again unless it may
      // have been applied (sent and mutating; the caller decides).
      PF_TRY(revive_locked(true));
      if (sent && ipc::OpTraits<op>::mutates) return restarted_during(ipc::OpTraits<op>::name);
      PF_TRY(check_current<op>(message));
      reply = call_locked(ipc::OpTraits<op>::message, payload);
    }
    if constexpr (op == ipc::Op::kMerge) {
      // Merge snapshots branch sources, possibly before failing later on: whatever the
      // outcome, their pages may be sealed.
      if (message.from.is_branch()) revoke_branch(message.from.head.branch, false);
      if (message.into.is_branch()) revoke_branch(message.into.head.branch, false);
    }
    PF_TRY(reply.status());
    ipc::ReplyOf<op> out;
    if (Status s = wire::decode(reply->payload, &out, ipc::OpTraits<op>::name.data()); !s.is_ok()) {
      return PF_ERROR(Code::kProtocol, "the daemon's " + std::string(ipc::OpTraits<op>::name) +
                                           " reply does not decode: " + s.message());
    }
    track<op>(message, out);
    if constexpr (op == ipc::Op::kBranchView) {
      // A daemon older than 3.4 sends no ready_pages (the field was reserved: 0) and has
      // every page of a branch resident: all of them are readable.
      if (pool_.protocol_minor < wire::kViewWaitMinor) out.head.ready_pages = out.head.n_pages;
    }
    return out;
  }

 private:
  struct Reply {
    wire::ReplyHeader header;
    std::vector<std::byte> payload;  // after the ReplyHeader
    std::vector<UniqueFd> fds;
  };

  Connection(UniqueFd sock, std::string socket_path);

  // Writable-page bookkeeping of one successful op (the daemon changed nothing otherwise);
  // mu_ held.
  template <ipc::Op op>
  void track(const ipc::RequestOf<op>& request, const ipc::ReplyOf<op>& reply) {
    using ipc::Op;
    if constexpr (op == Op::kAppend) {
      grant_runs(request.head.branch, reply.runs);
    } else if constexpr (op == Op::kPagesAlloc) {
      grant_pages(reply.pages);
    } else if constexpr (op == Op::kCommit) {
      revoke_branch(request.head.branch, true);
    } else if constexpr (op == Op::kTruncate || op == Op::kBranchFree || op == Op::kDetach ||
                         op == Op::kSnapshot) {
      revoke_branch(request.head.branch, false);
    } else if constexpr (op == Op::kFork) {
      if (request.source.is_branch()) revoke_branch(request.source.head.branch, false);
    } else if constexpr (op == Op::kPagesPublish || op == Op::kPagesRelease) {
      revoke_pages(request.pages);
    }
    if constexpr (op == Op::kPagesAlloc) {
      hold_pages(reply.pages);
    } else if constexpr (op == Op::kPagesLookupKeys) {
      if (request.head.hold != 0) hold_pages(reply.pages);
    } else if constexpr (op == Op::kPagesPublish || op == Op::kPagesRelease) {
      unhold_pages(request.pages, op == Op::kPagesPublish);
    }
  }
  // kStale when `message` names a branch of an earlier boot epoch of this client's daemon,
  // or a page held by an earlier session of this client (mu_ held). Nothing is sent.
  template <ipc::Op op>
  Status check_current(const ipc::RequestOf<op>& message) const {
    const std::string_view what = ipc::OpTraits<op>::name;
    if constexpr (requires { message.head.branch; }) PF_TRY(check_id(message.head.branch, what));
    if constexpr (requires { message.source.head.branch; })
      PF_TRY(check_source(message.source, what));
    if constexpr (op == ipc::Op::kMerge) {
      PF_TRY(check_source(message.from, what));
      PF_TRY(check_source(message.into, what));
    }
    if constexpr (op == ipc::Op::kDiff) {
      PF_TRY(check_source(message.a, what));
      PF_TRY(check_source(message.b, what));
    }
    if constexpr (op == ipc::Op::kPagesPublish || op == ipc::Op::kPagesRelease) {
      PF_TRY(check_pages(message.pages, what));
    }
    return Status::ok();
  }
  Status check_source(const msg::Source& source, std::string_view what) const {
    return source.is_branch() ? check_id(source.head.branch, what) : Status::ok();
  }
  Status check_id(std::uint64_t id, std::string_view what) const;
  Status check_pages(std::span<const std::uint32_t> pages, std::string_view what) const;
  void hold_pages(std::span<const std::uint32_t> pages);
  void unhold_pages(std::span<const std::uint32_t> pages, bool all);
  void grant_runs(std::uint64_t branch, std::span<const wire::WriteRunWire> runs);
  void grant_pages(std::span<const std::uint32_t> pages);
  // committed_only: only the branch's full pages (a commit); else every page of it.
  void revoke_branch(std::uint64_t branch, bool committed_only);
  void revoke_pages(std::span<const std::uint32_t> pages);
  // Applies a change of the writable set to the mapping (map_mu_ held).
  void protect_locked(std::span<const std::uint32_t> pages, bool writable);

  // Sends one request and reads its reply (mu_ held). Turns an error reply into its
  // Status; re-attaches when the reply's epoch is new (unless this is kAttach).
  // *sent (when given) tells whether the whole request went out.
  Result<Reply> call_locked(wire::MsgType type, std::span<const std::byte> payload,
                            std::size_t max_fds = 0, bool* sent = nullptr);
  Status attach_locked();
  // Pool shrink (docs/protocol.md "Pool shrink"): unmaps the chunks at indices >=
  // `pool_chunks` (a reply's ReplyHeader count: the daemon released them), so this process
  // stops holding their memory. No round trip. Keeps every chunk that holds a page this
  // session writes or holds (the daemon trims only chunks without live pages; such a page
  // would mean a confused daemon, and unmapping it would fault the engine). Needs mu_.
  Status drop_released_locked(std::uint32_t pool_chunks);
  // Says HELLO on sock_ and reads the daemon's answer (mu_ held); assigns nothing.
  Result<PoolInfo> hello_locked();
  Status broken(Status why);
  // An I/O failure: lost (reconnectable) when the peer hung up, else broken.
  Status io_failed(Status why);
  // Reconnects a lost session (mu_ held): with `wait`, retrying until reconnect_timeout_ms;
  // else one attempt. Ok at once when the session is not lost; kUnavailable when broken.
  Status revive_locked(bool wait);
  // One attempt; *worth_waiting: the failure may pass (no daemon yet, or it went away again).
  Status reconnect_once(bool* worth_waiting);
  Status restarted_during(std::string_view op) const;
  void wait_for_reply() const;

  mutable std::mutex mu_;  // one request at a time; guards sock_, next_id_, broken_, below
  UniqueFd sock_;
  std::string socket_path_;
  ConnectOptions options_;
  std::uint32_t next_id_ = 1;
  std::uint32_t spin_us_ = 0;
  Status broken_;      // ok while the session is usable
  bool lost_ = false;  // broken_ because the daemon went away: reconnect before the next call
  std::set<std::uint32_t> past_epochs_;               // boot epochs of earlier sessions
  std::map<std::uint32_t, std::uint32_t> held_;       // page -> holds of this session
  std::map<std::uint32_t, std::uint32_t> lost_held_;  // page -> boot epoch it was held in
  std::atomic<std::uint64_t> generation_{0};
  PoolInfo pool_;  // session fields change with mu_ and map_mu_ held; read under either

  mutable std::mutex map_mu_;  // guards the fields below (changed only with mu_ held too)
  std::unique_ptr<PoolMapping> mapping_;
  std::unique_ptr<PoolMapping> retired_;  // the previous session's mapping, kept one generation
  std::uint64_t mapped_epoch_ = 0;
  std::uint64_t latest_epoch_ = 0;
  bool stale_ = false;        // the mapping may not match mapped_epoch_: re-attach before use
  ExclusivePages exclusive_;  // the pages this session may write
};

}  // namespace pf::client
