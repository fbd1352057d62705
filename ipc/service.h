// Service: the one object both front ends (Unix socket, HTTP) call. It adds to the Runtime
// what a shared daemon needs: leases, ownership checks, metrics and error logs, and it
// speaks only messages (ipc/messages.h), so no front end reaches the runtime.
//
// DESIGN
//  - One entry point: call<op>(lease, request) for every row of ipc/ops.def. It times the
//    op into OpMetrics, logs kInternal / kDriver / kSystem failures with their file:line
//    trail, and runs handle<op> (service_*.cpp), whichever front end called.
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
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "ipc/metrics.h"
#include "ipc/ops.h"
#include "runtime/ids.h"
#include "runtime/runtime.h"

namespace pf::ipc {

inline constexpr rt::LeaseId kHttpLease = 0;

// Who the daemon is (HELLO, /v1/health, /v1/pool).
struct PoolIdentity {
  std::string backend;
  std::string device;
  std::string version;
  // This start's boot epoch (ipc/boot_epoch.h): the high bits of every lease id here and of
  // every branch id (RuntimeOptions::id_epoch must be the same). 0 in in-process tests.
  std::uint32_t boot_epoch = 0;
  // The device's machine-wide names (vmm::Backend::device_uuid / device_pci_bus_id), sent in
  // HELLO's HelloDevice tail; empty for host memory.
  std::string device_uuid;
  std::string device_pci_bus_id;
};

class Service {
 public:
  // The runtime must outlive the service.
  Service(rt::Runtime& runtime, PoolIdentity identity);
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  const PoolIdentity& identity() const { return identity_; }

  // Runs one operation for `lease` (kHttpLease for HTTP). Never throws on a client's
  // mistake; the returned status is what the client sees.
  template <Op op>
  Result<ReplyOf<op>> call(rt::LeaseId lease, const RequestOf<op>& request) {
    OpTimer timer(metrics_, op);
    Result<ReplyOf<op>> r = handle<op>(lease, request);
    if (!r.is_ok()) log_failure(op, r.status());
    timer.finish(r.is_ok());
    return r;
  }
  // Counts a request that never reached call() (unparseable HTTP body, bad path) as a
  // failed `op`.
  void count_failed(Op op);

  // --- leases ----------------------------------------------------------------------------
  // A new lease id for a client process: (boot epoch << 32) | sequence, never 0, never
  // reused, not even across restarts (runtime/ids.h). kOutOfMemory once the epoch's
  // sequence is used up.
  Result<rt::LeaseId> open_lease(pid_t client_pid);
  // Frees every branch the lease owns, ends its page holds and forgets it; returns how many
  // branches it freed. Idempotent.
  std::size_t end_lease(rt::LeaseId lease);
  std::size_t live_leases() const;

  // The pool's epoch and chunk count now (every socket reply carries them).
  struct PoolEpoch {
    std::uint64_t epoch = 0;
    std::uint32_t chunks = 0;
  };
  PoolEpoch pool_epoch() const;

  // Connected Unix-socket clients (maintained by the socket server, shown in /metrics).
  void client_connected() { counters_.clients.fetch_add(1, std::memory_order_relaxed); }
  void client_disconnected() { counters_.clients.fetch_sub(1, std::memory_order_relaxed); }
  // Protocol violations and refused connections (shown in /metrics).
  void count_protocol_error() { counters_.protocol_errors.fetch_add(1, std::memory_order_relaxed); }
  void count_refused(bool wrong_uid);
  void count_http(int status);

  // GET /metrics: Prometheus text format (ipc/metrics.h renders it).
  std::string metrics_text() const;

 private:
  template <Op op>
  Result<ReplyOf<op>> handle(rt::LeaseId lease, const RequestOf<op>& request);
  void log_failure(Op op, const Status& status) const;
  Status access(rt::LeaseId lease, const rt::Source& source) const;

  rt::Runtime& runtime_;
  PoolIdentity identity_;
  OpMetrics metrics_;

  mutable std::mutex leases_mu_;
  std::map<rt::LeaseId, pid_t> leases_;
  rt::IdSequence lease_ids_;

  DaemonCounters counters_;
};

// Every op's handler, defined in service_session.cpp, service_branches.cpp and
// service_history.cpp.
#define PF_OP(op, ...)                                                     \
  template <>                                                              \
  Result<ReplyOf<Op::k##op>> Service::handle<Op::k##op>(rt::LeaseId lease, \
                                                        const RequestOf<Op::k##op>& request);
#include "ipc/ops.def"
#undef PF_OP

}  // namespace pf::ipc
