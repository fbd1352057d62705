// Quarantine of damaged sealed pages (docs/runtime.md "Verification and quarantine"): the
// pre-op scan that finds and marks them, and the check that keeps operations from building
// on them.
#include <algorithm>
#include <cstdio>

#include "runtime/state.h"
#include "runtime/verifier.h"

namespace pf::rt::detail {

Result<std::size_t> quarantine_corrupt_pages(State& s) {
  PF_ASSIGN_OR_RETURN(std::vector<PageId> bad, find_corrupt_pages(s));
  std::size_t n = 0;
  for (PageId p : bad) {
    if (!s.pool->quarantine(p)) continue;
    ++n;
    std::string pinned;
    for (const auto& [cid, snap] : s.snapshots) {
      if (!snap.resident()) continue;
      const auto& pages = snap.list->pages();
      if (std::find(pages.begin(), pages.end(), p) != pages.end()) pinned += " " + cid;
    }
    std::fprintf(stderr,
                 "processfork runtime: quarantined page %u: its bytes no longer match its "
                 "digest; snapshots referencing it:%s\n",
                 p, pinned.empty() ? " none" : pinned.c_str());
  }
  return n;
}

Status check_pages_intact(const State& s, std::span<const PageId> pages, std::string_view what) {
  if (s.pool->quarantined_pages() == 0) return Status::ok();  // O(1) on the fork path
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (!s.pool->meta(pages[i]).quarantined) continue;
    return PF_ERROR(Code::kDataCorrupt,
                    std::string(what) + " page " + std::to_string(i) + " (pool page " +
                        std::to_string(pages[i]) +
                        ") is quarantined: its bytes no longer match its digest");
  }
  return Status::ok();
}

Status check_branch_intact(const State& s, const Branch& b) {
  if (s.pool->quarantined_pages() == 0) return Status::ok();
  return check_pages_intact(s, branch_pages(b, s.pt()), "branch " + std::to_string(b.id.value));
}

Status check_snapshot_intact(const State& s, const Snapshot& snap) {
  // Callers page snapshots in first (Runtime::with_resident); one paged out again since is
  // refused rather than read.
  if (!snap.resident()) {
    return PF_ERROR(Code::kUnavailable,
                    "snapshot " + snap.cid + " was paged out to the store again; retry");
  }
  return check_pages_intact(s, snap.list->pages(), "snapshot " + snap.cid);
}

}  // namespace pf::rt::detail
