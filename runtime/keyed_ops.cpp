// Keyed pages: pages addressed by prefix key (DESIGN §4) and lease holds on them
// (docs/runtime.md "Keyed pages"). lookup_keys/alloc_pages give a lease holds; publish
// seals allocated pages and records them in the prefix index under their keys;
// release_pages / release_holds end holds. Every function checks all of its arguments
// before it changes anything. publish_pages leaves the digests of the pages it seals to the
// DigestBehind thread (runtime/digest_behind.h; docs/runtime.md "Keyed pages").
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "runtime/digest_behind.h"
#include "runtime/state.h"

namespace pf::rt::detail {

namespace {

std::string page_str(PageId p) {
  return "page " + std::to_string(p);
}

std::uint32_t held(const State& s, LeaseId lease, PageId page) {
  auto l = s.holds.find(lease);
  if (l == s.holds.end()) return 0;
  auto p = l->second.find(page);
  return p == l->second.end() ? 0 : p->second;
}

// Ends one hold of `lease` on `page` (the caller checked there is one).
void drop_hold(State& s, LeaseId lease, PageId page) {
  auto l = s.holds.find(lease);
  auto p = l->second.find(page);
  if (--p->second == 0) l->second.erase(p);
  if (l->second.empty()) s.holds.erase(l);
  s.pool->unref(page);
}

}  // namespace

Result<std::vector<PageId>> lookup_keys(State& s, const Namespace& ns, std::span<const Sha256> keys,
                                        bool hold, LeaseId lease) {
  std::vector<PageId> pages = s.index->lookup_keys(ns, keys);
  if (hold && !pages.empty()) {
    auto& mine = s.holds[lease];
    for (PageId p : pages) {
      s.pool->ref(p);
      ++mine[p];
    }
  }
  return pages;
}

Result<std::vector<PageId>> alloc_pages(State& s, std::size_t n, LeaseId lease) {
  if (n == 0) return std::vector<PageId>{};
  PF_TRY(ensure_free_pages(s, n));
  PF_ASSIGN_OR_RETURN(std::vector<PageId> pages, s.pool->allocate(n));
  auto& mine = s.holds[lease];
  for (PageId p : pages) mine[p] = 1;  // the allocation's own reference
  return pages;
}

namespace {

// publish_pages' argument checks against the current state.
Status check_publish(const State& s, std::span<const Sha256> keys, std::span<const PageId> pages,
                     const Sha256* parent_key, LeaseId lease) {
  if (keys.size() != pages.size()) {
    return PF_ERROR(Code::kInvalidArgument, "publish: " + std::to_string(keys.size()) +
                                                " keys for " + std::to_string(pages.size()) +
                                                " pages (one key per page)");
  }
  std::unordered_set<Sha256, Sha256Hash> seen_keys;
  for (const Sha256& k : keys) {
    if (!seen_keys.insert(k).second) {
      return PF_ERROR(Code::kInvalidArgument, "publish: key " + to_hex(k) + " is listed twice");
    }
  }
  if (parent_key != nullptr && seen_keys.count(*parent_key)) {
    return PF_ERROR(Code::kInvalidArgument,
                    "publish: parent key " + to_hex(*parent_key) + " is also one of the keys");
  }
  std::unordered_set<PageId> seen_pages;
  for (PageId p : pages) {
    if (!seen_pages.insert(p).second) {
      return PF_ERROR(Code::kInvalidArgument, "publish: " + page_str(p) + " is listed twice");
    }
    if (held(s, lease, p) == 0) {
      return PF_ERROR(Code::kInvalidArgument,
                      "publish: " + page_str(p) +
                          " is not held by this session (alloc_pages gives pages to publish; "
                          "a page is published once)");
    }
    if (s.pool->meta(p).state != PageState::kExclusive) {
      return PF_ERROR(Code::kInvalidArgument,
                      "publish: " + page_str(p) +
                          " is a sealed page (from lookup_keys or published already), not an "
                          "unpublished page from alloc_pages");
    }
  }
  return Status::ok();
}

}  // namespace

Result<std::size_t> publish_pages(State& s, const Namespace& ns, std::span<const Sha256> keys,
                                  std::span<const PageId> pages, const Sha256* parent_key,
                                  LeaseId lease) {
  PF_TRY(check_publish(s, keys, pages, parent_key, lease));
  // Nothing can fail from here on. Pages whose key is present are released, not sealed.
  std::vector<std::size_t> fresh;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (s.index->contains(ns, keys[i])) continue;
    s.pool->seal(pages[i]);  // its digest follows (DigestBehind)
    fresh.push_back(i);
  }
  std::vector<bool> added;
  const std::size_t n = s.index->publish(ns, keys, pages, parent_key, &added);
  for (std::size_t i : fresh) digest_behind_enqueue(s, ns, keys[i], pages[i]);
  // The index took its own reference on each new page; the allocation's reference ends
  // here (a page whose key was present is freed).
  for (PageId p : pages) drop_hold(s, lease, p);
  return n;
}

Status release_pages(State& s, std::span<const PageId> pages, LeaseId lease) {
  std::unordered_map<PageId, std::uint32_t> want;
  for (PageId p : pages) ++want[p];
  for (const auto& [p, k] : want) {
    const std::uint32_t have = held(s, lease, p);
    if (have < k) {
      return PF_ERROR(Code::kInvalidArgument,
                      "release: " + page_str(p) + " is " +
                          (have == 0 ? std::string("not held by this session")
                                     : "held " + std::to_string(have) + " times, released " +
                                           std::to_string(k) + " times"));
    }
  }
  for (PageId p : pages) drop_hold(s, lease, p);
  return Status::ok();
}

std::size_t release_holds(State& s, LeaseId lease) {
  auto l = s.holds.find(lease);
  if (l == s.holds.end()) return 0;
  std::map<PageId, std::uint32_t> mine = std::move(l->second);
  s.holds.erase(l);
  std::size_t n = 0;
  for (const auto& [p, k] : mine) {
    for (std::uint32_t i = 0; i < k; ++i) s.pool->unref(p);
    n += k;
  }
  return n;
}

}  // namespace pf::rt::detail
