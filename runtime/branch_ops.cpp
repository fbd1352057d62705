// Branch operations: create (with prefix reuse), append (copy-on-write), commit, truncate,
// free, and the page-supply policy (grow by chunks, then evict LRU cached pages).
#include <algorithm>
#include <cassert>

#include "runtime/state.h"
#include "runtime/tier.h"

namespace pf::rt::detail {

Result<Branch*> find_branch(State& s, BranchId id) {
  auto it = s.branches.find(id);
  if (it == s.branches.end()) {
    return PF_ERROR(Code::kNotFound, "unknown branch " + std::to_string(id.value));
  }
  return &it->second;
}

Result<const Branch*> find_branch(const State& s, BranchId id) {
  auto it = s.branches.find(id);
  if (it == s.branches.end()) {
    return PF_ERROR(Code::kNotFound, "unknown branch " + std::to_string(id.value));
  }
  return &it->second;
}

Status check_branch_ids(const State& s, std::size_t n) {
  if (s.branch_ids.remaining() >= n) return Status::ok();
  return PF_ERROR(Code::kOutOfMemory, "out of branch ids: " + std::to_string(n) + " needed, " +
                                          std::to_string(s.branch_ids.remaining()) +
                                          " left in boot epoch " +
                                          std::to_string(s.branch_ids.epoch()) +
                                          "; restart the daemon for a new epoch");
}

Branch& new_branch(State& s, LeaseId owner) {
  Result<std::uint64_t> next = s.branch_ids.next();
  assert(next.is_ok() && "new_branch without check_branch_ids");
  const BranchId id{*next};
  Branch& b = s.branches[id];
  b.id = id;
  b.owner = owner;
  return b;
}

Status ensure_free_pages(State& s, std::size_t n) {
  PagePool& pool = *s.pool;
  const std::size_t free = pool.free_mapped_pages();
  if (free >= n) return Status::ok();
  const std::size_t growable = pool.growable_pages();
  std::size_t need = n - free;
  if (need > growable && s.tier) {
    // Durable snapshots go to the store before anything is refused (runtime/tier.h).
    if (need > growable + s.index->evictable_pages()) demote_for(s, n);
    if (pool.free_mapped_pages() >= n) return Status::ok();
    need = n - pool.free_mapped_pages();
  }
  if (need > growable) {
    const std::size_t evictable = s.index->evictable_pages();
    if (need > growable + evictable) {
      return PF_ERROR(Code::kOutOfMemory,
                      "out of pages: need " + std::to_string(n) + ", " + std::to_string(free) +
                          " free, " + std::to_string(growable) + " more can be mapped, " +
                          std::to_string(evictable) + " cached pages can be evicted (capacity " +
                          std::to_string(pool.capacity_pages()) + " pages)");
    }
  }
  if (growable > 0) {
    Status grown = pool.grow_for(std::min(need, growable));
    if (grown.is_ok()) {
      if (pool.free_mapped_pages() >= n) return Status::ok();
      need = n - pool.free_mapped_pages();
    } else if (free + s.index->evictable_pages() < n) {
      return grown.add_frame(__FILE__, __LINE__);  // the pool rolled its growth back
    }
  }
  s.index->evict(need);
  if (pool.free_mapped_pages() < n) {
    return PF_ERROR(Code::kInternal, "eviction freed fewer pages than it counted");
  }
  return Status::ok();
}

Result<std::vector<PageDigest>> digests_for(State& s, std::span<const PageId> pages,
                                            std::span<const std::uint32_t> fills) {
  std::vector<PageDigest> out(pages.size());
  std::vector<PageId> todo;
  std::vector<std::uint32_t> todo_fill;
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    const PageMeta& m = s.pool->meta(pages[i]);
    if (m.has_digest && m.digest_fill == fills[i]) {
      out[i] = {m.k, m.v};
    } else {
      todo.push_back(pages[i]);
      todo_fill.push_back(fills[i]);
      where.push_back(i);
    }
  }
  if (!todo.empty()) {
    PF_TRY(check_loaded(s, todo));
    std::vector<PageDigest> d(todo.size());
    PF_TRY(digest_pages(*s.kernels, s.pool->geometry(), s.pool->base(), todo, todo_fill, d));
    for (std::size_t j = 0; j < todo.size(); ++j) out[where[j]] = d[j];
  }
  return out;
}

