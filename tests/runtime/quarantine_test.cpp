// Boot-epoch ids (runtime/ids.h) and the quarantine of damaged sealed pages (docs/runtime.md
// "Verification and quarantine"), on the host backend with the verifier on: a sealed page
// whose bytes change is quarantined before the next mutating call; every source reaching it
// answers kDataCorrupt naming the page and the CID or branch and changes nothing, while
// everything else keeps working; the page is never handed out again.
#include <gtest/gtest.h>

#include "runtime/ids.h"
#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

TEST(BootEpochIds, CarryTheEpochAndNeverWrap) {
  IdSequence ids(7);
  EXPECT_EQ(*ids.next(), (std::uint64_t{7} << 32) | 1);
  EXPECT_EQ(*ids.next(), (std::uint64_t{7} << 32) | 2);
  EXPECT_EQ(id_epoch((std::uint64_t{7} << 32) | 2), 7u);

  IdSequence last(kMaxBootEpoch, 0xFFFFFFFEu);
  EXPECT_EQ(last.remaining(), 1u);
  Result<std::uint64_t> id = last.next();
  ASSERT_TRUE(id.is_ok());
  EXPECT_EQ(*id, (std::uint64_t{kMaxBootEpoch} << 32) | 0xFFFFFFFFu);
  EXPECT_LT(*id, std::uint64_t{1} << 53);  // exact in a JSON number
  Result<std::uint64_t> over = last.next();
  ASSERT_FALSE(over.is_ok());
  EXPECT_EQ(over.status().code(), Code::kOutOfMemory);
  EXPECT_EQ(last.remaining(), 0u);  // still exhausted: no wrap to sequence 0 or 1
  EXPECT_FALSE(last.next().is_ok());
}

TEST(BootEpochIds, RuntimeBranchIdsCarryItsEpoch) {
  auto backend = vmm::open_backend("host");
  ASSERT_TRUE(backend.is_ok());
  RuntimeOptions o;
  o.geometry = *geometry_preset("tiny");
  o.pool.capacity_bytes = std::size_t{4} << 20;
  o.id_epoch = kMaxBootEpoch + 1;
  EXPECT_EQ(Runtime::create(*backend->backend, o).status().code(), Code::kInvalidArgument);
  o.id_epoch = 42;
  auto rt = Runtime::create(*backend->backend, o);
  ASSERT_TRUE(rt.is_ok()) << rt.status().to_string();
  auto a = (*rt)->create_branch();
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->id.value, (std::uint64_t{42} << 32) | 1);
  auto kids = (*rt)->fork(a->id, 2);
  ASSERT_TRUE(kids.is_ok());
  for (BranchId k : kids->branches) EXPECT_EQ(id_epoch(k.value), 42u);
  // An id of another epoch with the same sequence names nothing here.
  EXPECT_EQ((*rt)->free_branch(BranchId{(std::uint64_t{41} << 32) | 1}).code(), Code::kNotFound);
  EXPECT_EQ((*rt)->branches().size(), 3u);
}

