#include "runtime/verifier.h"

#include <set>
#include <unordered_set>

#include "runtime/state.h"

namespace pf::rt::detail {

namespace {

Status fail(const std::string& what) {
  return Status(Code::kInternal, "invariant violated: " + what);
}

std::string page_str(PageId p) {
  return "page " + std::to_string(p);
}

}  // namespace

Status verify_structure(const State& s) {
  const PagePool& pool = *s.pool;
  const std::uint32_t P = pool.geometry().page_tokens;
  if (!pool.integrity_error().empty()) return fail(pool.integrity_error());
  const std::size_t n = pool.mapped_pages();
  std::vector<std::uint32_t> expect(n, 0);
  std::vector<std::uint8_t> in_shared(n, 0);  // held by a list or the index
  std::vector<std::uint8_t> in_tail(n, 0);
  auto hold = [&](PageId p, const char* who) -> Status {
    if (p >= n) return fail(std::string(who) + " holds unmapped " + page_str(p));
    ++expect[p];
    return Status::ok();
  };

  // PageLists reachable from branches and snapshots, each once.
  std::unordered_set<const PageList*> lists;
  auto visit_chain = [&](const PageList* l) -> Status {
    for (; l != nullptr && lists.insert(l).second; l = l->parent().get()) {
      const std::uint64_t total = l->total_tokens();
      const std::uint64_t want = l->tokens().empty() ? 0 : (total + P - 1) / P - l->first_page();
      if (l->pages().size() != want) {
        return fail("page list with " + std::to_string(l->pages().size()) + " pages covers " +
                    std::to_string(l->tokens().size()) + " tokens after " +
                    std::to_string(l->parent_tokens()));
      }
      if (l->parent_tokens() > 0 &&
          (l->parent() == nullptr || l->parent()->total_tokens() < l->parent_tokens())) {
        return fail("page list continues past its parent");
      }
      for (PageId p : l->pages()) {
        PF_TRY(hold(p, "a page list"));
        in_shared[p] = 1;
        if (pool.meta(p).state != PageState::kSealed) {
          return fail(page_str(p) + " in a shared page list is not sealed");
        }
      }
    }
    return Status::ok();
  };
  for (const auto& [id, b] : s.branches) {
    const std::string name = "branch " + std::to_string(id.value);
    if (b.base == nullptr ? b.base_tokens != 0 : b.base_tokens > b.base->total_tokens()) {
      return fail(name + " sees more base tokens than its base holds");
    }
    if (b.tail.empty() != b.tail_tokens.empty()) return fail(name + " tail pages/tokens disagree");
    if (!b.tail.empty() && b.tail.size() != (b.n_tokens() + P - 1) / P - tail_first_page(b, P)) {
      return fail(name + " tail has " + std::to_string(b.tail.size()) + " pages for " +
                  std::to_string(b.tail_tokens.size()) + " tokens");
    }
    if (!b.parents) return fail(name + " has no parents list");
    PF_TRY(visit_chain(b.base.get()));
    for (PageId p : b.tail) {
      PF_TRY(hold(p, name.c_str()));
      in_tail[p] += 1;
      if (pool.meta(p).refs == 0) return fail(name + " holds unreferenced " + page_str(p));
    }
    const std::vector<PageId> view = branch_pages(b, P);
    if (view.size() != (b.n_tokens() + P - 1) / P) return fail(name + " page count mismatch");
    if (std::unordered_set<PageId>(view.begin(), view.end()).size() != view.size()) {
      return fail(name + " sees one page twice");
    }
  }
  for (const auto& [cid, snap] : s.snapshots) {
    if (cid_of(snap.json) != cid) return fail("snapshot " + cid + " bytes do not hash to its CID");
    if (!snap.list) {
      // Paged out: only a durable snapshot of a runtime with a store may be (runtime/tier.h).
      if (!s.tier || !snap.durable)
        return fail("snapshot " + cid +
                    " has no pages in memory "
                    "and none in a store");
      continue;
    }
    if (snap.list->parent() != nullptr) return fail("snapshot " + cid + " list is not flat");
    if (snap.list->pages().size() != snap.manifest.pages.size() ||
        snap.list->tokens() != snap.manifest.tokens) {
      return fail("snapshot " + cid + " list disagrees with its manifest");
    }
    PF_TRY(visit_chain(snap.list.get()));
  }
  for (const auto& [name, cid] : s.refs) {
    if (!s.snapshots.count(cid)) return fail("ref '" + name + "' names " + cid + ", not pinned");
  }
  if (static_cast<std::int64_t>(lists.size()) != pool.live_lists()) {
    return fail(std::to_string(pool.live_lists()) + " page lists alive, " +
                std::to_string(lists.size()) + " reachable");
  }
  // Prefix index: one reference per node, sealed full pages, chained keys for token
  // nodes (whose parent is the root or a token node), every node in the key map once.
  Status index_status = Status::ok();
  std::vector<std::uint8_t> indexed(n, 0);
  std::size_t index_nodes = 0;
  std::set<Namespace> namespaces;  // those holding a node: every root must be one of them
  s.index->for_each([&](const PrefixIndex::Node& node) {
    if (!index_status.is_ok()) return;
    ++index_nodes;
    if (Status st = hold(node.page, "the prefix index"); !st.is_ok()) {
      index_status = st;
      return;
    }
    in_shared[node.page] = 1;
    if (indexed[node.page]++) index_status = fail(page_str(node.page) + " indexed twice");
    const bool root_child = node.parent == nullptr || node.parent->parent == nullptr;
    if (node.key_only()) {
      const bool placed = node.parent != nullptr && [&] {
        auto it = node.parent->key_children.find(node.key);
        return it != node.parent->key_children.end() && it->second.get() == &node;
      }();
      if (!placed) {
        index_status = fail("key-only index node of " + page_str(node.page) +
                            " is not under its key in its parent");
      }
    } else if (node.tokens.size() != P || (!root_child && node.parent->key_only()) ||
               node.key != prefix_page_key(root_child ? nullptr : &node.parent->key, node.tokens)) {
      index_status = fail("prefix index key of " + page_str(node.page) + " is wrong");
    }
    if (node.parent == nullptr || node.parent->ns != node.ns) {
      index_status = fail("index node of " + page_str(node.page) + " lies under another namespace");
    }
    namespaces.insert(node.ns);
    if (s.index->find(node.ns, node.key) != &node) {
      index_status = fail("key map does not lead to the index node of " + page_str(node.page));
    }
    if (pool.meta(node.page).state != PageState::kSealed) {
      index_status = fail("indexed " + page_str(node.page) + " is not sealed");
    }
  });
  PF_TRY(index_status);
  if (namespaces.size() != s.index->namespaces()) {
    return fail("prefix index keeps " + std::to_string(s.index->namespaces()) +
                " namespace roots for " + std::to_string(namespaces.size()) +
                " namespaces holding nodes");
  }
  if (index_nodes != s.index->size() || s.index->key_map_size() != index_nodes) {
    return fail("prefix index counts " + std::to_string(s.index->size()) + " nodes and " +
                std::to_string(s.index->key_map_size()) + " keys; " + std::to_string(index_nodes) +
                " reachable");
  }

  // Lease holds: one reference per hold; an exclusive page (from alloc_pages) is held once,
  // by one lease and nothing else.
  std::vector<std::uint8_t> alloc_held(n, 0);
  for (const auto& [lease, pages] : s.holds) {
    if (pages.empty()) return fail("lease " + std::to_string(lease) + " has an empty hold list");
    for (const auto& [p, count] : pages) {
      if (count == 0) {
        return fail("lease " + std::to_string(lease) + " holds " + page_str(p) + " 0 times");
      }
      for (std::uint32_t i = 0; i < count; ++i) PF_TRY(hold(p, "a lease hold"));
      if (pool.meta(p).state == PageState::kExclusive) alloc_held[p] += count;
    }
  }

  std::size_t free_count = 0;
  std::size_t quarantined = 0;
  for (PageId p = 0; p < n; ++p) {
    const PageMeta& m = pool.meta(p);
    if (m.refs != expect[p]) {
      return fail(page_str(p) + " refcount " + std::to_string(m.refs) + ", holders " +
                  std::to_string(expect[p]));
    }
    const bool free = m.state == PageState::kFree;
    const bool retired = m.state == PageState::kQuarantined;
    if ((free || retired) != (m.refs == 0) || free != (pool.free_set().count(p) == 1)) {
      return fail(page_str(p) + " state " + std::string(page_state_name(m.state)) +
                  " disagrees with refs/free set");
    }
    free_count += free;
    quarantined += m.quarantined;
    if (m.quarantined ? !(retired || m.state == PageState::kSealed) : retired) {
      return fail(page_str(p) + " state " + std::string(page_state_name(m.state)) +
                  " disagrees with its quarantine flag");
    }
    if (m.loading && (m.state != PageState::kSealed || !m.has_digest || m.refs == 0)) {
      return fail("loading " + page_str(p) + " is not a held sealed page with a digest");
    }
    if (retired && (m.in_index || m.has_digest)) {
      return fail("unheld quarantined " + page_str(p) + " keeps an index flag or a digest");
    }
    if (m.state == PageState::kExclusive &&
        (in_shared[p] || std::uint32_t{in_tail[p]} + alloc_held[p] != 1)) {
      return fail("exclusive " + page_str(p) + " is shared");
    }
    if (in_tail[p] > 1) return fail(page_str(p) + " is in two branch tails");
    if (m.in_index != (indexed[p] == 1)) return fail(page_str(p) + " in_index flag is wrong");
    if (m.has_digest && m.state != PageState::kSealed) {
      return fail(page_str(p) + " has a digest but is not sealed");
    }
  }
  if (free_count != pool.free_set().size()) return fail("free set holds non-free pages");

  if (quarantined != pool.quarantined_pages()) {
    return fail(std::to_string(quarantined) + " pages flagged quarantined, the pool counts " +
                std::to_string(pool.quarantined_pages()));
  }
  return Status::ok();
}

Result<std::vector<PageId>> find_corrupt_pages(const State& s) {
  const PagePool& pool = *s.pool;
  const std::uint32_t P = pool.geometry().page_tokens;
  const std::size_t n = pool.mapped_pages();
  std::vector<std::uint8_t> bad(n, 0);
  // Stored digests of sealed pages.
  std::vector<PageId> pages;
  std::vector<std::uint32_t> fills;
  std::vector<PageDigest> stored;
  for (PageId p = 0; p < n; ++p) {
    const PageMeta& m = pool.meta(p);
    if (!m.has_digest || m.quarantined || m.loading) continue;  // loading: bytes not there yet
    pages.push_back(p);
    fills.push_back(m.digest_fill);
    stored.push_back({m.k, m.v});
  }
  std::vector<PageDigest> now(pages.size());
  PF_TRY(digest_pages(*s.kernels, pool.geometry(), pool.base(), pages, fills, now));
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (!(now[i].k == stored[i].k) || !(now[i].v == stored[i].v)) bad[pages[i]] = 1;
  }
  // Every snapshot's manifest digests (a page may be pinned at another fill than the one
  // its stored digest covers).
  for (const auto& [cid, snap] : s.snapshots) {
    if (!snap.resident()) continue;
    const auto& all = snap.list->pages();
    // Pages still being paged in hold no bytes yet: they are checked as they are read.
    std::vector<PageId> sp;
    std::vector<std::uint32_t> f;
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (pool.meta(all[i]).loading) continue;
      sp.push_back(all[i]);
      f.push_back(i + 1 == all.size() ? fill_in_last_page(snap.n_tokens, P) : P);
      at.push_back(i);
    }
    std::vector<PageDigest> d(sp.size());
    PF_TRY(digest_pages(*s.kernels, pool.geometry(), pool.base(), sp, f, d));
    for (std::size_t j = 0; j < sp.size(); ++j) {
      const ManifestPage& mp = snap.manifest.pages[at[j]];
      if (d[j].k.hex() != mp.k || d[j].v.hex() != mp.v) {
        if (!pool.meta(sp[j]).quarantined) bad[sp[j]] = 1;
      }
    }
  }
  std::vector<PageId> out;
  for (PageId p = 0; p < n; ++p) {
    if (bad[p]) out.push_back(p);
  }
  return out;
}

