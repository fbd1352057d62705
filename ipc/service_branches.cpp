// Service handlers of branches and keyed pages: create, append, commit, truncate, free,
// detach, view, info, listing, and the keyed-page calls of protocol 1.2.
#include <algorithm>
#include <cstring>

#include "ipc/service.h"

namespace pf::ipc {
namespace {

Status check_flag(std::uint8_t v, const char* what) {
  if (v > 1) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::string(what) + " must be 0 or 1, got " + std::to_string(v));
  }
  return Status::ok();
}

msg::BranchInfo info_message(const rt::BranchInfo& info) {
  msg::BranchInfo out;
  out.branch = info.id.value;
  out.owner = info.owner;
  out.n_tokens = info.n_tokens;
  out.n_pages = info.n_pages;
  out.fill_in_last_page = info.fill_in_last_page;
  out.parents = info.parents;
  out.ns = info.ns;
  return out;
}

msg::Pages pages_message(std::vector<rt::PageId> pages) {
  msg::Pages out;
  out.pages = std::move(pages);
  return out;
}

std::span<const rt::Sha256> as_keys(const std::vector<wire::Key>& keys) {
  return {reinterpret_cast<const rt::Sha256*>(keys.data()), keys.size()};
}

// An absent namespace is the default one (a 3.0 request, or a 3.1 client that left it out).
rt::Namespace namespace_of(const std::optional<wire::Namespace>& ns) {
  return ns.value_or(rt::kDefaultNamespace);
}

}  // namespace

template <>
Result<msg::NewBranch> Service::handle<Op::kBranchCreate>(rt::LeaseId lease,
                                                          const msg::BranchCreate& request) {
  PF_ASSIGN_OR_RETURN(rt::NewBranch b,
                      runtime_.create_branch(request.tokens, lease, namespace_of(request.ns)));
  msg::NewBranch out;
  out.head.branch = b.id.value;
  out.head.n_tokens = b.n_tokens;
  out.head.reused_tokens = b.reused_tokens;
  return out;
}

template <>
Result<msg::Appended> Service::handle<Op::kAppend>(rt::LeaseId lease, const msg::Append& request) {
  const rt::BranchId branch{request.head.branch};
  PF_TRY(runtime_.check_access(branch, lease));
  PF_ASSIGN_OR_RETURN(rt::AppendResult a, runtime_.append(branch, request.tokens));
  if (a.copied_page) counters_.cow_pages.fetch_add(1, std::memory_order_relaxed);
  msg::Appended out;
  out.head.first_token = a.first_token;
  out.head.pages_added = a.pages_added;
  out.head.copied_page = a.copied_page ? 1 : 0;
  out.runs.reserve(a.runs.size());
  for (const rt::WriteRun& run : a.runs) {
    wire::WriteRunWire w;
    w.page = run.page;
    w.first_slot = run.first_slot;
    w.count = run.count;
    w.first_token = run.first_token;
    out.runs.push_back(w);
  }
  return out;
}

template <>
Result<msg::Empty> Service::handle<Op::kCommit>(rt::LeaseId lease,
                                                const msg::BranchTarget& request) {
  const rt::BranchId branch{request.head.branch};
  PF_TRY(runtime_.check_access(branch, lease));
  PF_TRY(runtime_.commit(branch));
  return msg::Empty{};
}

template <>
Result<msg::Empty> Service::handle<Op::kTruncate>(rt::LeaseId lease, const msg::Truncate& request) {
  const rt::BranchId branch{request.head.branch};
  PF_TRY(runtime_.check_access(branch, lease));
  PF_TRY(runtime_.truncate(branch, request.head.n_tokens));
  return msg::Empty{};
}

template <>
Result<msg::Empty> Service::handle<Op::kBranchFree>(rt::LeaseId lease,
                                                    const msg::BranchTarget& request) {
  const rt::BranchId branch{request.head.branch};
  PF_TRY(runtime_.check_access(branch, lease));
  PF_TRY(runtime_.free_branch(branch));
  return msg::Empty{};
}

template <>
Result<msg::Empty> Service::handle<Op::kDetach>(rt::LeaseId lease,
                                                const msg::BranchTarget& request) {
  const rt::BranchId branch{request.head.branch};
  PF_TRY(runtime_.check_access(branch, lease));
  PF_TRY(runtime_.set_owner(branch, 0));
  return msg::Empty{};
}

