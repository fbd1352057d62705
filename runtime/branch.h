// Branch: a mutable token sequence and its pages (DESIGN §2 Branch / LogicalSeq).
//
// DESIGN: a branch is `base` (a shared, immutable PageList chain, of which the first
// base_tokens tokens are visible) plus a private `tail`: the pages at indices
// [base_tokens / page_tokens, ...) and the tokens after base_tokens. When the tail is empty
// the branch's last page may be a partially filled page of the base; the first append then
// copies it into the tail (copy-on-write). Tail pages hold one pool reference each; they
// are kExclusive (writable in place) or kSealed (committed/snapshotted: the next write
// into one copies it first).
//
// Fork of a branch freezes its tail into a new PageList (O(1) moves plus one state flip
// per tail page) so that children share everything through one shared_ptr.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/namespace.h"
#include "runtime/page_list.h"
#include "runtime/types.h"

namespace pf::rt {

struct Branch {
  BranchId id;
  LeaseId owner = 0;
  PageListPtr base;                // may be null (then base_tokens == 0)
  std::uint64_t base_tokens = 0;   // visible tokens of the base chain
  std::vector<PageId> tail;        // pages from index base_tokens / page_tokens on
  std::vector<Token> tail_tokens;  // tokens after base_tokens
  // The CIDs the next snapshot of this branch names as its parents.
  std::shared_ptr<const std::vector<std::string>> parents;
  // The prefix-index namespace its commits insert into (runtime/namespace.h): set at
  // creation, inherited by fork, taken from the snapshot by checkout and merge.
  Namespace ns{};

  std::uint64_t n_tokens() const { return base_tokens + tail_tokens.size(); }
};

// Page index where the tail starts.
inline std::uint64_t tail_first_page(const Branch& b, std::uint32_t page_tokens) {
  return b.base_tokens / page_tokens;
}

// Every page of the branch in order (ceil(n_tokens / page_tokens) of them).
std::vector<PageId> branch_pages(const Branch& b, std::uint32_t page_tokens);
// Every token of the branch in order.
std::vector<Token> branch_tokens(const Branch& b);
// The page holding the branch's page index `index` (< page count).
PageId branch_page(const Branch& b, std::uint32_t page_tokens, std::uint64_t index);
// Tokens in the last page (page_tokens when full; 0 for an empty branch).
std::uint32_t fill_in_last_page(std::uint64_t n_tokens, std::uint32_t page_tokens);

// Moves a non-empty tail into a new PageList chained on the base and makes it the base
// (the tail's references move into the list; its pages become kSealed). No-op when the
// tail is empty. O(tail pages) state flips, no allocation of pages, no copy of bytes.
void freeze_tail(PagePool& pool, Branch& b);
// Drops the tail's references and empties it.
void release_tail(PagePool& pool, Branch& b);

}  // namespace pf::rt
