// publish_pages seals pages and a background thread digests them after the call
// (runtime/digest_behind.h, docs/runtime.md "Keyed pages"): the digests it stores are
// correct, pending pages are never evicted or unmapped, a snapshot that needs a digest
// meanwhile computes it, the backlog stays bounded, and concurrent publishes from several
// leases keep every invariant. The window between digesting and storing is held open
// deterministically by the RuntimeOptions test hook (a gate the test opens), no sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

constexpr LeaseId kLease = 11;
constexpr LeaseId kOther = 12;

// Holds the digest thread in its window (digested, not stored) until opened.
class Gate {
 public:
  void arm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = true;
    reached_ = false;
    open_ = false;
  }
  // The hook: blocks the digest thread while armed and not open.
  void pass() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!armed_) return;
    reached_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    armed_ = false;
  }
  void wait_reached() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return reached_; });
  }
  void open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false, reached_ = false, open_ = false;
};

class DigestBehind : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { start(std::size_t{256} << 20); }
  void TearDown() override {
    gate_.open();  // never leave the digest thread blocked
    rt_.reset();
  }

  void start(std::size_t backlog_bytes) {
    rt_.reset();
    backend_.reset();
    auto choice = vmm::open_backend(GetParam());
    if (!choice.is_ok()) GTEST_SKIP() << choice.status().to_string();
    backend_ = std::move(choice->backend);
    RuntimeOptions o;
    o.geometry = *geometry_preset("tiny");
    o.pool.capacity_bytes = std::size_t{16} << 20;
    o.verify_each_op = true;
    o.digest_backlog_bytes = backlog_bytes;
    o.digest_hook_for_testing = [this] { gate_.pass(); };
    auto rt = Runtime::create(*backend_, o);
    if (!rt.is_ok()) GTEST_SKIP() << rt.status().to_string();
    rt_ = std::move(*rt);
    P_ = rt_->geometry().page_tokens;
  }

  std::vector<PageId> alloc_written(const std::vector<Token>& tokens, LeaseId lease) {
    return alloc_written_pages(*rt_, tokens, lease);
  }

  Gate gate_;
  std::unique_ptr<vmm::Backend> backend_;
  std::unique_ptr<Runtime> rt_;
  std::uint32_t P_ = 0;
};

TEST_P(DigestBehind, PublishReturnsFirstThenTheDigestsAreStored) {
  const auto tokens = iota_tokens(3 * P_);
  const auto pages = alloc_written(tokens, kLease);
  gate_.arm();
  auto r = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(*r, 3u);
  gate_.wait_reached();
  // Sealed, indexed and reusable at once; the digests are still to be stored.
  PoolStats s = rt_->pool_stats();
  EXPECT_EQ(s.sealed_pages, 3u);
  EXPECT_EQ(s.digest_pending_pages, 3u);
  EXPECT_EQ(rt_->held_pages(kLease), 0u);
  EXPECT_EQ(rt_->lookup_prefix(tokens), tokens.size());
  EXPECT_TRUE(rt_->verify().is_ok());
  gate_.open();
  rt_->wait_digests();
  s = rt_->pool_stats();
  EXPECT_EQ(s.digest_pending_pages, 0u);
  EXPECT_EQ(s.sealed_pages, 3u);
  EXPECT_EQ(s.cached_pages, 3u);       // the thread's holds ended: the index alone holds them
  EXPECT_TRUE(rt_->verify().is_ok());  // the stored digests match the bytes
  if (GetParam() != "host") return;
  // The digests really are stored: a changed byte in a sealed page is now found.
  std::byte* at = rt_->base() + std::size_t{pages[1]} * rt_->page_bytes();
  at[5] = ~at[5];
  EXPECT_FALSE(rt_->verify().is_ok());
}

// Pending pages stay evictable (a full pool never fails for want of a digest). An id
// evicted, reused and sealed again with other bytes while the thread digested its old
// bytes does not get that stale digest.
TEST_P(DigestBehind, PendingPagesStayEvictableAndAReusedIdGetsNoStaleDigest) {
  const auto tokens = iota_tokens(4 * P_);
  const auto pages = alloc_written(tokens, kLease);
  gate_.arm();
  ASSERT_TRUE(rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease).is_ok());
  gate_.wait_reached();  // the old bytes are digested, not stored
  EXPECT_EQ(rt_->evict(100), pages.size());
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
  // The same ids (free pages are reused lowest first), other bytes, sealed again.
  const auto other = iota_tokens(4 * P_, 9000);
  const auto again = alloc_written(other, kOther);
  EXPECT_EQ(again, pages);
  ASSERT_TRUE(rt_->publish_pages(keys_of(other, P_), again, nullptr, kOther).is_ok());
  gate_.open();
  rt_->wait_digests();
  EXPECT_EQ(rt_->pool_stats().digest_pending_pages, 0u);
  EXPECT_EQ(rt_->lookup_prefix(other), other.size());
  EXPECT_TRUE(rt_->verify().is_ok());  // every stored digest matches the bytes there now
  if (GetParam() != "host") return;
  std::byte* at = rt_->base() + std::size_t{again[0]} * rt_->page_bytes();
  at[3] = ~at[3];
  EXPECT_FALSE(rt_->verify().is_ok());  // the new sealing's digest is stored
}

