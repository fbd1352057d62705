#include "ipc/service.h"

#include <utility>

namespace pf::ipc {

using api::Json;

namespace {

// Records the op's outcome from its result.
template <typename T>
Result<T> timed(OpTimer& t, Result<T> r) {
  t.finish(r.is_ok());
  return r;
}
Status timed(OpTimer& t, Status s) {
  t.finish(s.is_ok());
  return s;
}

}  // namespace

Service::Service(rt::Runtime& runtime, api::PoolIdentity identity)
    : runtime_(runtime), identity_(std::move(identity)) {}

rt::LeaseId Service::open_lease(pid_t client_pid) {
  std::lock_guard lock(leases_mu_);
  const rt::LeaseId lease = next_lease_++;
  leases_.emplace(lease, client_pid);
  leases_opened_.fetch_add(1, std::memory_order_relaxed);
  return lease;
}

std::size_t Service::end_lease(rt::LeaseId lease) {
  if (lease == kHttpLease) return 0;
  {
    std::lock_guard lock(leases_mu_);
    if (leases_.erase(lease) == 0) return 0;
  }
  const std::size_t freed = runtime_.free_owned_by(lease);
  lease_branches_freed_.fetch_add(freed, std::memory_order_relaxed);
  lease_holds_released_.fetch_add(runtime_.release_holds(lease), std::memory_order_relaxed);
  return freed;
}

std::size_t Service::live_leases() const {
  std::lock_guard lock(leases_mu_);
  return leases_.size();
}

void Service::count_refused(bool wrong_uid) {
  (wrong_uid ? refused_uid_ : refused_limit_).fetch_add(1, std::memory_order_relaxed);
}

void Service::count_http(int status) {
  const int cls = status / 100;
  if (cls >= 1 && cls <= 5) http_by_class_[cls].fetch_add(1, std::memory_order_relaxed);
}

Status Service::access(rt::LeaseId lease, const rt::Source& source) const {
  if (const auto* branch = std::get_if<rt::BranchId>(&source)) {
    return runtime_.check_access(*branch, lease);
  }
  return Status::ok();
}

// --- typed operations --------------------------------------------------------------------

Result<rt::NewBranch> Service::create_branch(rt::LeaseId lease, std::span<const rt::Token> tokens) {
  OpTimer t(metrics_, Op::kBranchCreate);
  return timed(t, runtime_.create_branch(tokens, lease));
}

Result<rt::AppendResult> Service::append(rt::LeaseId lease, rt::BranchId branch,
                                         std::span<const rt::Token> tokens) {
  OpTimer t(metrics_, Op::kAppend);
  if (Status s = runtime_.check_access(branch, lease); !s.is_ok()) {
    return timed(t, Result<rt::AppendResult>(std::move(s)));
  }
  Result<rt::AppendResult> r = runtime_.append(branch, tokens);
  if (r.is_ok() && r->copied_page) cow_pages_.fetch_add(1, std::memory_order_relaxed);
  return timed(t, std::move(r));
}

Status Service::commit(rt::LeaseId lease, rt::BranchId branch) {
  OpTimer t(metrics_, Op::kCommit);
  if (Status s = runtime_.check_access(branch, lease); !s.is_ok()) return timed(t, s);
  return timed(t, runtime_.commit(branch));
}

Status Service::truncate(rt::LeaseId lease, rt::BranchId branch, std::uint64_t n_tokens) {
  OpTimer t(metrics_, Op::kTruncate);
  if (Status s = runtime_.check_access(branch, lease); !s.is_ok()) return timed(t, s);
  return timed(t, runtime_.truncate(branch, n_tokens));
}

Status Service::free_branch(rt::LeaseId lease, rt::BranchId branch) {
  OpTimer t(metrics_, Op::kBranchFree);
  if (Status s = runtime_.check_access(branch, lease); !s.is_ok()) return timed(t, s);
  return timed(t, runtime_.free_branch(branch));
}

Status Service::detach(rt::LeaseId lease, rt::BranchId branch) {
  OpTimer t(metrics_, Op::kDetach);
  if (Status s = runtime_.check_access(branch, lease); !s.is_ok()) return timed(t, s);
  return timed(t, runtime_.set_owner(branch, 0));
}

Result<rt::BranchInfo> Service::branch_info(rt::BranchId branch) {
  OpTimer t(metrics_, Op::kBranchInfo);
  return timed(t, runtime_.branch_info(branch));
}

Result<rt::BranchView> Service::branch_view(rt::BranchId branch) {
  OpTimer t(metrics_, Op::kBranchView);
  return timed(t, runtime_.branch_view(branch));
}

Result<rt::SnapshotInfo> Service::snapshot(rt::LeaseId lease, rt::BranchId branch,
                                           std::string name) {
  OpTimer t(metrics_, Op::kSnapshot);
  if (Status s = runtime_.check_access(branch, lease); !s.is_ok()) {
    return timed(t, Result<rt::SnapshotInfo>(std::move(s)));
  }
  return timed(t, runtime_.snapshot(branch, std::move(name)));
}

Result<rt::ForkResult> Service::fork(rt::LeaseId lease, const rt::Source& source, std::size_t n) {
  OpTimer t(metrics_, Op::kFork);
  // Fork of a branch freezes (seals) its tail: a change to that branch, so the owner's.
  if (Status s = access(lease, source); !s.is_ok()) {
    return timed(t, Result<rt::ForkResult>(std::move(s)));
  }
  return timed(t, runtime_.fork(source, n, lease));
}

Result<CheckoutAnswer> Service::checkout(rt::LeaseId lease, std::string_view cid_or_ref) {
  OpTimer t(metrics_, Op::kCheckout);
  Result<rt::BranchId> branch = runtime_.checkout(cid_or_ref, lease);
  if (!branch.is_ok()) return timed(t, Result<CheckoutAnswer>(branch.take_status()));
  // A checked-out branch names exactly the snapshot it came from as its parent; reading it
  // back (rather than resolving the ref again) is immune to a ref moving meanwhile.
  Result<rt::BranchInfo> info = runtime_.branch_info(*branch);
  if (!info.is_ok() || info->parents.size() != 1) {
    // Only a concurrent free by this very lease can get here; report what happened.
    return timed(t, Result<CheckoutAnswer>(
                        info.is_ok() ? PF_ERROR(Code::kInternal, "checkout left no parent CID")
                                     : info.take_status()));
  }
  return timed(t, Result<CheckoutAnswer>(CheckoutAnswer{*branch, info->parents.front()}));
}

// --- keyed pages ----------------------------------------------------------------------------

Result<std::vector<rt::PageId>> Service::lookup_keys(rt::LeaseId lease,
                                                     std::span<const rt::Sha256> keys, bool hold) {
  OpTimer t(metrics_, Op::kPagesLookupKeys);
  return timed(t, runtime_.lookup_keys(keys, hold, lease));
}

Result<std::vector<rt::PageId>> Service::alloc_pages(rt::LeaseId lease, std::size_t n) {
  OpTimer t(metrics_, Op::kPagesAlloc);
  return timed(t, runtime_.alloc_pages(n, lease));
}

Result<std::size_t> Service::publish_pages(rt::LeaseId lease, std::span<const rt::Sha256> keys,
                                           std::span<const rt::PageId> pages,
                                           const rt::Sha256* parent_key) {
  OpTimer t(metrics_, Op::kPagesPublish);
  return timed(t, runtime_.publish_pages(keys, pages, parent_key, lease));
}

Status Service::release_pages(rt::LeaseId lease, std::span<const rt::PageId> pages) {
  OpTimer t(metrics_, Op::kPagesRelease);
  return timed(t, runtime_.release_pages(pages, lease));
}

// --- JSON operations ------------------------------------------------------------------------

Result<std::string> Service::call_text(Op op, rt::LeaseId lease, std::string_view request) {
  Result<Json> body = api::parse_body(request);
  if (!body.is_ok()) {
    // Counted under the op it was meant for, as a failure.
    OpTimer t(metrics_, op);
    return body.take_status();
  }
  return call(op, lease, *body);
}

Result<std::string> Service::call(Op op, rt::LeaseId lease, const Json& request) {
  switch (op) {
    // Ops with a typed form time themselves.
    case Op::kBranchCreate:
    case Op::kBranchInfo:
    case Op::kBranchFree:
    case Op::kSnapshot:
    case Op::kFork:
    case Op::kCheckout:
      return dispatch(op, lease, request);
    default:
      break;
  }
  OpTimer t(metrics_, op);
  return timed(t, dispatch(op, lease, request));
}

Result<std::string> Service::dispatch(Op op, rt::LeaseId lease, const Json& req) {
  switch (op) {
    case Op::kHealth:
      return api::dump(api::health_json(identity_));

    case Op::kPool: {
      // Epoch first: the stats then describe a pool at least that new.
      const std::uint64_t epoch = runtime_.pool_layout().epoch;
      return api::dump(
          api::pool_json(identity_, runtime_.geometry(), runtime_.pool_stats(), epoch));
    }

    case Op::kBranchCreate: {
      PF_ASSIGN_OR_RETURN(std::vector<rt::Token> tokens, api::get_opt_tokens(req, "tokens"));
      PF_ASSIGN_OR_RETURN(rt::NewBranch b, create_branch(lease, tokens));
      return api::dump(api::new_branch_json(b));
    }

    case Op::kBranchInfo: {
      PF_ASSIGN_OR_RETURN(std::uint64_t id, api::get_u64(req, "branch"));
      PF_ASSIGN_OR_RETURN(rt::BranchInfo info, branch_info(rt::BranchId{id}));
      return api::dump(api::branch_json(info));
    }

    case Op::kBranches: {
      Json list = Json::array();
      for (rt::BranchId id : runtime_.branches()) {
        // A branch freed between the listing and this lookup is simply left out.
        if (Result<rt::BranchInfo> info = runtime_.branch_info(id); info.is_ok()) {
          list.push_back(api::branch_json(*info));
        }
      }
      return api::dump(Json{{"branches", std::move(list)}});
    }

    case Op::kBranchFree: {
      PF_ASSIGN_OR_RETURN(std::uint64_t id, api::get_u64(req, "branch"));
      PF_TRY(free_branch(lease, rt::BranchId{id}));
      return std::string();
    }

    case Op::kSnapshot: {
      PF_ASSIGN_OR_RETURN(std::uint64_t id, api::get_u64(req, "branch"));
      PF_ASSIGN_OR_RETURN(std::optional<std::string> name, api::get_opt_string(req, "name"));
      PF_ASSIGN_OR_RETURN(rt::SnapshotInfo s,
                          snapshot(lease, rt::BranchId{id}, name.value_or(std::string())));
      return api::dump(api::snapshot_json(s));
    }

    case Op::kFork: {
      PF_ASSIGN_OR_RETURN(api::ForkRequest f, api::get_fork_request(req));
      PF_ASSIGN_OR_RETURN(rt::ForkResult r, fork(lease, f.source, f.n));
      return api::dump(api::fork_json(r));
    }

    case Op::kCheckout: {
      PF_ASSIGN_OR_RETURN(std::string cid, api::get_string(req, "cid"));
      PF_ASSIGN_OR_RETURN(CheckoutAnswer a, checkout(lease, cid));
      return api::dump(api::checkout_json(a.branch, a.cid));
    }

    case Op::kMerge: {
      PF_ASSIGN_OR_RETURN(rt::Source from, api::get_source(req, "from"));
      PF_ASSIGN_OR_RETURN(rt::Source into, api::get_source(req, "into"));
      // Merge snapshots branch sources: a change to them, so their owner's.
      PF_TRY(access(lease, from));
      PF_TRY(access(lease, into));
      PF_ASSIGN_OR_RETURN(rt::MergeResult m, runtime_.merge(from, into, lease));
      return api::dump(api::merge_json(m));
    }

    case Op::kDiff: {
      PF_ASSIGN_OR_RETURN(rt::Source a, api::get_source(req, "a"));
      PF_ASSIGN_OR_RETURN(rt::Source b, api::get_source(req, "b"));
      PF_ASSIGN_OR_RETURN(rt::DiffResult d, runtime_.diff(a, b));
      return api::dump(api::diff_json(d));
    }

    case Op::kLog: {
      PF_ASSIGN_OR_RETURN(std::string cid, api::get_string(req, "cid"));
      PF_ASSIGN_OR_RETURN(std::vector<rt::LogEntry> entries, runtime_.log(cid));
      return api::dump(api::log_json(entries));
    }

    case Op::kManifest: {
      PF_ASSIGN_OR_RETURN(std::string cid, api::get_string(req, "cid"));
      // The canonical bytes themselves: a client can check them against the CID.
      return runtime_.manifest(cid);
    }

    case Op::kSnapshots: {
      Json list = Json::array();
      for (const rt::SnapshotInfo& s : runtime_.snapshots()) {
        list.push_back(api::snapshot_entry_json(s));
      }
      return api::dump(Json{{"snapshots", std::move(list)}});
    }

    case Op::kUnpin: {
      PF_ASSIGN_OR_RETURN(std::string cid, api::get_string(req, "cid"));
      PF_TRY(runtime_.unpin(cid));
      return std::string();
    }

    case Op::kRefSet: {
      PF_ASSIGN_OR_RETURN(std::string name, api::get_string(req, "name"));
      PF_ASSIGN_OR_RETURN(std::string cid, api::get_string(req, "cid"));
      PF_TRY(runtime_.set_ref(name, cid));
      PF_ASSIGN_OR_RETURN(std::string target, runtime_.get_ref(name));
      return api::dump(api::ref_json(name, target));
    }

    case Op::kRefGet: {
      PF_ASSIGN_OR_RETURN(std::string name, api::get_string(req, "name"));
      PF_ASSIGN_OR_RETURN(std::string target, runtime_.get_ref(name));
      return api::dump(api::ref_json(name, target));
    }

    case Op::kRefDelete: {
      PF_ASSIGN_OR_RETURN(std::string name, api::get_string(req, "name"));
      PF_TRY(runtime_.delete_ref(name));
      return std::string();
    }

    case Op::kRefs: {
      Json list = Json::array();
      for (const rt::RefEntry& r : runtime_.refs()) list.push_back(api::ref_json(r.name, r.cid));
      return api::dump(Json{{"refs", std::move(list)}});
    }

    case Op::kGc: {
      PF_ASSIGN_OR_RETURN(bool drop_cache, api::get_opt_bool(req, "drop_cache", false));
      return api::dump(api::gc_json(runtime_.gc(drop_cache)));
    }

    default:
      return PF_ERROR(Code::kInvalidArgument,
                      "operation '" + std::string(op_name(op)) + "' has no JSON form");
  }
}

// --- metrics ---------------------------------------------------------------------------------

std::string Service::metrics_text() {
  const rt::PoolStats s = runtime_.pool_stats();
  const rt::PoolLayout layout = runtime_.pool_layout();
  std::string out;
  out.reserve(32 << 10);

  metric_header(&out, "processfork_pages", "gauge",
                "Pool pages by state (shared and cached are subsets of sealed; free counts "
                "unmapped capacity too).");
  metric_line(&out, "processfork_pages", "state=\"free\"", std::uint64_t{s.free_pages});
  metric_line(&out, "processfork_pages", "state=\"exclusive\"", std::uint64_t{s.exclusive_pages});
  metric_line(&out, "processfork_pages", "state=\"sealed\"", std::uint64_t{s.sealed_pages});
  metric_line(&out, "processfork_pages", "state=\"shared\"", std::uint64_t{s.shared_pages});
  metric_line(&out, "processfork_pages", "state=\"cached\"", std::uint64_t{s.cached_pages});
  metric_header(&out, "processfork_pool_capacity_pages", "gauge", "Pages the pool may hold.");
  metric_line(&out, "processfork_pool_capacity_pages", "", std::uint64_t{s.capacity_pages});
  metric_header(&out, "processfork_pool_used_pages", "gauge", "Pages not free.");
  metric_line(&out, "processfork_pool_used_pages", "", std::uint64_t{s.used_pages});
  metric_header(&out, "processfork_pool_mapped_pages", "gauge",
                "Pages inside the chunks mapped now.");
  metric_line(&out, "processfork_pool_mapped_pages", "", std::uint64_t{s.mapped_pages});
  metric_header(&out, "processfork_pool_chunks", "gauge", "Physical chunks mapped.");
  metric_line(&out, "processfork_pool_chunks", "", std::uint64_t{s.chunks});
  metric_header(&out, "processfork_pool_epoch", "gauge",
                "Changes whenever the set of mapped chunks changes.");
  metric_line(&out, "processfork_pool_epoch", "", std::uint64_t{layout.epoch});
  metric_header(&out, "processfork_page_bytes", "gauge", "Bytes per page.");
  metric_line(&out, "processfork_page_bytes", "", std::uint64_t{s.page_bytes});
  metric_header(&out, "processfork_branches", "gauge", "Live branches.");
  metric_line(&out, "processfork_branches", "", std::uint64_t{s.branches});
  metric_header(&out, "processfork_snapshots", "gauge", "Pinned snapshots.");
  metric_line(&out, "processfork_snapshots", "", std::uint64_t{s.snapshots});
  metric_header(&out, "processfork_prefix_index_nodes", "gauge", "Prefix index nodes.");
  metric_line(&out, "processfork_prefix_index_nodes", "", std::uint64_t{s.index_nodes});

  metric_header(&out, "processfork_cow_copied_pages_total", "counter",
                "Pages copied by copy-on-write appends.");
  const std::uint64_t cow = cow_pages_.load(std::memory_order_relaxed);
  metric_line(&out, "processfork_cow_copied_pages_total", "", cow);
  metric_header(&out, "processfork_cow_copied_bytes_total", "counter",
                "Bytes copied by copy-on-write appends (the only page copies there are).");
  metric_line(&out, "processfork_cow_copied_bytes_total", "", cow * s.page_bytes);

  metric_header(&out, "processfork_clients_connected", "gauge",
                "Unix-socket clients connected now.");
  metric_line(&out, "processfork_clients_connected", "",
              static_cast<std::uint64_t>(std::max<std::int64_t>(0, clients())));
  metric_header(&out, "processfork_leases_active", "gauge", "Leases held by live connections.");
  metric_line(&out, "processfork_leases_active", "", std::uint64_t{live_leases()});
  metric_header(&out, "processfork_leases_total", "counter", "Leases granted.");
  metric_line(&out, "processfork_leases_total", "", leases_opened_.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_lease_branches_freed_total", "counter",
                "Branches freed because their lease's connection ended.");
  metric_line(&out, "processfork_lease_branches_freed_total", "",
              lease_branches_freed_.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_lease_page_holds_released_total", "counter",
                "Keyed-page holds ended because their lease's connection ended.");
  metric_line(&out, "processfork_lease_page_holds_released_total", "",
              lease_holds_released_.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_protocol_errors_total", "counter",
                "Unix-socket protocol violations (each answered or the connection dropped).");
  metric_line(&out, "processfork_protocol_errors_total", "",
              protocol_errors_.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_connections_refused_total", "counter",
                "Unix-socket connections refused, by reason.");
  metric_line(&out, "processfork_connections_refused_total", "reason=\"uid\"",
              refused_uid_.load(std::memory_order_relaxed));
  metric_line(&out, "processfork_connections_refused_total", "reason=\"limit\"",
              refused_limit_.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_http_requests_total", "counter",
                "HTTP requests answered, by status class.");
  for (int cls = 1; cls <= 5; ++cls) {
    metric_line(&out, "processfork_http_requests_total", "code=\"" + std::to_string(cls) + "xx\"",
                http_by_class_[cls].load(std::memory_order_relaxed));
  }
  metrics_.render(&out);
  return out;
}

}  // namespace pf::ipc
