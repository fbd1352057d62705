// Lazy page-in (runtime/tier.h "Paging in", docs/store.md "Lazy page-in"): after a restart,
// checkout of a stored snapshot returns before its pages are read; the loader reads them in
// page order, batch by batch; branch_view waits for exactly the pages asked for; an append
// that must copy a page still being read waits for it; a blob damaged on disk is found when
// its page is read (the view names the file, the snapshot is quarantined in the store); an
// unpin during the load keeps the blobs until they are read. The loader is held between
// batches by the RuntimeOptions test hook (a gate the test opens), so every state the test
// looks at is reached deterministically, without sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "base/hex.h"
#include "runtime/manifest.h"
#include "tests/runtime/runtime_test_util.h"
#include "tests/runtime/store_test_util.h"

namespace pf::rt::testing {
namespace {

// 2 MiB pages: the loader reads 4 of them in a job's first batch, the other 16 in its second.
Geometry big_pages() {
  return *parse_geometry("layers=4,kv_heads=4,head_dim=128,dtype=bf16,page_tokens=256");
}
constexpr std::size_t kFirstBatchPages = 4;
constexpr std::size_t kDamagedPage = 17;  // in the second batch
constexpr std::size_t kTokens = 5000;     // 20 pages, the last one partly filled
constexpr std::size_t kPages = (kTokens + 255) / 256;

// Lets the loader through a given number of batches, then holds it until opened further.
class LoaderGate {
 public:
  // The hook: called by the loader before each batch.
  void pass() {
    std::unique_lock<std::mutex> lock(mu_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return arrived_ <= allowed_; });
  }
  // Lets batches up to number n (1-based) through.
  void allow(std::size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    allowed_ = n;
    cv_.notify_all();
  }
  // Blocks until the loader waits before batch number n.
  void wait_arrived(std::size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return arrived_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t arrived_ = 0;
  std::size_t allowed_ = 0;
};

class LazyPageIn : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // The host pool reads blobs straight into its pages; a device pool goes through host
    // staging and the pool's copy (runtime/store_writer.cpp).
    auto choice = vmm::open_backend(GetParam());
    if (!choice.is_ok()) GTEST_SKIP() << choice.status().to_string();
    backend_ = std::move(choice->backend);
    start(/*gated=*/false);
    tokens_ = iota_tokens(kTokens, 100);
    auto b = rt_->create_branch();
    ASSERT_TRUE(b.is_ok());
    append_and_write(*rt_, b->id, tokens_, tokens_);
    auto snap = rt_->snapshot(b->id, "");
    ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
    cid_ = snap->cid;
    ASSERT_TRUE(rt_->wait_durable(cid_).is_ok());
    ASSERT_TRUE(rt_->free_branch(b->id).is_ok());
  }
  void TearDown() override {
    gate_.allow(~std::size_t{0});  // never leave the loader held
    if (worker_.joinable()) worker_.join();
    rt_.reset();
    store_.reset();
  }

  // A runtime on the store (a fresh Store object each time, as after a daemon restart).
  void start(bool gated) {
    rt_.reset();
    store_.reset();
    StoreOptions so;
    so.dir = dir_.path() + "/store";
    so.geometry = big_pages();
    auto st = Store::open(so, *kernels_);
    ASSERT_TRUE(st.is_ok()) << st.status().to_string();
    store_ = std::move(*st);
    RuntimeOptions o;
    o.geometry = big_pages();
    o.pool.capacity_bytes = std::size_t{96} << 20;
    o.verify_each_op = true;
    if (gated) o.load_hook_for_testing = [this] { gate_.pass(); };
    auto rt = Runtime::create(*backend_, o);
    ASSERT_TRUE(rt.is_ok()) << rt.status().to_string();
    rt_ = std::move(*rt);
    ASSERT_TRUE(rt_->attach_store(*store_).is_ok());
  }

