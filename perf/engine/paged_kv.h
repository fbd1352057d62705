// PagedKv: the reference engine's view of one sequence's KV cache in ProcessFork pages.
//
// A PagedKv is a geometry, a page table (the base address of every page of the sequence,
// in order) and the number of tokens whose KV is present. Token t lives in page
// t / page_tokens at slot t % page_tokens; inside a page the layout is page-first
// [layer][K|V][token][kv_head][head_dim] in the geometry's dtype (Geometry::offset). Pages
// need not be contiguous or in address order: the engine reaches every page through the
// table, never by arithmetic across pages.
//
// Ownership: a PagedKv owns nothing. The pages belong to the pool (mapped by the client
// library) or to a PageArena; they must stay mapped while the PagedKv is used. The
// addresses are whatever the engine's memory kind is (host pointers for the host engine,
// device pointers for the CUDA engine).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/page_format.h"
#include "runtime/types.h"
#include "base/status.h"

namespace pf::engine {

class PagedKv {
 public:
  explicit PagedKv(const rt::Geometry& geometry) : geometry_(geometry) {}

  const rt::Geometry& geometry() const { return geometry_; }
  std::span<std::byte* const> pages() const { return pages_; }
  std::uint64_t n_tokens() const { return n_tokens_; }
  // Tokens the page table can hold.
  std::uint64_t capacity_tokens() const {
    return static_cast<std::uint64_t>(pages_.size()) * geometry_.page_tokens;
  }

  void push_page(std::byte* page) { pages_.push_back(page); }
  void set_page(std::size_t index, std::byte* page) { pages_.at(index) = page; }
  // Declares the first n tokens' KV present (a forked or checked-out branch, whose KV was
  // written by someone else), or truncates. kInvalidArgument beyond capacity_tokens().
  Status set_n_tokens(std::uint64_t n);
  // Drops pages past those needed for n_tokens().
  void shrink_to_tokens();

  // Takes in the write runs an append returned (runtime/types.h; the client library
  // returns the same runs) for tokens [n_tokens(), n_tokens() + total count), resolving
  // page ids to addresses with `resolve`. Checks that the runs continue the sequence
  // contiguously and place token t at slot t % page_tokens; a run that starts inside an
  // existing page replaces that table entry (the runtime copied a shared last page). Then
  // forward() writes those tokens' KV into exactly those slots. Changes nothing on error.
  Status add_write_runs(std::span<const rt::WriteRun> runs,
                        const std::function<Result<std::byte*>(rt::PageId)>& resolve);

  // Address of token `token`'s row of `layer`'s K or V block (token < capacity_tokens()).
  std::byte* row(std::uint32_t layer, rt::Half half, std::uint64_t token) const {
    return pages_[token / geometry_.page_tokens] +
           geometry_.offset(layer, half, static_cast<std::uint32_t>(token % geometry_.page_tokens));
  }

 private:
  rt::Geometry geometry_;
  std::vector<std::byte*> pages_;
  std::uint64_t n_tokens_ = 0;
};

}  // namespace pf::engine
