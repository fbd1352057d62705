// libprocessfork C ABI (processfork.h): branches, snapshots, fork, checkout and merge.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "shims/lib/abi_support.h"

// The boundary vocabulary (abi_support.h): Status, Result, Code, Op, the checks.
using namespace pf::abi;  // NOLINT(google-build-using-namespace)

namespace {

// commit, branch_free, detach: a request naming one branch, an empty reply.
template <Op op>
Status branch_op(pf_client* client, pf_branch_id branch) {
  pf::msg::BranchTarget request;
  request.head.branch = branch;
  return client->conn->request<op>(request).status();
}

// pf_branch_view and pf_branch_view_ready: the daemon answers once the first
// min(wait_pages, n_pages) pages are readable (UINT64_MAX: all of them).
Status branch_view(pf_client* client, pf_branch_id branch, uint64_t wait_pages,
                   pf_branch_info* info, uint32_t* pages, size_t pages_capacity, uint32_t* tokens,
                   size_t tokens_capacity) {
  PF_TRY(check_client(client));
  PF_TRY(check_out(info, "info"));
  if (pages == nullptr && pages_capacity != 0) {
    return invalid("pages is NULL but pages_capacity is not 0");
  }
  if (tokens == nullptr && tokens_capacity != 0) {
    return invalid("tokens is NULL but tokens_capacity is not 0");
  }
  pf::msg::ViewBranch request;
  request.head.branch = branch;
  request.head.with_tokens = tokens != nullptr ? 1 : 0;
  // A 3.4 daemon gets wait_mode 1 (n_pages is 32-bit on the wire, so UINT32_MAX pages is
  // every page). It answers within one slice (wire::kViewWaitSliceMs) with what is ready, so
  // no reply outlives the reply timeout however slow the disk; the view is asked again
  // until the pages wanted are ready. An older daemon gets wait_mode 0 (byte for byte its
  // clients' request): it ignores the field and has every page resident.
  const bool sliced = client->conn->pool().protocol_minor >= pf::wire::kViewWaitMinor;
  if (sliced) {
    request.head.wait_mode = pf::wire::kViewWaitLeading;
    request.head.wait_pages = static_cast<std::uint32_t>(
        std::min<uint64_t>(wait_pages, std::numeric_limits<std::uint32_t>::max()));
  }
  pf::msg::BranchViewAnswer v;
  for (;;) {
    PF_ASSIGN_OR_RETURN(v, client->conn->request<Op::kBranchView>(request));
    if (v.head.ready_pages > v.pages.size()) {
      return Status(Code::kProtocol, "the daemon answered a view of " +
                                         std::to_string(v.pages.size()) + " pages with " +
                                         std::to_string(v.head.ready_pages) + " ready");
    }
    if (!sliced || v.head.ready_pages >= std::min<uint64_t>(wait_pages, v.pages.size())) break;
  }
  *info = pf_branch_info{};
  info->branch = v.head.branch;
  info->owner = v.head.owner;
  info->n_tokens = v.head.n_tokens;
  info->n_pages = v.pages.size();
  info->fill_in_last_page = v.head.fill_in_last_page;
  info->ready_pages = v.head.ready_pages;
  if (pages != nullptr && pages_capacity < v.pages.size()) {
    return invalid("pages array holds " + std::to_string(pages_capacity) + "; the branch has " +
                   std::to_string(v.pages.size()) + " pages");
  }
  if (tokens != nullptr && tokens_capacity < v.tokens.size()) {
    return invalid("tokens array holds " + std::to_string(tokens_capacity) + "; the branch has " +
                   std::to_string(v.tokens.size()) + " tokens");
  }
  if (pages != nullptr) std::copy(v.pages.begin(), v.pages.end(), pages);
  if (tokens != nullptr) std::copy(v.tokens.begin(), v.tokens.end(), tokens);
  return Status::ok();
}

Status fork_branches(pf_client* client, const pf_source* source, uint32_t n, pf_branch_id* branches,
                     size_t branches_capacity, pf_fork_result* out) {
  PF_TRY(check_client(client));
  pf::msg::Fork request;
  PF_ASSIGN_OR_RETURN(request.source, source_arg(source, "source"));
  if (n == 0 || n > PF_MAX_FORK) {
    return invalid("n is " + std::to_string(n) + "; it must be 1.." + std::to_string(PF_MAX_FORK));
  }
  PF_TRY(check_out(branches, "branches"));
  if (branches_capacity < n) {
    return invalid("branches array holds " + std::to_string(branches_capacity) + "; " +
                   std::to_string(n) + " needed");
  }
  request.head.n = n;
  PF_TRY(fence_kv_copies(client));
  PF_ASSIGN_OR_RETURN(auto f, client->conn->request<Op::kFork>(std::move(request)));
  if (f.branches.size() != n) {
    return Status(Code::kProtocol, "asked the daemon for " + std::to_string(n) + " branches, got " +
                                       std::to_string(f.branches.size()));
  }
  std::copy(f.branches.begin(), f.branches.end(), branches);
  *out = pf_fork_result{};
  out->n_tokens = f.head.n_tokens;
  out->n = n;
  copy_fixed(out->source, sizeof out->source, pf::msg::cstr(f.head.source));
  return Status::ok();
}

Status checkout(pf_client* client, const char* cid_or_ref, pf_checkout_result* out) {
  PF_TRY(check_client(client));
  pf::msg::Named request;
  PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(cid_or_ref, "cid_or_ref"));
  request.name = name;
  PF_ASSIGN_OR_RETURN(auto c, client->conn->request<Op::kCheckout>(std::move(request)));
  *out = pf_checkout_result{};
  out->branch = c.head.branch;
  out->n_tokens = c.head.n_tokens;
  copy_fixed(out->cid, sizeof out->cid, pf::msg::cstr(c.head.cid));
  return Status::ok();
}

}  // namespace