  // Starts `op` on another thread and returns once it waits for a page still loading (a load
  // wait is counted) or has ended; true when it waits. The loader stays held until the
  // caller opens the gate; finish() then joins the thread.
  bool starts_waiting(std::function<void()> op) {
    const std::uint64_t before = rt_->store_status().counters.load_waits;
    worker_done_ = false;
    worker_ = std::thread([this, op = std::move(op)] {
      op();
      worker_done_ = true;
    });
    while (rt_->store_status().counters.load_waits == before && !worker_done_) {
      std::this_thread::yield();
    }
    return !worker_done_;
  }
  // After a restart with the loader gated: a checkout of the snapshot, with its first batch
  // read and the loader held before the second (which holds the partly filled last page).
  BranchId checkout_first_batch_read() {
    start(/*gated=*/true);
    auto b = rt_->checkout(cid_);
    EXPECT_TRUE(b.is_ok()) << b.status().to_string();
    gate_.allow(1);
    gate_.wait_arrived(2);
    return b.is_ok() ? *b : BranchId{};
  }
  // Lets the loader read everything and waits for the thread starts_waiting started.
  void finish() {
    gate_.allow(~std::size_t{0});
    worker_.join();
  }

  // The blob file of the snapshot's page i.
  std::string blob_file(std::size_t i) {
    auto json = rt_->manifest(cid_);
    EXPECT_TRUE(json.is_ok());
    auto pm = parse_manifest(*json);
    EXPECT_TRUE(pm.is_ok());
    const ManifestPage& mp = pm->manifest.pages.at(i);
    BlobKey key;
    EXPECT_TRUE(parse_hex(mp.k, key.k.bytes.data(), 32));
    EXPECT_TRUE(parse_hex(mp.v, key.v.bytes.data(), 32));
    key.fill = i + 1 == kPages ? kTokens % 256 : 256;
    return blob_path(dir_.path() + "/store", key);
  }

  std::unique_ptr<kernels::PageKernels> kernels_ = kernels::make_host_kernels();
  ScratchDir dir_;
  std::unique_ptr<vmm::Backend> backend_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Runtime> rt_;
  LoaderGate gate_;
  std::thread worker_;
  std::atomic<bool> worker_done_{false};
  std::vector<Token> tokens_;
  std::string cid_;
};

TEST_P(LazyPageIn, CheckoutReturnsFirstAndPagesBecomeReadableInOrder) {
  start(/*gated=*/true);
  auto b = rt_->checkout(cid_);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  gate_.wait_arrived(1);  // held before its first read: no page is readable
  auto v = rt_->branch_view(*b, 0);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->pages.size(), kPages);
  EXPECT_EQ(v->ready_pages, 0u);
  EXPECT_EQ(v->tokens, tokens_);
  EXPECT_EQ(rt_->store_status().counters.pages_loading, kPages);
  // A bounded wait answers with what is ready when its time is up (the daemon's slices).
  v = rt_->branch_view(*b, kAllPages, std::chrono::milliseconds(20));
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->ready_pages, 0u);
  EXPECT_EQ(v->pages.size(), kPages);

  gate_.allow(1);  // the first batch only
  v = rt_->branch_view(*b, kFirstBatchPages);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->ready_pages, kFirstBatchPages);
  gate_.wait_arrived(2);
  EXPECT_EQ(rt_->store_status().counters.pages_loading, kPages - kFirstBatchPages);
  v = rt_->branch_view(*b, 0);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->ready_pages, kFirstBatchPages);

  gate_.allow(~std::size_t{0});
  v = rt_->branch_view(*b);  // every page
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->ready_pages, kPages);
  EXPECT_TRUE(branch_bytes_match(*rt_, *b, tokens_));
  const StoreStatus st = rt_->store_status();
  EXPECT_EQ(st.counters.pages_loading, 0u);
  EXPECT_EQ(st.counters.pages_read, kPages);
  EXPECT_EQ(st.counters.pages_load_failed, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(LazyPageIn, AppendWaitsForTheLastPageItMustCopy) {
  const BranchId b = checkout_first_batch_read();
  const std::vector<Token> more = iota_tokens(40, 9000);
  const std::vector<Token> all = concat(tokens_, more);
  // The append copies the last page, so it must wait for it (an append that did not wait
  // would finish, and its copy would hold zeros).
  EXPECT_TRUE(starts_waiting([&] { append_and_write(*rt_, b, more, all); }));
  finish();
  EXPECT_TRUE(branch_bytes_match(*rt_, b, all));
  // The snapshot the branch came from is unchanged, and a snapshot of the branch now holds
  // the copied page's real bytes.
  auto c = rt_->checkout(cid_);
  ASSERT_TRUE(c.is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, *c, tokens_));
  auto snap = rt_->snapshot(b, "");
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  ASSERT_TRUE(rt_->wait_durable(snap->cid).is_ok());
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(LazyPageIn, ASnapshotThatMustDigestALoadingPageWaitsForIt) {
  const BranchId b = checkout_first_batch_read();
  // Truncated inside its last page, the branch needs that page's digest at a fill the
  // stored blob's digest does not cover: the snapshot must read the page, so it waits.
  const std::size_t keep = kTokens - 100;
  ASSERT_TRUE(rt_->truncate(b, keep).is_ok());
  Result<SnapshotInfo> snap = PF_ERROR(Code::kInternal, "not run");
  EXPECT_TRUE(starts_waiting([&] { snap = rt_->snapshot(b, ""); }));
  finish();
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  const std::vector<Token> kept(tokens_.begin(), tokens_.begin() + keep);
  auto c = rt_->checkout(snap->cid);
  ASSERT_TRUE(c.is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, *c, kept));
  EXPECT_TRUE(rt_->verify().is_ok());  // re-digests every snapshot page against its manifest
}