class Quarantine : public ::testing::Test {
 protected:
  void SetUp() override {
    f_ = make_runtime("host", *geometry_preset("tiny"), std::size_t{8} << 20);
    ASSERT_TRUE(f_.rt) << f_.skip_reason;
    rt_ = f_.rt.get();
  }
  // A snapshot of a fresh branch holding `tokens` with their KV written and its full pages
  // committed to the prefix index; the branch is freed, so the snapshot and the index hold
  // its pages. `page` receives its first page.
  std::string snapshot_of(const std::vector<Token>& tokens, PageId* page) {
    auto nb = rt_->create_branch();
    EXPECT_TRUE(nb.is_ok());
    AppendResult ar = append_and_write(*rt_, nb->id, tokens, tokens);
    if (page != nullptr && !ar.runs.empty()) *page = ar.runs[0].page;
    EXPECT_TRUE(rt_->commit(nb->id).is_ok());
    auto snap = rt_->snapshot(nb->id);
    EXPECT_TRUE(snap.is_ok()) << snap.status().to_string();
    EXPECT_TRUE(rt_->free_branch(nb->id).is_ok());
    return snap.is_ok() ? snap->cid : "";
  }
  // Flips one byte of a page's first token's K, as a rogue writer through a mapping would.
  void corrupt(PageId page) {
    std::byte* at = rt_->base() + std::size_t{page} * rt_->page_bytes();
    *at = static_cast<std::byte>(~static_cast<unsigned char>(*at));
  }
  struct State {
    std::vector<BranchId> branches;
    PoolStats stats;
    std::size_t snapshots = 0;
  };
  State state() { return State{rt_->branches(), rt_->pool_stats(), rt_->snapshots().size()}; }
  void expect_unchanged(const State& before) {
    const State now = state();
    EXPECT_EQ(now.branches, before.branches);
    EXPECT_EQ(now.snapshots, before.snapshots);
    EXPECT_EQ(now.stats.used_pages, before.stats.used_pages);
    EXPECT_EQ(now.stats.free_pages, before.stats.free_pages);
    EXPECT_EQ(now.stats.sealed_pages, before.stats.sealed_pages);
    EXPECT_EQ(now.stats.exclusive_pages, before.stats.exclusive_pages);
    EXPECT_EQ(now.stats.quarantined_pages, before.stats.quarantined_pages);
  }
  void expect_corrupt(const Status& s, const std::string& cid, PageId page) {
    EXPECT_EQ(s.code(), Code::kDataCorrupt) << s.to_string();
    EXPECT_NE(s.message().find(cid), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("pool page " + std::to_string(page)), std::string::npos)
        << s.message();
  }

  Fixture f_;
  Runtime* rt_ = nullptr;
};

TEST_F(Quarantine, DamagedSnapshotIsRefusedAndEverythingElseWorks) {
  PageId bad = 0;
  const std::string broken = snapshot_of(iota_tokens(10, 1), &bad);
  const std::string healthy = snapshot_of(iota_tokens(10, 500), nullptr);
  corrupt(bad);
  // Found, not yet quarantined: verify() names the page.
  EXPECT_EQ(rt_->verify().code(), Code::kDataCorrupt);

  // A fork from an unrelated snapshot succeeds and creates exactly its children (the
  // pre-op scan quarantines the page first).
  const std::size_t branches_before = rt_->branches().size();
  auto kids = rt_->fork(healthy, 3);
  ASSERT_TRUE(kids.is_ok()) << kids.status().to_string();
  EXPECT_EQ(kids->branches.size(), 3u);
  EXPECT_EQ(rt_->branches().size(), branches_before + 3);
  EXPECT_EQ(rt_->pool_stats().quarantined_pages, 1u);
  EXPECT_TRUE(rt_->verify().is_ok()) << rt_->verify().to_string();  // known now

  // Every way of building on the damaged snapshot fails cleanly and changes nothing.
  const State before = state();
  expect_corrupt(rt_->fork(broken, 2).status(), broken, bad);
  expect_unchanged(before);
  expect_corrupt(rt_->checkout(broken).status(), broken, bad);
  expect_unchanged(before);
  expect_corrupt(rt_->merge(broken, healthy).status(), broken, bad);
  expect_unchanged(before);
  expect_corrupt(rt_->manifest(broken).status(), broken, bad);
  ASSERT_TRUE(rt_->set_ref("bad", broken).is_ok());
  expect_corrupt(rt_->checkout("bad").status(), broken, bad);
  expect_unchanged(before);

  // Prefix reuse stops before the damaged page: a new branch over the same tokens reuses
  // nothing (the page is the first one), where a healthy prefix is reused.
  auto reuse = rt_->create_branch(iota_tokens(10, 500));
  ASSERT_TRUE(reuse.is_ok());
  EXPECT_EQ(reuse->reused_tokens, 8u);
  auto again = rt_->create_branch(iota_tokens(10, 1));
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->reused_tokens, 0u);

  // Other work goes on: a branch from the healthy snapshot writes, snapshots and forks.
  auto co = rt_->checkout(healthy);
  ASSERT_TRUE(co.is_ok()) << co.status().to_string();
  append_and_write(*rt_, *co, iota_tokens(3, 900),
                   concat(iota_tokens(10, 500), iota_tokens(3, 900)));
  auto snap = rt_->snapshot(*co);
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_TRUE(rt_->fork(snap->cid, 2).is_ok());
  EXPECT_TRUE(rt_->verify().is_ok()) << rt_->verify().to_string();
}