Status verify(const State& s) {
  PF_TRY(verify_structure(s));
  if (!s.options.verify_digests) return Status::ok();
  PF_ASSIGN_OR_RETURN(std::vector<PageId> bad, find_corrupt_pages(s));
  if (bad.empty()) return Status::ok();
  return PF_ERROR(Code::kDataCorrupt,
                  "sealed " + page_str(bad[0]) + " bytes changed after its digest (" +
                      std::to_string(bad.size()) + " such pages, not quarantined yet)");
}

PoolStats pool_stats(const State& s) {
  const PagePool& pool = *s.pool;
  const std::uint32_t P = pool.geometry().page_tokens;
  PoolStats st;
  st.page_bytes = pool.page_bytes();
  st.chunk_bytes = pool.chunk_bytes();
  st.chunks = pool.range().chunk_count();
  st.capacity_pages = pool.capacity_pages();
  st.mapped_pages = pool.mapped_pages();
  st.used_pages = pool.used_pages();
  st.free_pages = st.capacity_pages - st.used_pages;
  const std::size_t n = pool.mapped_pages();
  // Distinct holders per page: each branch, each snapshot, the index.
  std::vector<std::uint32_t> seen(n, 0);
  auto count = [&](const std::vector<PageId>& pages) {
    for (PageId p : pages) ++seen[p];
  };
  for (const auto& [id, b] : s.branches) count(branch_pages(b, P));
  for (const auto& [cid, snap] : s.snapshots) {
    if (snap.resident()) count(snap.list->pages());
  }
  s.index->for_each([&](const PrefixIndex::Node& node) { ++seen[node.page]; });
  for (PageId p = 0; p < n; ++p) {
    const PageMeta& m = pool.meta(p);
    if (m.state == PageState::kExclusive) ++st.exclusive_pages;
    if (m.state == PageState::kSealed) ++st.sealed_pages;
    if (m.in_index && m.refs == 1) ++st.cached_pages;
    if (seen[p] > 1) ++st.shared_pages;
  }
  st.quarantined_pages = pool.quarantined_pages();
  st.branches = s.branches.size();
  st.snapshots = s.snapshots.size();
  st.index_nodes = s.index->size();
  st.index_namespaces = s.index->namespaces();
  return st;
}

}  // namespace pf::rt::detail
