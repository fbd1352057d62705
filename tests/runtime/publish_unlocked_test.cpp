// publish_pages digests outside the runtime's lock (docs/runtime.md "Locking"): concurrent
// publishes from several leases on real threads keep every invariant (verify_each_op runs
// the verifier after each call, and verify() re-checks every sealed page's digest at the
// end), and whatever happens to the pages between the unlocked digest and the final phase
// -- released, released and reallocated, listed by another publish, their keys published
// by another lease, a gc -- is handled: the call fails with nothing changed, or succeeds
// with correct digests. The between-phases changes are made deterministically by the
// RuntimeOptions test hook, no sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>

#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

constexpr LeaseId kLease = 11;
constexpr LeaseId kOther = 12;

class PublishUnlocked : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto choice = vmm::open_backend(GetParam());
    if (!choice.is_ok()) GTEST_SKIP() << choice.status().to_string();
    backend_ = std::move(choice->backend);
    RuntimeOptions o;
    o.geometry = *geometry_preset("tiny");
    o.pool.capacity_bytes = std::size_t{16} << 20;
    o.verify_each_op = true;
    o.publish_unlocked_hook_for_testing = [this] {
      if (hook_) {
        auto h = std::move(hook_);  // once
        hook_ = nullptr;
        h();
      }
    };
    auto rt = Runtime::create(*backend_, o);
    if (!rt.is_ok()) GTEST_SKIP() << rt.status().to_string();
    rt_ = std::move(*rt);
    P_ = rt_->geometry().page_tokens;
  }

  std::vector<PageId> alloc_written(const std::vector<Token>& tokens, LeaseId lease) {
    return alloc_written_pages(*rt_, tokens, lease);
  }

  std::unique_ptr<vmm::Backend> backend_;
  std::unique_ptr<Runtime> rt_;
  std::function<void()> hook_;  // runs once, in the next publish's unlocked window
  std::uint32_t P_ = 0;
};

