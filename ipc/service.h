// Service: the one object both front ends (Unix socket, HTTP) call. It adds to the Runtime
// what a shared daemon needs: leases, ownership checks, metrics, and the JSON shapes of
// DESIGN §6 (ipc/api_json.h).
//
// DESIGN
//  - Leases: every Unix-socket connection opens one (open_lease) and ends it when the
//    connection ends for any reason (end_lease frees every branch the lease still owns and
//    ends every page hold it still has: a crashed client leaks nothing).
//    HTTP requests act as lease 0 (kHttpLease): what they create is unowned and lives until
//    deleted.
//  - Ownership: every operation that changes a branch or reads it for a change (append,
//    commit, truncate, free, detach, snapshot, fork of a branch, merge of a branch) first
//    asks Runtime::check_access: a branch owned by another lease is kConflict (HTTP 409).
//    Read-only operations (view, info, diff) may look at any branch. Ownership only changes
//    through its owner (detach) or when the owner's lease ends, so the check-then-act gap
//    cannot let a foreign lease in.
//  - Locking: the Runtime serializes itself with one mutex; the Service adds only a small
//    mutex around the lease table and lock-free counters, so it never holds a lock of its
//    own across a runtime call.
//  - Metrics: every public operation is timed into OpMetrics under its Op, whichever front
//    end called it.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/api_json.h"
#include "ipc/metrics.h"
#include "runtime/runtime.h"
#include "vmm/status.h"

namespace pf::ipc {

inline constexpr rt::LeaseId kHttpLease = 0;

struct CheckoutAnswer {
  rt::BranchId branch;
  std::string cid;  // the snapshot checked out (a ref resolved to its CID)
};

class Service {
 public:
  // The runtime must outlive the service.
  Service(rt::Runtime& runtime, api::PoolIdentity identity);
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  rt::Runtime& runtime() const { return runtime_; }
  const api::PoolIdentity& identity() const { return identity_; }
  OpMetrics& metrics() { return metrics_; }

  // --- leases ----------------------------------------------------------------------------
  // A new lease id (never 0, never reused) for a client process.
  rt::LeaseId open_lease(pid_t client_pid);
  // Frees every branch the lease owns, ends its page holds and forgets it; returns how many
  // branches it freed. Idempotent.
  std::size_t end_lease(rt::LeaseId lease);
  std::size_t live_leases() const;

  // Connected Unix-socket clients (maintained by the socket server, shown in /metrics).
  void client_connected() { clients_.fetch_add(1, std::memory_order_relaxed); }
  void client_disconnected() { clients_.fetch_sub(1, std::memory_order_relaxed); }
  std::int64_t clients() const { return clients_.load(std::memory_order_relaxed); }
  // Protocol violations and refused connections (shown in /metrics).
  void count_protocol_error() { protocol_errors_.fetch_add(1, std::memory_order_relaxed); }
  void count_refused(bool wrong_uid);
  void count_http(int status);

  // --- typed operations (the Unix socket's fast path; HTTP goes through call()) -----------
  Result<rt::NewBranch> create_branch(rt::LeaseId lease, std::span<const rt::Token> tokens);
  Result<rt::AppendResult> append(rt::LeaseId lease, rt::BranchId branch,
                                  std::span<const rt::Token> tokens);
  Status commit(rt::LeaseId lease, rt::BranchId branch);
  Status truncate(rt::LeaseId lease, rt::BranchId branch, std::uint64_t n_tokens);
  Status free_branch(rt::LeaseId lease, rt::BranchId branch);
  Status detach(rt::LeaseId lease, rt::BranchId branch);
  Result<rt::BranchInfo> branch_info(rt::BranchId branch);
  Result<rt::BranchView> branch_view(rt::BranchId branch);
  Result<rt::SnapshotInfo> snapshot(rt::LeaseId lease, rt::BranchId branch, std::string name);
  Result<rt::ForkResult> fork(rt::LeaseId lease, const rt::Source& source, std::size_t n);
  Result<CheckoutAnswer> checkout(rt::LeaseId lease, std::string_view cid_or_ref);

  // Keyed pages (protocol 1.2; rt::Runtime's keyed-page calls on behalf of `lease`).
  Result<std::vector<rt::PageId>> lookup_keys(rt::LeaseId lease, std::span<const rt::Sha256> keys,
                                              bool hold);
  Result<std::vector<rt::PageId>> alloc_pages(rt::LeaseId lease, std::size_t n);
  Result<std::size_t> publish_pages(rt::LeaseId lease, std::span<const rt::Sha256> keys,
                                    std::span<const rt::PageId> pages,
                                    const rt::Sha256* parent_key);
  Status release_pages(rt::LeaseId lease, std::span<const rt::PageId> pages);

  // --- JSON operations (every DESIGN §6 shape; docs/http.md) -----------------------------
  // Runs `op` with a JSON request object and returns the answer's bytes: "" for operations
  // whose HTTP answer is 204 (branch_free, unpin, ref_delete). Ops without a JSON form
  // (hello, attach, append, commit, truncate, detach, branch_view) are kInvalidArgument.
  Result<std::string> call(Op op, rt::LeaseId lease, const api::Json& request);
  // The same with the request as text (the Unix socket's JSON ops); empty text is {}.
  Result<std::string> call_text(Op op, rt::LeaseId lease, std::string_view request);

  // GET /metrics: Prometheus text format.
  std::string metrics_text();

 private:
  Status access(rt::LeaseId lease, const rt::Source& source) const;
  Result<std::string> dispatch(Op op, rt::LeaseId lease, const api::Json& request);

  rt::Runtime& runtime_;
  api::PoolIdentity identity_;
  OpMetrics metrics_;

  mutable std::mutex leases_mu_;
  std::map<rt::LeaseId, pid_t> leases_;
  rt::LeaseId next_lease_ = 1;

  std::atomic<std::int64_t> clients_{0};
  std::atomic<std::uint64_t> leases_opened_{0};
  std::atomic<std::uint64_t> lease_branches_freed_{0};
  std::atomic<std::uint64_t> lease_holds_released_{0};
  std::atomic<std::uint64_t> cow_pages_{0};
  std::atomic<std::uint64_t> protocol_errors_{0};
  std::atomic<std::uint64_t> refused_uid_{0};
  std::atomic<std::uint64_t> refused_limit_{0};
  std::array<std::atomic<std::uint64_t>, 6> http_by_class_{};  // index: status / 100
};

}  // namespace pf::ipc
