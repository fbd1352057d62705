// Keyed pages: pages addressed by prefix key (DESIGN §4) and lease holds on them
// (docs/runtime.md "Keyed pages"). lookup_keys/alloc_pages give a lease holds; publish
// seals allocated pages and records them in the prefix index under their keys;
// release_pages / release_holds end holds. Every function checks all of its arguments
// before it changes anything. publish_pages digests outside the Runtime's lock in three
// phases (publish_prepare, publish_digest, publish_finish; docs/runtime.md "Locking").
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

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
  if (--p->second == 0) {
    l->second.erase(p);
    s.publishing.erase(page);  // a publish digesting it outside the lock will fail
  }
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

// publish_pages' argument checks against the current state (runs in phase 1, and again in
// phase 3 for the pages: see publish_finish).
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

// Ends `plan`'s registration of its pages (those still registered under its ticket).
void unregister(State& s, const PublishPlan& plan, std::span<const PageId> pages) {
  for (PageId p : pages) {
    auto it = s.publishing.find(p);
    if (it != s.publishing.end() && it->second == plan.ticket) s.publishing.erase(it);
  }
  --s.unlocked_digests;
}

}  // namespace

Result<PublishPlan> publish_prepare(State& s, const Namespace& ns, std::span<const Sha256> keys,
                                    std::span<const PageId> pages, const Sha256* parent_key,
                                    LeaseId lease) {
  PF_TRY(check_publish(s, keys, pages, parent_key, lease));
  for (PageId p : pages) {
    if (s.publishing.count(p)) {
      return PF_ERROR(Code::kConflict, "publish: " + page_str(p) +
                                           " is being published by another call of this session");
    }
  }
  PublishPlan plan;
  plan.ticket = ++s.publish_tickets;
  const std::uint32_t P = s.pt();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    // Pages whose key is present will be released, not sealed: no digest needed.
    if (!s.index->contains(ns, keys[i])) plan.fresh.push_back(pages[i]);
  }
  plan.fills.assign(plan.fresh.size(), P);
  plan.digests.resize(plan.fresh.size());
  for (PageId p : pages) s.publishing.emplace(p, plan.ticket);
  ++s.unlocked_digests;
  return plan;
}

Status publish_digest(kernels::PageKernels& kernels, const Geometry& g, const std::byte* base,
                      PublishPlan& plan) {
  return digest_pages(kernels, g, base, plan.fresh, plan.fills, plan.digests);
}

Result<std::size_t> publish_finish(State& s, const Namespace& ns, std::span<const Sha256> keys,
                                   std::span<const PageId> pages, const Sha256* parent_key,
                                   LeaseId lease, const PublishPlan& plan, Status ready) {
  // Every page still registered under this call's ticket was held by `lease` all along
  // (a hold's end unregisters its page), so nothing else wrote, sealed or freed it.
  for (PageId p : pages) {
    auto it = s.publishing.find(p);
    if (ready.is_ok() && (it == s.publishing.end() || it->second != plan.ticket)) {
      ready = PF_ERROR(Code::kConflict,
                       "publish: " + page_str(p) +
                           " was released while its digest was computed (release_pages or the "
                           "session's end); nothing was published");
    }
  }
  if (ready.is_ok()) ready = check_publish(s, keys, pages, parent_key, lease);
  unregister(s, plan, pages);
  PF_TRY(ready);
  // Keys may have come or gone meanwhile: digest, under the lock, any page whose key went
  // missing after phase 1 (rare: its entry was evicted); pages whose key came are released.
  const std::uint32_t P = s.pt();
  std::unordered_map<PageId, const PageDigest*> digested;
  for (std::size_t i = 0; i < plan.fresh.size(); ++i) digested[plan.fresh[i]] = &plan.digests[i];
  std::vector<PageId> fresh, late;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (s.index->contains(ns, keys[i])) continue;
    fresh.push_back(pages[i]);
    if (!digested.count(pages[i])) late.push_back(pages[i]);
  }
  std::vector<std::uint32_t> late_fills(late.size(), P);
  PF_ASSIGN_OR_RETURN(std::vector<PageDigest> late_d, digests_for(s, late, late_fills));
  for (std::size_t i = 0; i < late.size(); ++i) digested[late[i]] = &late_d[i];
  // Nothing can fail from here on.
  for (PageId p : fresh) {
    PageMeta& m = s.pool->meta(p);
    const PageDigest& d = *digested[p];
    s.pool->seal(p);
    m.has_digest = true;
    m.digest_fill = P;
    m.k = d.k;
    m.v = d.v;
  }
  std::vector<bool> added;
  const std::size_t n = s.index->publish(ns, keys, pages, parent_key, &added);
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
    s.publishing.erase(p);  // a publish digesting it outside the lock will fail
    for (std::uint32_t i = 0; i < k; ++i) s.pool->unref(p);
    n += k;
  }
  return n;
}

}  // namespace pf::rt::detail
