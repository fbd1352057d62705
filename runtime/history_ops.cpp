// merge, diff and log: operations over the snapshot DAG and token sequences.
#include <algorithm>
#include <deque>
#include <set>
#include <unordered_set>

#include "runtime/state.h"

namespace pf::rt::detail {

namespace {

// Ancestors of `cid` (itself first), breadth first, each once.
std::vector<std::string> ancestry(const State& s, const std::string& cid) {
  std::vector<std::string> order;
  std::set<std::string> seen{cid};
  std::deque<std::string> queue{cid};
  while (!queue.empty()) {
    std::string c = std::move(queue.front());
    queue.pop_front();
    auto it = s.snapshots.find(c);
    if (it != s.snapshots.end()) {
      for (const std::string& p : it->second.manifest.parents) {
        if (seen.insert(p).second) queue.push_back(p);
      }
    }
    order.push_back(std::move(c));
  }
  return order;
}

// Nearest common ancestor: the first of from's ancestors (breadth first) that is also an
// ancestor of into; "" when they share none.
std::string merge_base(const State& s, const std::string& into, const std::string& from) {
  const std::vector<std::string> a = ancestry(s, into);
  const std::set<std::string> in_into(a.begin(), a.end());
  for (const std::string& c : ancestry(s, from)) {
    if (in_into.count(c)) return c;
  }
  return "";
}

std::uint64_t common_prefix(const std::vector<Token>& a, const std::vector<Token>& b) {
  const auto m = std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin());
  return static_cast<std::uint64_t>(m.first - a.begin());
}

// The source exists and reaches no quarantined page.
// Checks that the source exists and is intact; returns its prefix-index namespace.
Result<Namespace> check_source(const State& s, const Source& src) {
  if (const BranchId* id = std::get_if<BranchId>(&src)) {
    PF_ASSIGN_OR_RETURN(const Branch* b, find_branch(s, *id));
    PF_TRY(check_branch_intact(s, *b));
    return b->ns;
  }
  PF_ASSIGN_OR_RETURN(const Snapshot* snap, resolve_snapshot(s, std::get<std::string>(src)));
  PF_TRY(check_snapshot_intact(s, *snap));
  return snap->manifest.ns;
}

Result<std::string> snapshot_cid(State& s, const Source& src) {
  if (const BranchId* id = std::get_if<BranchId>(&src)) {
    PF_ASSIGN_OR_RETURN(SnapshotInfo info, snapshot(s, *id, ""));
    return info.cid;
  }
  PF_ASSIGN_OR_RETURN(const Snapshot* snap, resolve_snapshot(s, std::get<std::string>(src)));
  return snap->cid;
}

struct SeqView {
  std::vector<Token> tokens;
  std::vector<PageId> pages;
};

Result<SeqView> view_of(const State& s, const Source& src) {
  SeqView v;
  if (const BranchId* id = std::get_if<BranchId>(&src)) {
    PF_ASSIGN_OR_RETURN(const Branch* b, find_branch(s, *id));
    v.tokens = branch_tokens(*b);
    v.pages = branch_pages(*b, s.pt());
  } else {
    PF_ASSIGN_OR_RETURN(const Snapshot* snap, resolve_snapshot(s, std::get<std::string>(src)));
    PF_TRY(check_snapshot_intact(s, *snap));
    v.tokens = snap->manifest.tokens;
    v.pages = snap->list->pages();
  }
  return v;
}

}  // namespace

Result<MergeResult> merge(State& s, const Source& from, const Source& into, LeaseId owner) {
  // Validate both before anything changes.
  PF_ASSIGN_OR_RETURN(Namespace from_ns, check_source(s, from));
  PF_ASSIGN_OR_RETURN(Namespace into_ns, check_source(s, into));
  // KV of one namespace is not valid in another (a fast-forward would hand from's pages to
  // into's engine), so a merge stays within one namespace.
  if (from_ns != into_ns) {
    return PF_ERROR(Code::kInvalidArgument,
                    "merge: from and into are in different prefix-index namespaces (" +
                        to_hex(from_ns) + " and " + to_hex(into_ns) + ")");
  }
  PF_TRY(check_branch_ids(s, 1));
  PF_ASSIGN_OR_RETURN(std::string from_cid, snapshot_cid(s, from));
  PF_ASSIGN_OR_RETURN(std::string into_cid, snapshot_cid(s, into));
  const Snapshot& f = s.snapshots.at(from_cid);
  const Snapshot& t = s.snapshots.at(into_cid);
  PF_TRY(check_snapshot_intact(s, t));
  MergeResult out;
  out.common_tokens = common_prefix(f.manifest.tokens, t.manifest.tokens);
  out.base = merge_base(s, into_cid, from_cid);
  if (out.common_tokens == t.n_tokens) {
    // into is a prefix of from: the result is from.
    out.outcome = MergeOutcome::kFastForward;
    out.cid = from_cid;
    PF_ASSIGN_OR_RETURN(out.branch, checkout(s, from_cid, owner));
    return out;
  }
  // Three-way: a snapshot with into's content and both parents, and a branch at it; the
  // engine prefills from's tokens after the common prefix on top.
  PageListPtr into_list = t.list;
  const std::vector<PageId> pages = into_list->pages();
  const std::vector<Token> tokens = t.manifest.tokens;
  out.recompute_tokens.assign(f.manifest.tokens.begin() + out.common_tokens,
                              f.manifest.tokens.end());
  PF_ASSIGN_OR_RETURN(SnapshotInfo merged, snapshot_of(s, pages, tokens, {into_cid, from_cid},
                                                       "merge", into_list, into_ns));
  out.outcome = MergeOutcome::kThreeWay;
  out.cid = merged.cid;
  PF_ASSIGN_OR_RETURN(out.branch, checkout(s, merged.cid, owner));
  return out;
}

Result<DiffResult> diff(const State& s, const Source& a, const Source& b) {
  PF_ASSIGN_OR_RETURN(SeqView va, view_of(s, a));
  PF_ASSIGN_OR_RETURN(SeqView vb, view_of(s, b));
  DiffResult d;
  d.common_tokens = common_prefix(va.tokens, vb.tokens);
  const std::unordered_set<PageId> in_a(va.pages.begin(), va.pages.end());
  const std::unordered_set<PageId> in_b(vb.pages.begin(), vb.pages.end());
  for (std::size_t i = 0; i < va.pages.size(); ++i) {
    (in_b.count(va.pages[i]) ? d.shared_pages : d.a_only_pages).push_back(i);
  }
  for (std::size_t j = 0; j < vb.pages.size(); ++j) {
    if (!in_a.count(vb.pages[j])) d.b_only_pages.push_back(j);
  }
  return d;
}

Result<std::vector<LogEntry>> log(const State& s, std::string_view cid_or_ref) {
  PF_ASSIGN_OR_RETURN(const Snapshot* start, resolve_snapshot(s, cid_or_ref));
  std::vector<LogEntry> out;
  for (const std::string& c : ancestry(s, start->cid)) {
    LogEntry e;
    e.cid = c;
    auto it = s.snapshots.find(c);
    if (it == s.snapshots.end()) {
      e.known = false;
    } else {
      e.name = it->second.manifest.name;
      e.parents = it->second.manifest.parents;
      e.n_tokens = it->second.n_tokens;
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace pf::rt::detail