template <>
Result<msg::BranchViewAnswer> Service::handle<Op::kBranchView>(rt::LeaseId,
                                                               const msg::ViewBranch& request) {
  const rt::BranchId branch{request.head.branch};
  if (request.head.wait_mode != wire::kViewWaitAll &&
      request.head.wait_mode != wire::kViewWaitLeading) {
    return PF_ERROR(Code::kInvalidArgument,
                    "wait_mode must be 0 (every page) or 1 (the first wait_pages pages), got " +
                        std::to_string(request.head.wait_mode));
  }
  const std::uint64_t wait_pages =
      request.head.wait_mode == wire::kViewWaitAll ? rt::kAllPages : request.head.wait_pages;
  PF_ASSIGN_OR_RETURN(rt::BranchInfo info, runtime_.branch_info(branch));
  // Blocks this connection's thread only (the runtime waits without its lock) until the
  // pages asked for are readable: for ever in mode 0 (older clients read every page they
  // get), for one slice in mode 1 (the client asks again while ready_pages is short).
  const auto max_wait = request.head.wait_mode == wire::kViewWaitAll
                            ? rt::kWaitForever
                            : std::chrono::milliseconds(wire::kViewWaitSliceMs);
  PF_ASSIGN_OR_RETURN(rt::BranchView view, runtime_.branch_view(branch, wait_pages, max_wait));
  msg::BranchViewAnswer out;
  out.head.branch = request.head.branch;
  out.head.owner = info.owner;
  // Tokens and pages come from the one view, so they agree even under a racing append.
  out.head.n_tokens = view.tokens.size();
  out.head.n_pages = static_cast<std::uint32_t>(view.pages.size());
  out.head.fill_in_last_page = view.fill_in_last_page;
  out.head.with_tokens = request.head.with_tokens != 0 ? 1 : 0;
  out.head.ready_pages =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(view.ready_pages, view.pages.size()));
  out.pages = std::move(view.pages);
  if (out.head.with_tokens) out.tokens = std::move(view.tokens);
  return out;
}

template <>
Result<msg::BranchInfo> Service::handle<Op::kBranchInfo>(rt::LeaseId,
                                                         const msg::BranchTarget& request) {
  PF_ASSIGN_OR_RETURN(rt::BranchInfo info, runtime_.branch_info(rt::BranchId{request.head.branch}));
  return info_message(info);
}

template <>
Result<msg::Branches> Service::handle<Op::kBranches>(rt::LeaseId, const msg::Empty&) {
  msg::Branches out;
  for (rt::BranchId id : runtime_.branches()) {
    // A branch freed between the listing and this lookup is simply left out.
    if (Result<rt::BranchInfo> info = runtime_.branch_info(id); info.is_ok()) {
      out.branches.push_back(info_message(*info));
    }
  }
  return out;
}

// --- keyed pages ----------------------------------------------------------------------------

template <>
Result<msg::Pages> Service::handle<Op::kPagesLookupKeys>(rt::LeaseId lease,
                                                         const msg::LookupKeys& request) {
  PF_TRY(check_flag(request.head.hold, "hold"));
  PF_ASSIGN_OR_RETURN(std::vector<rt::PageId> pages,
                      runtime_.lookup_keys(as_keys(request.keys), request.head.hold != 0, lease,
                                           namespace_of(request.ns)));
  return pages_message(std::move(pages));
}

template <>
Result<msg::Pages> Service::handle<Op::kPagesAlloc>(rt::LeaseId lease,
                                                    const msg::AllocPages& request) {
  if (request.head.n_pages > wire::kMaxKeysPerRequest) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::to_string(request.head.n_pages) + " pages exceed the limit of " +
                        std::to_string(wire::kMaxKeysPerRequest) + " per request");
  }
  PF_ASSIGN_OR_RETURN(std::vector<rt::PageId> pages,
                      runtime_.alloc_pages(request.head.n_pages, lease));
  return pages_message(std::move(pages));
}

template <>
Result<msg::Published> Service::handle<Op::kPagesPublish>(rt::LeaseId lease,
                                                          const msg::Publish& request) {
  PF_TRY(check_flag(request.head.has_parent, "has_parent"));
  rt::Sha256 parent{};
  std::memcpy(parent.data(), request.head.parent_key, parent.size());
  PF_ASSIGN_OR_RETURN(std::size_t added,
                      runtime_.publish_pages(as_keys(request.keys), request.pages,
                                             request.head.has_parent != 0 ? &parent : nullptr,
                                             lease, namespace_of(request.ns)));
  msg::Published out;
  out.head.new_keys = static_cast<std::uint32_t>(added);
  return out;
}

template <>
Result<msg::Empty> Service::handle<Op::kPagesRelease>(rt::LeaseId lease,
                                                      const msg::ReleasePages& request) {
  PF_TRY(runtime_.release_pages(request.pages, lease));
  return msg::Empty{};
}

}  // namespace pf::ipc