Status digest_missing(State& s, std::span<const PageId> pages,
                      std::span<const std::uint32_t> fills) {
  std::vector<PageId> todo;
  std::vector<std::uint32_t> todo_fill;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (!s.pool->meta(pages[i]).has_digest) {
      todo.push_back(pages[i]);
      todo_fill.push_back(fills[i]);
    }
  }
  if (todo.empty()) return Status::ok();
  PF_TRY(check_loaded(s, todo));
  std::vector<PageDigest> d(todo.size());
  PF_TRY(digest_pages(*s.kernels, s.pool->geometry(), s.pool->base(), todo, todo_fill, d));
  for (std::size_t j = 0; j < todo.size(); ++j) {
    PageMeta& m = s.pool->meta(todo[j]);
    m.has_digest = true;
    m.digest_fill = todo_fill[j];
    m.k = d[j].k;
    m.v = d[j].v;
  }
  return Status::ok();
}

Result<NewBranch> create_branch(State& s, std::span<const Token> tokens, LeaseId owner,
                                const Namespace& ns) {
  PF_TRY(check_branch_ids(s, 1));
  std::vector<PageId> reused;
  if (!tokens.empty()) reused = s.index->lookup(ns, tokens);
  const std::uint64_t n = std::uint64_t{reused.size()} * s.pt();
  Branch& b = new_branch(s, owner);
  b.ns = ns;
  b.parents = std::make_shared<const std::vector<std::string>>();
  if (n > 0) {
    b.base = make_flat_list(*s.pool, reused, tokens.first(n));
    b.base_tokens = n;
  }
  return NewBranch{b.id, n, n};
}

Result<AppendResult> append(State& s, BranchId id, std::span<const Token> tokens) {
  PF_ASSIGN_OR_RETURN(Branch * b, find_branch(s, id));
  const std::uint32_t P = s.pt();
  AppendResult result;
  const std::uint64_t n = b->n_tokens();
  result.first_token = n;
  if (tokens.empty()) return result;
  constexpr std::uint64_t kMaxTokens = std::uint64_t{1} << 40;
  if (tokens.size() > kMaxTokens - n) {
    return PF_ERROR(Code::kInvalidArgument, "append would exceed 2^40 tokens");
  }
  const std::uint64_t n2 = n + tokens.size();
  PagePool& pool = *s.pool;

  // Copy-on-write: the partially filled last page is writable in place only when it is an
  // exclusive page of this branch's tail.
  bool cow = false;
  PageId src = 0;
  if (n % P != 0) {
    if (!b->tail.empty()) {
      src = b->tail.back();
      cow = pool.meta(src).state != PageState::kExclusive;
    } else {
      src = chain_page(b->base.get(), b->base_tokens, P, n / P);
      cow = true;
    }
  }
  if (cow && pool.meta(src).quarantined) {
    return PF_ERROR(Code::kDataCorrupt, "branch " + std::to_string(id.value) + " page " +
                                            std::to_string(n / P) + " (pool page " +
                                            std::to_string(src) +
                                            ") is quarantined: its bytes no longer match its "
                                            "digest; it cannot be copied for the append");
  }
  if (cow) PF_TRY(check_loaded(s, {&src, 1}));  // the copy reads it
  const std::uint64_t fresh = (n2 + P - 1) / P - (n + P - 1) / P;
  const std::size_t total = static_cast<std::size_t>(fresh) + (cow ? 1 : 0);
  PF_TRY(ensure_free_pages(s, total));
  PF_ASSIGN_OR_RETURN(std::vector<PageId> got, pool.allocate(total));
  if (cow) {
    const kernels::CopyOp op{pool.page_ptr(src), pool.page_ptr(got[0]), pool.page_bytes()};
    if (Status st = s.kernels->copy_batch({&op, 1}); !st.is_ok()) {
      for (PageId p : got) pool.unref(p);
      return st.add_frame(__FILE__, __LINE__);
    }
    if (!b->tail.empty()) {
      pool.unref(b->tail.back());
      b->tail.back() = got[0];
    } else {
      b->tail.push_back(got[0]);
    }
  }
  b->tail.insert(b->tail.end(), got.begin() + (cow ? 1 : 0), got.end());
  b->tail_tokens.insert(b->tail_tokens.end(), tokens.begin(), tokens.end());
  result.pages_added = static_cast<std::uint32_t>(total);
  result.copied_page = cow;

  const std::uint64_t first = tail_first_page(*b, P);
  for (std::uint64_t pos = n; pos < n2;) {
    const std::uint64_t page_ix = pos / P;
    const std::uint32_t slot = static_cast<std::uint32_t>(pos % P);
    const std::uint32_t count =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(P - slot, n2 - pos));
    result.runs.push_back({b->tail[page_ix - first], slot, count, pos});
    pos += count;
  }
  return result;
}