TEST_F(Quarantine, BranchesReachingTheDamagedPageAreRefused) {
  auto b = rt_->create_branch();
  ASSERT_TRUE(b.is_ok());
  AppendResult ar = append_and_write(*rt_, b->id, iota_tokens(6, 1), iota_tokens(6, 1));
  const PageId first = ar.runs[0].page;
  const PageId last = ar.runs[1].page;
  auto snap = rt_->snapshot(b->id);  // seals both pages; the branch now shares them
  ASSERT_TRUE(snap.is_ok());
  corrupt(last);
  auto other = rt_->create_branch();
  ASSERT_TRUE(other.is_ok());
  EXPECT_EQ(rt_->pool_stats().quarantined_pages, 1u);

  const State before = state();
  const std::string name = "branch " + std::to_string(b->id.value);
  expect_corrupt(rt_->fork(b->id, 2).status(), name, last);
  expect_corrupt(rt_->snapshot(b->id).status(), name, last);
  // Appending copies the shared, partially filled last page: refused, nothing allocated.
  expect_corrupt(rt_->append(b->id, iota_tokens(1, 7)).status(), name, last);
  expect_unchanged(before);
  // The branch itself may still be truncated and freed.
  EXPECT_TRUE(rt_->truncate(b->id, 4).is_ok());
  auto kids = rt_->fork(b->id, 1);  // now it reaches only the intact first page
  ASSERT_TRUE(kids.is_ok()) << kids.status().to_string();
  EXPECT_EQ(rt_->branch_view(kids->branches[0])->pages, std::vector<PageId>{first});
  EXPECT_TRUE(rt_->free_branch(b->id).is_ok());
}

TEST_F(Quarantine, QuarantinedPagesAreNeverHandedOutAgain) {
  PageId bad = 0;
  const std::string broken = snapshot_of(iota_tokens(4, 1), &bad);
  corrupt(bad);
  auto probe = rt_->create_branch();  // the scan quarantines the page
  ASSERT_TRUE(probe.is_ok());
  ASSERT_EQ(rt_->pool_stats().quarantined_pages, 1u);
  // Unpinning works on a damaged snapshot; the page is then held by nothing, yet stays out
  // of the free pages.
  ASSERT_TRUE(rt_->unpin(broken).is_ok());
  rt_->gc(true);
  const PoolStats s = rt_->pool_stats();
  EXPECT_EQ(s.quarantined_pages, 1u);
  EXPECT_EQ(s.used_pages, 1u);  // the retired page, and nothing else
  EXPECT_EQ(s.free_pages, s.capacity_pages - 1);
  EXPECT_TRUE(rt_->verify().is_ok()) << rt_->verify().to_string();
  // Take every other page of the pool: the retired one is never among them.
  const std::size_t tokens = (s.capacity_pages - 1) * rt_->geometry().page_tokens;
  auto ar = rt_->append(probe->id, iota_tokens(tokens, 1));
  ASSERT_TRUE(ar.is_ok()) << ar.status().to_string();
  for (const WriteRun& r : ar->runs) EXPECT_NE(r.page, bad);
  EXPECT_EQ(rt_->append(probe->id, iota_tokens(1, 1)).status().code(), Code::kOutOfMemory);
  EXPECT_TRUE(rt_->verify().is_ok()) << rt_->verify().to_string();
}

}  // namespace
}  // namespace pf::rt::testing