TEST_P(LazyPageIn, ADamagedBlobIsFoundWhenItsPageIsReadAndQuarantinesTheSnapshot) {
  const std::string damaged = blob_file(kDamagedPage);
  rt_.reset();
  store_.reset();
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << damaged;
    char ch = 0;
    f.seekg(7);
    f.read(&ch, 1);
    ch = static_cast<char>(ch ^ 0x5a);
    f.seekp(7);
    f.write(&ch, 1);
  }
  start(/*gated=*/false);
  auto b = rt_->checkout(cid_);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  // Pages before the damaged one are readable; the view of all of them names the file.
  auto v = rt_->branch_view(*b, kDamagedPage);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  v = rt_->branch_view(*b);
  ASSERT_FALSE(v.is_ok());
  EXPECT_EQ(v.status().code(), Code::kDataCorrupt);
  const std::string file = std::filesystem::path(damaged).filename().string();
  EXPECT_NE(v.status().message().find(file), std::string::npos) << v.status().message();
  EXPECT_TRUE(store_->quarantined(cid_).has_value());
  EXPECT_EQ(rt_->store_status().counters.pages_load_failed, 1u);
  // Refused from now on, and the damaged page is never handed out again.
  auto again = rt_->checkout(cid_);
  EXPECT_FALSE(again.is_ok());
  EXPECT_EQ(again.status().code(), Code::kDataCorrupt);
  EXPECT_TRUE(rt_->free_branch(*b).is_ok());
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(LazyPageIn, UnpinDuringTheLoadKeepsTheBlobsUntilTheyAreRead) {
  start(/*gated=*/true);
  auto b = rt_->checkout(cid_);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  gate_.wait_arrived(1);
  ASSERT_TRUE(rt_->unpin(cid_).is_ok());
  gate_.allow(~std::size_t{0});
  EXPECT_TRUE(branch_bytes_match(*rt_, *b, tokens_));
  ASSERT_TRUE(rt_->free_branch(*b).is_ok());
  rt_.reset();  // drains the write-behind: the unpin has removed the manifest
  bool listed = false;
  for (const StoredManifest& m : store_->manifests()) listed |= m.cid == cid_;
  EXPECT_FALSE(listed);
}

TEST_P(LazyPageIn, ForksOfALoadingSnapshotReadTheSameBytes) {
  start(/*gated=*/true);
  auto f = rt_->fork(Source{cid_}, 3);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  gate_.wait_arrived(1);
  auto v = rt_->branch_view(f->branches[0], 0);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->ready_pages, 0u);
  gate_.allow(~std::size_t{0});
  for (BranchId c : f->branches) EXPECT_TRUE(branch_bytes_match(*rt_, c, tokens_));
  EXPECT_TRUE(rt_->verify().is_ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, LazyPageIn, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           return info.param == "host" ? std::string("host") : std::string("cuda");
                         });

}  // namespace
}  // namespace pf::rt::testing