Status commit(State& s, BranchId id) {
  PF_ASSIGN_OR_RETURN(Branch * b, find_branch(s, id));
  const std::uint32_t P = s.pt();
  const std::uint64_t full = b->n_tokens() / P;
  if (full == 0) return Status::ok();
  std::vector<PageId> pages = branch_pages(*b, P);
  pages.resize(full);
  std::vector<Token> tokens = branch_tokens(*b);
  tokens.resize(full * P);
  // Digest before sealing so that a failure changes nothing.
  std::vector<std::uint32_t> fills(full, P);
  std::vector<PageId> unsealed;
  for (PageId p : pages) {
    if (!s.pool->meta(p).has_digest) unsealed.push_back(p);
  }
  std::vector<std::uint32_t> ufills(unsealed.size(), P);
  PF_ASSIGN_OR_RETURN(std::vector<PageDigest> d, digests_for(s, unsealed, ufills));
  for (std::size_t i = 0; i < unsealed.size(); ++i) {
    PageMeta& m = s.pool->meta(unsealed[i]);
    s.pool->seal(unsealed[i]);
    m.has_digest = true;
    m.digest_fill = P;
    m.k = d[i].k;
    m.v = d[i].v;
  }
  for (PageId p : pages) s.pool->seal(p);
  s.index->insert(b->ns, tokens, pages);
  return Status::ok();
}

Status truncate(State& s, BranchId id, std::uint64_t n_tokens) {
  PF_ASSIGN_OR_RETURN(Branch * b, find_branch(s, id));
  const std::uint32_t P = s.pt();
  const std::uint64_t n = b->n_tokens();
  if (n_tokens > n) {
    return PF_ERROR(Code::kInvalidArgument, "truncate to " + std::to_string(n_tokens) +
                                                " tokens: branch " + std::to_string(id.value) +
                                                " has " + std::to_string(n));
  }
  if (n_tokens == n) return Status::ok();
  if (n_tokens > b->base_tokens) {
    const std::uint64_t keep_pages = (n_tokens + P - 1) / P - tail_first_page(*b, P);
    for (std::size_t i = keep_pages; i < b->tail.size(); ++i) s.pool->unref(b->tail[i]);
    b->tail.resize(keep_pages);
    b->tail_tokens.resize(n_tokens - b->base_tokens);
    return Status::ok();
  }
  // Everything left lives in the base chain: drop the tail and the chain nodes that no
  // longer contribute a token.
  release_tail(*s.pool, *b);
  b->base_tokens = n_tokens;
  while (b->base && n_tokens <= b->base->parent_tokens()) b->base = b->base->parent();
  if (n_tokens == 0) b->base = nullptr;
  return Status::ok();
}

Status free_branch(State& s, BranchId id) {
  PF_ASSIGN_OR_RETURN(Branch * b, find_branch(s, id));
  release_tail(*s.pool, *b);
  s.branches.erase(id);
  return Status::ok();
}

}  // namespace pf::rt::detail