TEST_P(PublishUnlocked, ReleasedBetweenPhasesFailsAndChangesNothing) {
  const auto tokens = iota_tokens(3 * P_);
  const auto pages = alloc_written(tokens, kLease);
  const PoolStats before = rt_->pool_stats();
  hook_ = [&] { ASSERT_TRUE(rt_->release_pages(pages, kLease).is_ok()); };
  auto r = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease);
  ASSERT_EQ(r.status().code(), Code::kConflict) << r.status().to_string();
  EXPECT_NE(r.status().message().find("released"), std::string::npos) << r.status().to_string();
  // Only the release happened: the pages are free, nothing sealed or indexed.
  const PoolStats after = rt_->pool_stats();
  EXPECT_EQ(after.used_pages, before.used_pages - pages.size());
  EXPECT_EQ(after.sealed_pages, 0u);
  EXPECT_EQ(after.index_nodes, 0u);
  EXPECT_EQ(rt_->held_pages(kLease), 0u);
  EXPECT_EQ(rt_->lookup_prefix(tokens), 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(PublishUnlocked, LeaseEndBetweenPhasesFails) {
  const auto tokens = iota_tokens(2 * P_);
  const auto pages = alloc_written(tokens, kLease);
  hook_ = [&] { EXPECT_EQ(rt_->release_holds(kLease), pages.size()); };
  auto r = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease);
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().to_string();
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

// The same page ids handed back to the same lease (free pages are reused lowest first)
// with other bytes: the call still sees that its pages were released.
TEST_P(PublishUnlocked, ReleasedAndReallocatedBetweenPhasesFails) {
  const auto tokens = iota_tokens(2 * P_);
  const auto pages = alloc_written(tokens, kLease);
  std::vector<PageId> again;
  hook_ = [&] {
    ASSERT_TRUE(rt_->release_pages(pages, kLease).is_ok());
    again = alloc_written(iota_tokens(2 * P_, 500), kLease);
  };
  auto r = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease);
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().to_string();
  EXPECT_EQ(again, pages);
  const PoolStats s = rt_->pool_stats();
  EXPECT_EQ(s.exclusive_pages, pages.size());  // the new allocation, untouched
  EXPECT_EQ(s.sealed_pages, 0u);
  EXPECT_EQ(rt_->held_pages(kLease), pages.size());
  EXPECT_TRUE(rt_->verify().is_ok());
  // The reallocated pages publish normally.
  auto ok = rt_->publish_pages(keys_of(iota_tokens(2 * P_, 500), P_), again, nullptr, kLease);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(*ok, 2u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(PublishUnlocked, SamePagesInTwoCallsOneWins) {
  const auto tokens = iota_tokens(2 * P_);
  const auto keys = keys_of(tokens, P_);
  const auto pages = alloc_written(tokens, kLease);
  Status second;
  hook_ = [&] { second = rt_->publish_pages(keys, pages, nullptr, kLease).status(); };
  auto r = rt_->publish_pages(keys, pages, nullptr, kLease);
  EXPECT_EQ(second.code(), Code::kConflict) << second.to_string();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(*r, 2u);
  EXPECT_EQ(rt_->lookup_prefix(tokens), tokens.size());
  EXPECT_TRUE(rt_->verify().is_ok());
}

// Another lease publishes the same keys meanwhile: this call's pages are released, not
// sealed (a present key keeps its page), and it reports no new key.
TEST_P(PublishUnlocked, KeysPublishedByAnotherLeaseMeanwhile) {
  const auto tokens = iota_tokens(3 * P_);
  const auto keys = keys_of(tokens, P_);
  const auto mine = alloc_written(tokens, kLease);
  const auto theirs = alloc_written(tokens, kOther);
  hook_ = [&] {
    auto r = rt_->publish_pages(keys, theirs, nullptr, kOther);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  };
  auto r = rt_->publish_pages(keys, mine, nullptr, kLease);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(*r, 0u);
  EXPECT_EQ(rt_->pool_stats().used_pages, theirs.size());
  EXPECT_EQ(rt_->held_pages(kLease), 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

// A key present at phase 1 (so its page was not digested) that is evicted before phase 3:
// the page is digested under the lock and published with a correct digest.
TEST_P(PublishUnlocked, KeyEvictedMeanwhileIsDigestedLate) {
  const auto tokens = iota_tokens(2 * P_);
  const auto keys = keys_of(tokens, P_);
  const auto first = alloc_written(tokens, kOther);
  ASSERT_TRUE(rt_->publish_pages(keys, first, nullptr, kOther).is_ok());
  const auto mine = alloc_written(tokens, kLease);
  hook_ = [&] { EXPECT_EQ(rt_->evict(100), first.size()); };
  auto r = rt_->publish_pages(keys, mine, nullptr, kLease);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(*r, 2u);
  EXPECT_EQ(rt_->pool_stats().sealed_pages, 2u);
  EXPECT_TRUE(rt_->verify().is_ok());  // digests match bytes
}

TEST_P(PublishUnlocked, GcMeanwhileKeepsTheMapping) {
  const auto tokens = iota_tokens(4 * P_);
  const auto pages = alloc_written(tokens, kLease);
  hook_ = [&] { rt_->gc(/*drop_cache=*/true); };
  auto r = rt_->publish_pages(keys_of(tokens, P_), pages, nullptr, kLease);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(rt_->verify().is_ok());
}

// Real threads, one lease each, publishing overlapping chains (shared first pages, so keys
// collide across leases), releasing some allocations unpublished, while another thread
// runs gc, lookups and the verifier.
TEST_P(PublishUnlocked, ConcurrentLeasesKeepEveryInvariant) {
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

INSTANTIATE_TEST_SUITE_P(Backends, PublishUnlocked, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           return info.param == "host" ? std::string("host") : std::string("cuda");
                         });

}  // namespace
}  // namespace pf::rt::testing