extern "C" {

pf_result pf_branch_create(pf_client* client, const uint32_t* tokens, size_t n_tokens,
                           pf_new_branch* out) {
  return pf_branch_create_ns(client, tokens, n_tokens, nullptr, out);
}

pf_result pf_branch_create_ns(pf_client* client, const uint32_t* tokens, size_t n_tokens,
                              const uint8_t* ns, pf_new_branch* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    if (tokens == nullptr && n_tokens != 0) return invalid("tokens is NULL but n_tokens is not 0");
    pf::msg::BranchCreate request;
    PF_ASSIGN_OR_RETURN(request.ns, namespace_arg(client, ns));
    if (n_tokens != 0) request.tokens.assign(tokens, tokens + n_tokens);
    PF_ASSIGN_OR_RETURN(auto b, client->conn->request<Op::kBranchCreate>(std::move(request)));
    *out = pf_new_branch{b.head.branch, b.head.n_tokens, b.head.reused_tokens};
    return Status::ok();
  });
}

size_t pf_append_max_runs(const pf_client* client, size_t n_tokens) {
  if (client == nullptr || client->conn == nullptr) return 0;
  return client->conn->max_runs(n_tokens);
}

pf_result pf_append(pf_client* client, pf_branch_id branch, const uint32_t* tokens, size_t n_tokens,
                    pf_write_run* runs, size_t runs_capacity, pf_append_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    if (tokens == nullptr && n_tokens != 0) return invalid("tokens is NULL but n_tokens is not 0");
    const std::size_t bound = client->conn->max_runs(n_tokens);
    if (runs_capacity < bound) {
      if (out != nullptr) *out = pf_append_result{0, 0, 0, bound};
      return invalid("runs array holds " + std::to_string(runs_capacity) + " runs; appending " +
                     std::to_string(n_tokens) + " tokens needs room for " + std::to_string(bound) +
                     " (pf_append_max_runs)");
    }
    if (runs == nullptr && runs_capacity != 0) return invalid("runs is NULL but capacity is not 0");
    PF_TRY(check_out(out, "out"));
    pf::msg::Append request;
    request.head.branch = branch;
    if (n_tokens != 0) request.tokens.assign(tokens, tokens + n_tokens);
    PF_ASSIGN_OR_RETURN(auto a, client->conn->request<Op::kAppend>(std::move(request)));
    if (a.runs.size() > runs_capacity) {
      return Status(Code::kProtocol, "the daemon answered append with " +
                                         std::to_string(a.runs.size()) + " write runs; at most " +
                                         std::to_string(bound) + " were possible");
    }
    for (std::size_t i = 0; i < a.runs.size(); ++i) {
      const auto& r = a.runs[i];
      runs[i] = pf_write_run{r.page, r.first_slot, r.count, 0, r.first_token};
    }
    *out = pf_append_result{a.head.first_token, a.head.pages_added,
                            a.head.copied_page != 0 ? 1u : 0u, a.runs.size()};
    return Status::ok();
  });
}

pf_result pf_commit(pf_client* client, pf_branch_id branch) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(fence_kv_copies(client));
    return branch_op<Op::kCommit>(client, branch);
  });
}

pf_result pf_truncate(pf_client* client, pf_branch_id branch, uint64_t n_tokens) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    pf::msg::Truncate request;
    request.head.branch = branch;
    request.head.n_tokens = n_tokens;
    return client->conn->request<Op::kTruncate>(request).status();
  });
}

pf_result pf_branch_free(pf_client* client, pf_branch_id branch) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return branch_op<Op::kBranchFree>(client, branch);
  });
}

pf_result pf_detach(pf_client* client, pf_branch_id branch) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    return branch_op<Op::kDetach>(client, branch);
  });
}