// gc waits for the digests queued before it (they read the mapping), then releases every
// empty chunk: right after a publish, gc(drop_cache) leaves an empty pool.
TEST_P(DigestBehind, GcAfterPublishReleasesEveryChunk) {
  const auto tokens = iota_tokens(8 * P_);
  const auto pages = alloc_written(tokens, kLease);
  ASSERT_TRUE(rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease).is_ok());
  const GcResult gc = rt_->gc(/*drop_cache=*/true);
  EXPECT_EQ(gc.evicted_pages, pages.size());
  const PoolStats s = rt_->pool_stats();
  EXPECT_EQ(s.used_pages, 0u);
  EXPECT_EQ(s.chunks, 0u);
  EXPECT_EQ(s.digest_pending_pages, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

// A snapshot over published pages whose digests are pending computes them itself; the
// thread then finds them stored and keeps them.
TEST_P(DigestBehind, ASnapshotMeanwhileComputesTheDigests) {
  const auto tokens = iota_tokens(2 * P_);
  const auto pages = alloc_written(tokens, kLease);
  gate_.arm();
  ASSERT_TRUE(rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease).is_ok());
  gate_.wait_reached();
  auto b = rt_->create_branch(tokens, kOther);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->reused_tokens, tokens.size());
  auto snap = rt_->snapshot(b->id);
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_TRUE(rt_->verify().is_ok());
  gate_.open();
  rt_->wait_digests();
  EXPECT_TRUE(rt_->verify().is_ok());
  auto again = rt_->snapshot(b->id);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->cid, snap->cid);
}

// publish_pages returns only once at most digest_backlog_bytes of pages are pending.
TEST_P(DigestBehind, TheBacklogIsBounded) {
  const std::size_t page_bytes = rt_->page_bytes();
  for (std::size_t limit_pages : {std::size_t{0}, std::size_t{2}}) {
    start(limit_pages * page_bytes);
    for (Token round = 0; round < 6; ++round) {
      const auto tokens = iota_tokens(4 * P_, 1 + 1000 * round);
      const auto pages = alloc_written(tokens, kLease);
      ASSERT_TRUE(rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease).is_ok());
      EXPECT_LE(rt_->pool_stats().digest_pending_pages, limit_pages) << "round " << round;
    }
    rt_->wait_digests();
    EXPECT_TRUE(rt_->verify().is_ok());
  }
}

// A present key keeps its page: the new page is released, not sealed or queued.
TEST_P(DigestBehind, PresentKeysKeepTheirPages) {
  const auto tokens = iota_tokens(3 * P_);
  const auto keys = keys_of(tokens, P_);
  const auto theirs = alloc_written(tokens, kOther);
  ASSERT_TRUE(rt_->publish_pages(keys, theirs, nullptr, kOther).is_ok());
  const auto mine = alloc_written(tokens, kLease);
  auto r = rt_->publish_pages(keys, mine, nullptr, kLease);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(*r, 0u);
  rt_->wait_digests();
  EXPECT_EQ(rt_->pool_stats().used_pages, theirs.size());
  EXPECT_EQ(rt_->held_pages(kLease), 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

// The runtime's end digests what is still queued (the thread is not left blocked or
// reading freed memory): destroying it with a pending batch is clean.
TEST_P(DigestBehind, DestroyingTheRuntimeDrainsTheQueue) {
  const auto tokens = iota_tokens(4 * P_);
  const auto pages = alloc_written(tokens, kLease);
  gate_.arm();
  ASSERT_TRUE(rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease).is_ok());
  gate_.wait_reached();
  const auto more = iota_tokens(2 * P_, 5000);
  const auto more_pages = alloc_written(more, kLease);
  ASSERT_TRUE(rt_->publish_pages(keys_of(more, P_), more_pages, nullptr, kLease).is_ok());
  EXPECT_EQ(rt_->pool_stats().digest_pending_pages, 6u);
  gate_.open();
  rt_.reset();  // joins the thread after both batches
}

// Real threads, one lease each, publishing overlapping chains (shared first pages, so keys
// collide across leases), releasing some allocations unpublished, while another thread
// runs gc, lookups and the verifier.
TEST_P(DigestBehind, ConcurrentLeasesKeepEveryInvariant) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 25;
  std::atomic<int> failures{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const LeaseId lease = 100 + t;
      for (int round = 0; round < kRounds; ++round) {
        // Two shared pages, then pages of this thread's own.
        auto tokens = concat(iota_tokens(2 * P_, 1 + round % 3),
                             iota_tokens(2 * P_, 1000 * (t + 1) + 10 * round));
        const auto pages = alloc_written(tokens, lease);
        if (pages.size() != 4) {
          ++failures;
          continue;
        }
        if (round % 7 == 3) {
          if (!rt_->release_pages(pages, lease).is_ok()) ++failures;
          continue;
        }
        auto r = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, lease);
        if (!r.is_ok()) {
          ADD_FAILURE() << r.status().to_string();
          ++failures;
        }
        if (rt_->held_pages(lease) != 0) ++failures;
      }
    });
  }
  std::thread side([&] {
    while (!done.load()) {
      if (!rt_->verify().is_ok()) ++failures;
      rt_->gc(false);
      (void)rt_->lookup_prefix(iota_tokens(2 * P_, 1));
      std::this_thread::yield();
    }
  });
  for (std::thread& t : threads) t.join();
  done = true;
  side.join();
  EXPECT_EQ(failures.load(), 0);
  rt_->wait_digests();
  const Status v = rt_->verify();
  EXPECT_TRUE(v.is_ok()) << v.to_string();
  EXPECT_EQ(rt_->pool_stats().exclusive_pages, 0u);
  // Every chain published whole.
  for (int t = 0; t < kThreads; ++t) {
    const auto tokens = concat(iota_tokens(2 * P_, 1), iota_tokens(2 * P_, 1000 * (t + 1)));
    EXPECT_EQ(rt_->lookup_prefix(tokens), tokens.size()) << "thread " << t;
  }
  rt_->gc(/*drop_cache=*/true);
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, DigestBehind, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           return info.param == "host" ? std::string("host") : std::string("cuda");
                         });

}  // namespace
}  // namespace pf::rt::testing
