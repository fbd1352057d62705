// Keyed pages (docs/runtime.md "Keyed pages"): publish by key, lookup by key, adoption of
// key-published pages by token lookups, chains through parent keys, lease holds (never
// evicted; released by release/publish/lease end), and errors that change nothing. Every
// runtime here runs the invariant verifier after each mutating call (verify_each_op), which
// recounts every page's references from branches, snapshots, the index and lease holds.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/manifest.h"
#include "runtime/prefix_index.h"
#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

constexpr LeaseId kLease = 7;
constexpr LeaseId kOther = 8;

// The state a failed call must leave alone.
struct Books {
  PoolStats stats;
  std::size_t held_a = 0;
  std::size_t held_b = 0;
  bool operator==(const Books& o) const {
    return stats.used_pages == o.stats.used_pages &&
           stats.exclusive_pages == o.stats.exclusive_pages &&
           stats.sealed_pages == o.stats.sealed_pages &&
           stats.cached_pages == o.stats.cached_pages && stats.index_nodes == o.stats.index_nodes &&
           held_a == o.held_a && held_b == o.held_b;
  }
};

class KeyedPages : public BackendRuntimeTest {
 protected:
  std::vector<PageId> alloc_written(const std::vector<Token>& tokens, LeaseId lease = kLease) {
    return alloc_written_pages(*rt_, tokens, lease);
  }

  std::vector<PageId> publish_tokens(const std::vector<Token>& tokens) {
    auto pages = alloc_written(tokens);
    auto added = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease);
    EXPECT_TRUE(added.is_ok()) << added.status().to_string();
    return pages;
  }

  Books books() {
    return Books{rt_->pool_stats(), rt_->held_pages(kLease), rt_->held_pages(kOther)};
  }
};