pf_result pf_branch_view(pf_client* client, pf_branch_id branch, pf_branch_info* info,
                         uint32_t* pages, size_t pages_capacity, uint32_t* tokens,
                         size_t tokens_capacity) {
  return boundary([&]() -> Status {
    return branch_view(client, branch, UINT64_MAX, info, pages, pages_capacity, tokens,
                       tokens_capacity);
  });
}

pf_result pf_branch_view_ready(pf_client* client, pf_branch_id branch, uint64_t wait_pages,
                               pf_branch_info* info, uint32_t* pages, size_t pages_capacity,
                               uint32_t* tokens, size_t tokens_capacity) {
  return boundary([&]() -> Status {
    return branch_view(client, branch, wait_pages, info, pages, pages_capacity, tokens,
                       tokens_capacity);
  });
}

pf_result pf_snapshot(pf_client* client, pf_branch_id branch, const char* name,
                      pf_snapshot_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_TRY(check_out(out, "out"));
    pf::msg::Snapshot request;
    request.head.branch = branch;
    if (name != nullptr && *name != '\0') {
      PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
      request.name = n;
    }
    PF_TRY(fence_kv_copies(client));
    PF_ASSIGN_OR_RETURN(auto s, client->conn->request<Op::kSnapshot>(std::move(request)));
    *out = pf_snapshot_result{};
    copy_fixed(out->cid, sizeof out->cid, pf::msg::cstr(s.head.cid));
    out->n_tokens = s.head.n_tokens;
    out->n_pages = s.head.n_pages;
    out->created = s.head.created != 0 ? 1 : 0;
    return Status::ok();
  });
}

pf_result pf_fork_branches(pf_client* client, const pf_source* source, uint32_t n,
                           pf_branch_id* branches, size_t branches_capacity, pf_fork_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(out, "out"));
    return fork_branches(client, source, n, branches, branches_capacity, out);
  });
}

pf_result pf_fork(pf_client* client, const pf_source* source, uint32_t n, pf_branch_id* branches,
                  size_t branches_capacity, char* source_cid, size_t source_cid_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_cid_buffer(source_cid, source_cid_capacity, "source_cid"));
    pf_fork_result result{};
    PF_TRY(fork_branches(client, source, n, branches, branches_capacity, &result));
    copy_cid(result.source, source_cid);
    return Status::ok();
  });
}

pf_result pf_checkout_branch(pf_client* client, const char* cid_or_ref, pf_checkout_result* out) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(out, "out"));
    return checkout(client, cid_or_ref, out);
  });
}

pf_result pf_checkout(pf_client* client, const char* cid_or_ref, pf_branch_id* branch, char* cid,
                      size_t cid_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_out(branch, "branch"));
    PF_TRY(check_cid_buffer(cid, cid_capacity, "cid"));
    pf_checkout_result result{};
    PF_TRY(checkout(client, cid_or_ref, &result));
    *branch = result.branch;
    copy_cid(result.cid, cid);
    return Status::ok();
  });
}

pf_result pf_merge(pf_client* client, const pf_source* from, const pf_source* into,
                   pf_merge_result* out, uint32_t* recompute_tokens, size_t capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    pf::msg::Merge request;
    PF_ASSIGN_OR_RETURN(request.from, source_arg(from, "from"));
    PF_ASSIGN_OR_RETURN(request.into, source_arg(into, "into"));
    PF_TRY(check_out(out, "out"));
    if (recompute_tokens == nullptr && capacity != 0) {
      return invalid("recompute_tokens is NULL but capacity is not 0");
    }
    PF_TRY(fence_kv_copies(client));
    PF_ASSIGN_OR_RETURN(auto m, client->conn->request<Op::kMerge>(std::move(request)));
    *out = pf_merge_result{};
    out->outcome = m.fast_forward != 0 ? PF_MERGE_FAST_FORWARD : PF_MERGE_THREE_WAY;
    out->common_tokens = m.common_tokens;
    out->n_recompute_tokens = m.recompute_tokens.size();
    copy_fixed(out->cid, sizeof out->cid, m.cid);
    copy_fixed(out->base, sizeof out->base, m.base);
    if (capacity < m.recompute_tokens.size()) {
      // Undo the one thing that is not content-addressed: the result branch.
      branch_op<Op::kBranchFree>(client, m.branch).ignore();
      return invalid("recompute_tokens holds " + std::to_string(capacity) + "; the merge needs " +
                     std::to_string(m.recompute_tokens.size()) +
                     " (its branch was freed again; retry with a larger buffer)");
    }
    out->branch = m.branch;
    std::copy(m.recompute_tokens.begin(), m.recompute_tokens.end(), recompute_tokens);
    return Status::ok();
  });
}

}  // extern "C"
