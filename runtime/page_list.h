// PageList: an immutable, shared segment of a token sequence and its pages — what makes
// fork O(n) in the number of children and independent of context length.
//
// DESIGN: a sequence is a chain of PageLists plus a branch's private tail
// (runtime/branch.h). A PageList continues its `parent` chain after `parent_tokens` tokens
// (which may be fewer than the parent's own total: a branch that was truncated and then
// grew again). Its pages[0] sits at page index parent_tokens / page_tokens; when
// parent_tokens is not page aligned, pages[0] *replaces* the parent's partially filled
// page there (it is that page's copy-on-write copy, holding the parent's tokens of that
// page plus new ones). A snapshot's list, and a list made from prefix-index pages, is flat
// (no parent).
//
// Ownership and lifetime: a PageList holds exactly ONE pool reference per entry in
// `pages`, taken over from its creator (adopt) and given back in the destructor. Branches,
// snapshots and child lists share it through std::shared_ptr<const PageList>; the last
// holder to drop it releases the pages. Every holder lives inside the Runtime and is
// dropped under the Runtime mutex, so the destructor's pool calls are serialized.
// Every page in a PageList is kSealed: nothing writes into a shared list.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/page_pool.h"
#include "runtime/types.h"

namespace pf::rt {

class PageList {
 public:
  // Adopts one reference per page (the caller's references move into the list) and seals
  // every page. `pages` must hold exactly the pages covering tokens
  // [parent_tokens, parent_tokens + tokens.size()).
  PageList(PagePool& pool, std::shared_ptr<const PageList> parent, std::uint64_t parent_tokens,
           std::vector<PageId> pages, std::vector<Token> tokens);
  ~PageList();
  PageList(const PageList&) = delete;
  PageList& operator=(const PageList&) = delete;

  const std::shared_ptr<const PageList>& parent() const { return parent_; }
  std::uint64_t parent_tokens() const { return parent_tokens_; }
  std::uint64_t total_tokens() const { return parent_tokens_ + tokens_.size(); }
  std::uint64_t first_page() const { return parent_tokens_ / page_tokens_; }
  const std::vector<PageId>& pages() const { return pages_; }
  const std::vector<Token>& tokens() const { return tokens_; }

 private:
  PagePool& pool_;
  std::shared_ptr<const PageList> parent_;
  std::uint64_t parent_tokens_;
  std::uint32_t page_tokens_;
  std::vector<PageId> pages_;
  std::vector<Token> tokens_;
};

using PageListPtr = std::shared_ptr<const PageList>;

// Makes a flat list from pages the caller holds references for: takes one *new* reference
// per page (the caller keeps its own).
PageListPtr make_flat_list(PagePool& pool, std::span<const PageId> pages,
                           std::span<const Token> tokens);

// The first `n_tokens` tokens of the chain ending at `head` (n_tokens <= head's total),
// appended to `out`. O(n_tokens + chain depth).
void chain_tokens(const PageList* head, std::uint64_t n_tokens, std::vector<Token>* out);
// The ceil(n_tokens / page_tokens) pages holding those tokens, appended to `out`.
void chain_pages(const PageList* head, std::uint64_t n_tokens, std::uint32_t page_tokens,
                 std::vector<PageId>* out);
// The page at index `index` of the chain's first n_tokens tokens. O(chain depth).
PageId chain_page(const PageList* head, std::uint64_t n_tokens, std::uint32_t page_tokens,
                  std::uint64_t index);

}  // namespace pf::rt