TEST_P(KeyedPages, PublishThenLookupByKey) {
  const auto T = iota_tokens(3 * P_, 100);
  auto pages = alloc_written(T);
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(rt_->held_pages(kLease), 3u);
  EXPECT_EQ(rt_->pool_stats().exclusive_pages, 3u);
  const auto keys = keys_of(T, P_);
  auto added = rt_->publish_pages(keys, pages, nullptr, kLease);
  ASSERT_TRUE(added.is_ok()) << added.status().to_string();
  EXPECT_EQ(*added, 3u);
  EXPECT_EQ(rt_->held_pages(kLease), 0u);  // publish ends the allocation's holds
  const PoolStats st = rt_->pool_stats();
  EXPECT_EQ(st.sealed_pages, 3u);
  EXPECT_EQ(st.cached_pages, 3u);
  EXPECT_EQ(st.index_nodes, 3u);

  auto found = rt_->lookup_keys(keys, /*hold=*/false, kOther);
  ASSERT_TRUE(found.is_ok());
  EXPECT_EQ(*found, pages);
  EXPECT_EQ(rt_->held_pages(kOther), 0u);
  // The longest LEADING run: a missing first key finds nothing; a missing middle key stops.
  const Sha256 absent = prefix_page_key(nullptr, iota_tokens(P_, 9000));
  EXPECT_TRUE(rt_->lookup_keys(std::vector<Sha256>{absent, keys[1]}, false, kOther)->empty());
  EXPECT_EQ(
      *rt_->lookup_keys(std::vector<Sha256>{keys[0], keys[1], absent, keys[2]}, false, kOther),
      (std::vector<PageId>{pages[0], pages[1]}));
  EXPECT_TRUE(rt_->lookup_keys({}, true, kOther)->empty());
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, BranchByTokensAdoptsPublishedPagesAndSnapshotsThem) {
  const auto T = iota_tokens(3 * P_, 100);
  const auto pages = publish_tokens(T);
  const auto more = iota_tokens(P_ + 1, 500);
  const auto all = concat(T, more);

  auto nb = rt_->create_branch(all, kOther);
  ASSERT_TRUE(nb.is_ok());
  EXPECT_EQ(nb->reused_tokens, T.size());  // every published page reused, no copy
  auto view = rt_->branch_view(nb->id);
  EXPECT_EQ(view->pages, pages);
  EXPECT_EQ(view->tokens, T);
  EXPECT_TRUE(branch_bytes_match(*rt_, nb->id, T));
  // Adopted: the nodes now have tokens, so lookup_prefix (a token walk) finds them, and
  // the keys still lead to the same pages.
  EXPECT_EQ(rt_->lookup_prefix(all), T.size());
  EXPECT_EQ(*rt_->lookup_keys(keys_of(T, P_), false, kOther), pages);

  append_and_write(*rt_, nb->id, more, all);
  auto snap = rt_->snapshot(nb->id, "published-then-extended");
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  auto manifest = rt_->manifest(snap->cid);
  ASSERT_TRUE(manifest.is_ok());
  auto parsed = parse_manifest(*manifest);
  ASSERT_TRUE(parsed.is_ok());
  EXPECT_EQ(parsed->manifest.tokens, all);
  auto co = rt_->checkout(snap->cid, kOther);
  ASSERT_TRUE(co.is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, *co, all));
  EXPECT_EQ(rt_->branch_view(*co)->pages[0], pages[0]);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, ChainThroughParentKeyAndOrphansAdoptedLater) {
  const auto T = iota_tokens(3 * P_, 100);
  const auto keys = keys_of(T, P_);
  auto pages = alloc_written(T);
  // Pages 1 and 2 first, chained after key 0 that the index does not hold yet: they hang
  // under the root's key map (orphans), found by key but not by a lookup starting at key 0.
  auto added = rt_->publish_pages(std::vector<Sha256>{keys[1], keys[2]},
                                  std::vector<PageId>{pages[1], pages[2]}, &keys[0], kLease);
  ASSERT_TRUE(added.is_ok()) << added.status().to_string();
  EXPECT_EQ(*added, 2u);
  EXPECT_TRUE(rt_->lookup_keys(keys, false, kOther)->empty());
  EXPECT_EQ(rt_->lookup_keys(std::vector<Sha256>{keys[1], keys[2]}, false, kOther)->size(), 2u);
  EXPECT_EQ(rt_->create_branch(T, kOther)->reused_tokens, 0u);
  // Now the first page; a token walk adopts page 0, then finds page 1 by its chained key
  // (an orphan under the root) and adopts it too, then page 2 under it.
  added = rt_->publish_pages(std::vector<Sha256>{keys[0]}, std::vector<PageId>{pages[0]}, nullptr,
                             kLease);
  ASSERT_TRUE(added.is_ok());
  EXPECT_EQ(*added, 1u);
  EXPECT_EQ(*rt_->lookup_keys(keys, false, kOther), pages);
  auto nb = rt_->create_branch(T, kOther);
  EXPECT_EQ(nb->reused_tokens, T.size());
  EXPECT_EQ(rt_->branch_view(nb->id)->pages, pages);
  EXPECT_TRUE(branch_bytes_match(*rt_, nb->id, T));
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, PublishInPiecesWithParentKeyMatchesOnePiece) {
  const auto T = iota_tokens(4 * P_, 100);
  const auto keys = keys_of(T, P_);
  auto pages = alloc_written(T);
  ASSERT_TRUE(rt_->publish_pages(std::vector<Sha256>{keys[0], keys[1]},
                                 std::vector<PageId>{pages[0], pages[1]}, nullptr, kLease)
                  .is_ok());
  ASSERT_TRUE(rt_->publish_pages(std::vector<Sha256>{keys[2], keys[3]},
                                 std::vector<PageId>{pages[2], pages[3]}, &keys[1], kLease)
                  .is_ok());
  EXPECT_EQ(rt_->create_branch(T, kOther)->reused_tokens, T.size());
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, ExistingKeyKeepsItsPage) {
  const auto T = iota_tokens(2 * P_, 100);
  // Committed by a branch first (token nodes).
  auto b = rt_->create_branch({}, kOther);
  append_and_write(*rt_, b->id, T, T);
  ASSERT_TRUE(rt_->commit(b->id).is_ok());
  const auto committed = rt_->branch_view(b->id)->pages;
  const std::size_t used = rt_->pool_stats().used_pages;

  auto fresh = alloc_written(T);
  EXPECT_EQ(rt_->pool_stats().used_pages, used + 2);
  auto added = rt_->publish_pages(keys_of(T, P_), fresh, nullptr, kLease);
  ASSERT_TRUE(added.is_ok());
  EXPECT_EQ(*added, 0u);
  EXPECT_EQ(rt_->pool_stats().used_pages, used);  // the new pages were simply released
  EXPECT_EQ(*rt_->lookup_keys(keys_of(T, P_), false, kOther), committed);
  EXPECT_EQ(rt_->pool_stats().index_nodes, 2u);

  // The other way round: published first, then a branch with the same tokens commits its
  // own pages; the published pages stay in the index.
  const auto U = iota_tokens(2 * P_, 300);
  const auto published = publish_tokens(U);
  auto c = rt_->create_branch({}, kOther);
  append_and_write(*rt_, c->id, U, U);
  ASSERT_TRUE(rt_->commit(c->id).is_ok());
  EXPECT_EQ(*rt_->lookup_keys(keys_of(U, P_), false, kOther), published);
  EXPECT_EQ(rt_->pool_stats().index_nodes, 4u);
  EXPECT_EQ(rt_->create_branch(U, kOther)->reused_tokens, U.size());
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, HeldPagesAreNeverEvicted) {
  const auto T = iota_tokens(3 * P_, 100);
  const auto pages = publish_tokens(T);
  const auto keys = keys_of(T, P_);
  auto held = rt_->lookup_keys(std::vector<Sha256>{keys[0], keys[1], keys[2]}, true, kOther);
  ASSERT_TRUE(held.is_ok());
  EXPECT_EQ(rt_->held_pages(kOther), 3u);
  EXPECT_EQ(rt_->pool_stats().cached_pages, 0u);  // held: not "index only"
  EXPECT_EQ(rt_->evict(100), 0u);
  EXPECT_EQ(rt_->gc(/*drop_cache=*/true).evicted_pages, 0u);
  EXPECT_EQ(*rt_->lookup_keys(keys, false, kOther), pages);

  // Releasing the last page's hold makes exactly that leaf evictable.
  ASSERT_TRUE(rt_->release_pages(std::vector<PageId>{pages[2]}, kOther).is_ok());
  EXPECT_EQ(rt_->evict(100), 1u);
  EXPECT_EQ(rt_->lookup_keys(keys, false, kOther)->size(), 2u);
  ASSERT_TRUE(rt_->release_pages(std::vector<PageId>{pages[0], pages[1]}, kOther).is_ok());
  EXPECT_EQ(rt_->held_pages(kOther), 0u);
  EXPECT_EQ(rt_->evict(100), 2u);  // a chain of key-only nodes evicts leaf first
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, HoldsCountAndReleaseEndsOneEach) {
  const auto T = iota_tokens(P_, 100);
  const auto pages = publish_tokens(T);
  const auto keys = keys_of(T, P_);
  ASSERT_TRUE(rt_->lookup_keys(keys, true, kOther).is_ok());
  ASSERT_TRUE(rt_->lookup_keys(keys, true, kOther).is_ok());
  EXPECT_EQ(rt_->held_pages(kOther), 2u);
  // Three releases of a page held twice: refused, nothing changes.
  const Books before = books();
  auto r = rt_->release_pages(std::vector<PageId>{pages[0], pages[0], pages[0]}, kOther);
  EXPECT_EQ(r.code(), Code::kInvalidArgument);
  EXPECT_TRUE(books() == before);
  ASSERT_TRUE(rt_->release_pages(std::vector<PageId>{pages[0]}, kOther).is_ok());
  EXPECT_EQ(rt_->held_pages(kOther), 1u);
  // Another lease cannot release this lease's hold.
  EXPECT_EQ(rt_->release_pages(std::vector<PageId>{pages[0]}, kLease).code(),
            Code::kInvalidArgument);
  ASSERT_TRUE(rt_->release_pages(std::vector<PageId>{pages[0]}, kOther).is_ok());
  EXPECT_EQ(rt_->release_pages(std::vector<PageId>{pages[0]}, kOther).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(rt_->pool_stats().cached_pages, 1u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, LeaseEndReleasesEveryHold) {
  const auto T = iota_tokens(2 * P_, 100);
  const auto pages = publish_tokens(T);
  ASSERT_TRUE(rt_->lookup_keys(keys_of(T, P_), true, kOther).is_ok());
  ASSERT_TRUE(rt_->alloc_pages(3, kOther).is_ok());
  EXPECT_EQ(rt_->held_pages(kOther), 5u);
  EXPECT_EQ(rt_->pool_stats().used_pages, 5u);
  EXPECT_EQ(rt_->release_holds(kOther), 5u);
  EXPECT_EQ(rt_->held_pages(kOther), 0u);
  EXPECT_EQ(rt_->pool_stats().used_pages, 2u);  // the allocated pages are free again
  EXPECT_EQ(rt_->pool_stats().cached_pages, 2u);
  EXPECT_EQ(rt_->release_holds(kOther), 0u);  // idempotent
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, PublishErrorsChangeNothing) {
  const auto T = iota_tokens(2 * P_, 100);
  const auto keys = keys_of(T, P_);
  auto pages = alloc_written(T);
  const auto other_pages = alloc_written(iota_tokens(P_, 700), kOther);
  const auto published = publish_tokens(iota_tokens(P_, 900));
  const auto pub_keys = keys_of(iota_tokens(P_, 900), P_);
  ASSERT_TRUE(rt_->lookup_keys(pub_keys, true, kLease).is_ok());  // a sealed held page
  const Books before = books();

  auto expect_refused = [&](std::vector<Sha256> k, std::vector<PageId> p, const Sha256* parent,
                            const char* what) {
    auto r = rt_->publish_pages(k, p, parent, kLease);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << what << ": " << r.status().to_string();
    EXPECT_TRUE(books() == before) << what;
    EXPECT_TRUE(rt_->lookup_keys(keys, false, kLease)->empty()) << what;
  };
  expect_refused({keys[0]}, pages, nullptr, "more pages than keys");
  expect_refused(keys, {pages[0]}, nullptr, "more keys than pages");
  expect_refused({keys[0], keys[0]}, pages, nullptr, "a key twice");
  expect_refused(keys, {pages[0], pages[0]}, nullptr, "a page twice");
  expect_refused(keys, {pages[0], other_pages[0]}, nullptr, "another lease's page");
  expect_refused(keys, {pages[0], 100000}, nullptr, "a bogus page id");
  expect_refused(keys, {pages[0], published[0]}, nullptr, "a sealed (looked-up) page");
  expect_refused(keys, pages, &keys[1], "parent key among the keys");

  // Double publish: the second sees pages no longer held.
  ASSERT_TRUE(rt_->publish_pages(keys, pages, nullptr, kLease).is_ok());
  const Books after = books();
  auto again = rt_->publish_pages(keys, pages, nullptr, kLease);
  EXPECT_EQ(again.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(books() == after);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(KeyedPages, OutOfPagesAllocatesNothing) {
  // A pool of 6 pages (capacity below one chunk).
  Fixture f = make_runtime(GetParam(), *geometry_preset("tiny"), 6 * 512);
  if (!f.rt) GTEST_SKIP() << f.skip_reason;
  Runtime& rt = *f.rt;
  auto first = rt.alloc_pages(4, kLease);
  ASSERT_TRUE(first.is_ok());
  auto more = rt.alloc_pages(3, kLease);
  EXPECT_EQ(more.status().code(), Code::kOutOfMemory);
  EXPECT_EQ(rt.pool_stats().used_pages, 4u);
  EXPECT_EQ(rt.held_pages(kLease), 4u);
  // Cached (published, unheld) pages are evicted to make room; held ones never.
  const auto T = iota_tokens(4 * 4, 100);
  ASSERT_TRUE(rt.publish_pages(keys_of(T, 4), *first, nullptr, kLease).is_ok());
  ASSERT_TRUE(rt.lookup_keys(keys_of(T, 4), true, kOther).is_ok());  // holds all 4
  EXPECT_EQ(rt.alloc_pages(3, kLease).status().code(), Code::kOutOfMemory);
  ASSERT_TRUE(rt.release_pages(*rt.lookup_keys(keys_of(T, 4), false, kOther), kOther).is_ok());
  auto evicting = rt.alloc_pages(3, kLease);
  ASSERT_TRUE(evicting.is_ok()) << evicting.status().to_string();
  EXPECT_EQ(rt.lookup_keys(keys_of(T, 4), false, kOther)->size(), 3u);  // the LRU leaf went
  EXPECT_TRUE(rt.verify().is_ok());
}

TEST_P(KeyedPages, EverythingReleasedMeansEveryPageFree) {
  const auto T = iota_tokens(3 * P_, 100);
  publish_tokens(T);
  auto b = rt_->create_branch(T, kOther);
  ASSERT_TRUE(rt_->snapshot(b->id).is_ok());
  ASSERT_TRUE(rt_->lookup_keys(keys_of(T, P_), true, kOther).is_ok());
  ASSERT_TRUE(rt_->alloc_pages(2, kLease).is_ok());
  rt_->free_owned_by(kOther);
  rt_->release_holds(kOther);
  rt_->release_holds(kLease);
  for (const SnapshotInfo& s : rt_->snapshots()) ASSERT_TRUE(rt_->unpin(s.cid).is_ok());
  rt_->gc(/*drop_cache=*/true);
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
  EXPECT_EQ(rt_->pool_stats().index_nodes, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, KeyedPages, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           return info.param == "host" ? std::string("host") : std::string("cuda");
                         });

}  // namespace
}  // namespace pf::rt::testing
