// ExclusivePages: the pages this session may write — the client-side half of "sealed pages
// are never writable through the API" (DESIGN §2, §8; docs/c_api.md "Memory and the
// mapping").
//
// DESIGN
//  - The daemon hands out a page for writing in exactly two ways: the write runs of kAppend
//    (pages of the branch's private tail, made exclusive — copied first when shared) and
//    kPagesAlloc (fresh pages held by the lease). Both replies name the pages, so the client
//    learns them without asking: nothing new goes over the wire.
//  - A page stops being writable when this session seals, shares or frees it: kCommit
//    (the branch's full pages), kSnapshot, kFork of the branch, kMerge with the branch as a
//    source, kTruncate, kBranchFree, kDetach (a detached branch may be sealed by any
//    session), kPagesPublish and kPagesRelease of the page, and the end of the session.
//    Other sessions cannot do any of these to a branch of this lease (the daemon answers
//    kConflict), so the set never lags behind the daemon for this lease's branches.
//  - Conservative where precision would need the daemon's state: truncate and detach drop
//    every page of the branch (a later append names again the pages it writes).
//  - Remains: a branch without an owner (detached, or created over HTTP) that this session
//    appends to can be snapshotted by another session meanwhile; its pages stay writable
//    here until this session seals or drops them. The daemon's verifier catches a write
//    after that (digest mismatch).
//
// Threading: not thread-safe; the owning Connection guards it (map_mu_).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "ipc/wire.h"

namespace pf::client {

class ExclusivePages {
 public:
  // Branch id recorded for pages of pf_pages_alloc (branch ids are never 0: they carry the
  // boot epoch in their high bits).
  static constexpr std::uint64_t kNoBranch = 0;

  explicit ExclusivePages(std::uint32_t page_tokens = 0) : page_tokens_(page_tokens) {}

  // Records the pages of append's write runs on `branch`; returns the pages that were not
  // writable before (sorted, unique).
  std::vector<std::uint32_t> add_runs(std::uint64_t branch,
                                      std::span<const wire::WriteRunWire> runs);
  // Records keyed pages from kPagesAlloc; returns those that were not writable before.
  std::vector<std::uint32_t> add_pages(std::span<const std::uint32_t> pages);
  // The branch's full pages were sealed by a commit; returns the pages dropped.
  std::vector<std::uint32_t> commit(std::uint64_t branch);
  // Every page of the branch is sealed, shared or freed; returns the pages dropped.
  std::vector<std::uint32_t> drop_branch(std::uint64_t branch);
  // These pages are sealed or freed; returns those that were writable.
  std::vector<std::uint32_t> drop_pages(std::span<const std::uint32_t> pages);
  // Forgets everything; returns the pages that were writable.
  std::vector<std::uint32_t> clear();

  // The branch `page` is writable through (kNoBranch for an alloc'd page), or nothing when
  // this session may not write it.
  std::optional<std::uint64_t> owner(std::uint32_t page) const;
  // The branch (kNoBranch: pages_alloc) through which `page` was writable until this
  // session sealed or freed it, for error messages; nothing when it never was.
  std::optional<std::uint64_t> former_owner(std::uint32_t page) const;
  // Every writable page, sorted.
  std::vector<std::uint32_t> pages() const;
  std::size_t size() const { return pages_.size(); }

 private:
  struct Entry {
    std::uint64_t branch = kNoBranch;
    std::uint32_t filled = 0;  // one past the highest slot handed out for writing
  };
  std::vector<std::uint32_t> drop_if(std::uint64_t branch, bool only_full);

  std::uint32_t page_tokens_;
  std::map<std::uint32_t, Entry> pages_;           // page id -> entry
  std::map<std::uint32_t, std::uint64_t> former_;  // page id -> branch, once dropped
};

}  // namespace pf::client
