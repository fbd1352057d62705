// Service (service.h): leases, counters, failure logs. The op handlers live in
// service_session.cpp, service_branches.cpp and service_history.cpp.
#include "ipc/service.h"

#include <utility>

#include "base/log.h"

namespace pf::ipc {

Service::Service(rt::Runtime& runtime, PoolIdentity identity)
    : runtime_(runtime), identity_(std::move(identity)), lease_ids_(identity_.boot_epoch) {}

void Service::log_failure(Op op, const Status& status) const {
  // A client's mistake is the client's to read; these are ours, and an operator needs the
  // trail to find where they came from.
  const Code code = status.code();
  if (code == Code::kInternal || code == Code::kDriver || code == Code::kSystem) {
    log_line(std::string(op_name(op)) + " failed: " + status.to_string());
  }
}

void Service::count_failed(Op op) {
  OpTimer timer(metrics_, op);
  timer.finish(false);
}

Result<rt::LeaseId> Service::open_lease(pid_t client_pid) {
  std::lock_guard lock(leases_mu_);
  PF_ASSIGN_OR_RETURN(const rt::LeaseId lease, lease_ids_.next());
  leases_.emplace(lease, client_pid);
  counters_.leases_opened.fetch_add(1, std::memory_order_relaxed);
  return lease;
}

std::size_t Service::end_lease(rt::LeaseId lease) {
  if (lease == kHttpLease) return 0;
  {
    std::lock_guard lock(leases_mu_);
    if (leases_.erase(lease) == 0) return 0;
  }
  const std::size_t freed = runtime_.free_owned_by(lease);
  counters_.lease_branches_freed.fetch_add(freed, std::memory_order_relaxed);
  counters_.lease_holds_released.fetch_add(runtime_.release_holds(lease),
                                           std::memory_order_relaxed);
  return freed;
}

std::size_t Service::live_leases() const {
  std::lock_guard lock(leases_mu_);
  return leases_.size();
}

Service::PoolEpoch Service::pool_epoch() const {
  const rt::PoolLayout layout = runtime_.pool_layout();
  return PoolEpoch{layout.epoch, static_cast<std::uint32_t>(layout.chunk_serials.size())};
}

void Service::count_refused(bool wrong_uid) {
  (wrong_uid ? counters_.refused_uid : counters_.refused_limit)
      .fetch_add(1, std::memory_order_relaxed);
}

void Service::count_http(int status) {
  const int cls = status / 100;
  if (cls >= 1 && cls <= 5) counters_.http_by_class[cls].fetch_add(1, std::memory_order_relaxed);
}

Status Service::access(rt::LeaseId lease, const rt::Source& source) const {
  if (const auto* branch = std::get_if<rt::BranchId>(&source)) {
    return runtime_.check_access(*branch, lease);
  }
  return Status::ok();
}

std::string Service::metrics_text() const {
  const rt::PoolStats stats = runtime_.pool_stats();
  const rt::PoolLayout layout = runtime_.pool_layout();
  std::string text = prometheus_text(stats, layout.epoch, identity_.boot_epoch, live_leases(),
                                     counters_, metrics_);
  append_store_metrics(&text, runtime_.store_status());
  return text;
}

}  // namespace pf::ipc
