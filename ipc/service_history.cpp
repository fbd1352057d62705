// Service handlers of snapshots and history: snapshot, fork, checkout, merge, diff, log,
// manifest, the snapshot list, unpin and refs.
#include "ipc/service.h"

namespace pf::ipc {
namespace {

// A message's source as the runtime names it: kInvalidArgument for an unknown kind.
Result<rt::Source> runtime_source(const msg::Source& source) {
  switch (source.head.kind) {
    case 0:
      return rt::Source(rt::BranchId{source.head.branch});
    case 1:
      return rt::Source(source.name);
    default:
      return PF_ERROR(Code::kInvalidArgument, "source kind " + std::to_string(source.head.kind) +
                                                  " is neither 0 (branch) nor 1 (CID or ref)");
  }
}

msg::RefEntry ref_message(std::string name, std::string cid) {
  msg::RefEntry out;
  out.name = std::move(name);
  out.cid = std::move(cid);
  return out;
}

}  // namespace

template <>
Result<msg::SnapshotAnswer> Service::handle<Op::kSnapshot>(rt::LeaseId lease,
                                                           const msg::Snapshot& request) {
  const rt::BranchId branch{request.head.branch};
  PF_TRY(runtime_.check_access(branch, lease));
  PF_ASSIGN_OR_RETURN(rt::SnapshotInfo s, runtime_.snapshot(branch, request.name));
  msg::SnapshotAnswer out;
  msg::set_cstr(out.head.cid, s.cid);
  out.head.n_tokens = s.n_tokens;
  out.head.n_pages = s.n_pages;
  out.head.created = s.created ? 1 : 0;
  out.name = std::move(s.name);
  return out;
}

template <>
Result<msg::Forked> Service::handle<Op::kFork>(rt::LeaseId lease, const msg::Fork& request) {
  PF_ASSIGN_OR_RETURN(rt::Source source, runtime_source(request.source));
  const std::uint32_t n = request.head.n;
  if (n < 1 || n > rt::kMaxForkChildren) {
    return PF_ERROR(
        Code::kInvalidArgument,
        "n must be in 1.." + std::to_string(rt::kMaxForkChildren) + ", got " + std::to_string(n));
  }
  // Fork of a branch freezes (seals) its tail: a change to that branch, so the owner's.
  PF_TRY(access(lease, source));
  PF_ASSIGN_OR_RETURN(rt::ForkResult f, runtime_.fork(source, n, lease));
  msg::Forked out;
  msg::set_cstr(out.head.source, f.source);
  out.head.n_tokens = f.n_tokens;
  out.branches.reserve(f.branches.size());
  for (rt::BranchId b : f.branches) out.branches.push_back(b.value);
  return out;
}

template <>
Result<msg::CheckedOut> Service::handle<Op::kCheckout>(rt::LeaseId lease,
                                                       const msg::Named& request) {
  PF_ASSIGN_OR_RETURN(rt::BranchId branch, runtime_.checkout(request.name, lease));
  // A checked-out branch names exactly the snapshot it came from as its parent; reading it
  // back (rather than resolving the ref again) is immune to a ref moving meanwhile.
  PF_ASSIGN_OR_RETURN(rt::BranchInfo info, runtime_.branch_info(branch));
  if (info.parents.size() != 1) return PF_ERROR(Code::kInternal, "checkout left no parent CID");
  msg::CheckedOut out;
  out.head.branch = branch.value;
  msg::set_cstr(out.head.cid, info.parents.front());
  out.head.n_tokens = info.n_tokens;
  return out;
}

template <>
Result<msg::Merged> Service::handle<Op::kMerge>(rt::LeaseId lease, const msg::Merge& request) {
  PF_ASSIGN_OR_RETURN(rt::Source from, runtime_source(request.from));
  PF_ASSIGN_OR_RETURN(rt::Source into, runtime_source(request.into));
  // Merge snapshots branch sources: a change to them, so their owner's.
  PF_TRY(access(lease, from));
  PF_TRY(access(lease, into));
  PF_ASSIGN_OR_RETURN(rt::MergeResult m, runtime_.merge(from, into, lease));
  msg::Merged out;
  out.fast_forward = m.outcome == rt::MergeOutcome::kFastForward ? 1 : 0;
  out.branch = m.branch.value;
  // The new branch belongs to this lease; only it can free the branch meanwhile.
  if (Result<rt::BranchInfo> info = runtime_.branch_info(m.branch); info.is_ok()) {
    out.n_tokens = info->n_tokens;
  }
  out.cid = std::move(m.cid);
  out.base = std::move(m.base);
  out.common_tokens = m.common_tokens;
  out.recompute_tokens = std::move(m.recompute_tokens);
  return out;
}

template <>
Result<msg::Diffed> Service::handle<Op::kDiff>(rt::LeaseId, const msg::Diff& request) {
  PF_ASSIGN_OR_RETURN(rt::Source a, runtime_source(request.a));
  PF_ASSIGN_OR_RETURN(rt::Source b, runtime_source(request.b));
  PF_ASSIGN_OR_RETURN(rt::DiffResult d, runtime_.diff(a, b));
  msg::Diffed out;
  out.common_tokens = d.common_tokens;
  out.shared_pages = std::move(d.shared_pages);
  out.a_only_pages = std::move(d.a_only_pages);
  out.b_only_pages = std::move(d.b_only_pages);
  return out;
}

template <>
Result<msg::Log> Service::handle<Op::kLog>(rt::LeaseId, const msg::Named& request) {
  PF_ASSIGN_OR_RETURN(std::vector<rt::LogEntry> entries, runtime_.log(request.name));
  msg::Log out;
  out.entries.reserve(entries.size());
  for (rt::LogEntry& e : entries) {
    msg::LogEntry m;
    m.cid = std::move(e.cid);
    m.name = std::move(e.name);
    m.parents = std::move(e.parents);
    m.n_tokens = e.n_tokens;
    m.known = e.known ? 1 : 0;
    out.entries.push_back(std::move(m));
  }
  return out;
}

template <>
Result<msg::Manifest> Service::handle<Op::kManifest>(rt::LeaseId, const msg::Named& request) {
  // The canonical bytes themselves: a client can check them against the CID.
  PF_ASSIGN_OR_RETURN(std::string canonical, runtime_.manifest(request.name));
  return msg::Manifest{std::move(canonical)};
}

template <>
Result<msg::Snapshots> Service::handle<Op::kSnapshots>(rt::LeaseId, const msg::Empty&) {
  msg::Snapshots out;
  for (rt::SnapshotInfo& s : runtime_.snapshots()) {
    msg::SnapshotEntry e;
    e.cid = std::move(s.cid);
    e.name = std::move(s.name);
    e.n_tokens = s.n_tokens;
    e.n_pages = s.n_pages;
    e.parents = std::move(s.parents);
    out.snapshots.push_back(std::move(e));
  }
  return out;
}

template <>
Result<msg::Empty> Service::handle<Op::kUnpin>(rt::LeaseId, const msg::Named& request) {
  PF_TRY(runtime_.unpin(request.name));
  return msg::Empty{};
}

template <>
Result<msg::Empty> Service::handle<Op::kSync>(rt::LeaseId, const msg::Named& request) {
  // Blocks this connection's thread (not the runtime) until the snapshot is durable.
  PF_TRY(runtime_.wait_durable(request.name));
  return msg::Empty{};
}

template <>
Result<msg::RefEntry> Service::handle<Op::kRefSet>(rt::LeaseId, const msg::RefSet& request) {
  PF_TRY(runtime_.set_ref(request.name, request.cid));
  PF_ASSIGN_OR_RETURN(std::string target, runtime_.get_ref(request.name));
  return ref_message(request.name, std::move(target));
}

template <>
Result<msg::RefEntry> Service::handle<Op::kRefGet>(rt::LeaseId, const msg::Named& request) {
  PF_ASSIGN_OR_RETURN(std::string target, runtime_.get_ref(request.name));
  return ref_message(request.name, std::move(target));
}

template <>
Result<msg::Empty> Service::handle<Op::kRefDelete>(rt::LeaseId, const msg::Named& request) {
  PF_TRY(runtime_.delete_ref(request.name));
  return msg::Empty{};
}

template <>
Result<msg::Refs> Service::handle<Op::kRefs>(rt::LeaseId, const msg::Empty&) {
  msg::Refs out;
  for (rt::RefEntry& r : runtime_.refs()) {
    out.refs.push_back(ref_message(std::move(r.name), std::move(r.cid)));
  }
  return out;
}

}  // namespace pf::ipc
