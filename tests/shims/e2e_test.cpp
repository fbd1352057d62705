// Multi-process end to end through libprocessfork: a real daemon, this process as one
// client, and exec'd client processes (shims_test_client, C) as the others. Every byte
// checked is read through the reading process's own mapping of the pool.
#include "tests/shims/kv_io.h"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

std::vector<std::uint32_t> parse_pages(const std::string& text) {
  std::vector<std::uint32_t> out;
  std::istringstream in(text);
  for (std::uint32_t p; in >> p;) out.push_back(p);
  return out;
}

class ShimsE2E : public ::testing::Test {
 protected:
  Daemon daemon_;
};

// This process writes a context of 10 tokens (tiny: 4 tokens per page, so the last page is
// partly filled) and snapshots it; two other processes check it out / fork it and read the
// same bytes through their own mappings.
TEST_F(ShimsE2E, WriterSnapshotsOtherProcessesReadTheSameBytes) {
  ClientPtr c(connect_or_fail(daemon_.socket()));
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &nb), PF_OK);
  append_and_write(c.get(), nb.branch, token_range(100, 10), 11);
  pf_snapshot_result snap{};
  ASSERT_EQ(pf_snapshot(c.get(), nb.branch, "ctx", &snap), PF_OK) << pf_last_error_message(c.get());
  EXPECT_EQ(snap.n_tokens, 10u);
  EXPECT_EQ(snap.n_pages, 3u);
  EXPECT_EQ(std::string(snap.cid).rfind("sha256:", 0), 0u);

  RunResult by_checkout = run(
      kTestClient, {"verify", daemon_.socket(), "checkout", snap.cid, "11", "10"}, daemon_.dir());
  EXPECT_EQ(by_checkout.code, 0) << by_checkout.out << by_checkout.err;
  EXPECT_EQ(by_checkout.out, "ok\n");
  RunResult by_fork =
      run(kTestClient, {"verify", daemon_.socket(), "fork", snap.cid, "11", "10"}, daemon_.dir());
  EXPECT_EQ(by_fork.code, 0) << by_fork.out << by_fork.err;
  // A wrong seed must fail: the check is not vacuous.
  RunResult wrong = run(kTestClient, {"verify", daemon_.socket(), "checkout", snap.cid, "12", "10"},
                        daemon_.dir());
  EXPECT_EQ(wrong.code, 1) << wrong.out << wrong.err;
  EXPECT_NE(wrong.out.find("mismatches 10"), std::string::npos) << wrong.out;
}

// Another process forks the snapshot twice and writes into one fork: the copy-on-write copy
// of the shared partial last page is visible only in that fork; the other fork, the
// snapshot and this process (through its own checkout) still read the original bytes.
TEST_F(ShimsE2E, CopyOnWriteAfterForkIsVisibleOnlyInTheWritingBranch) {
  ClientPtr c(connect_or_fail(daemon_.socket()));
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &nb), PF_OK);
  append_and_write(c.get(), nb.branch, token_range(500, 10), 21);
  pf_snapshot_result snap{};
  ASSERT_EQ(pf_snapshot(c.get(), nb.branch, nullptr, &snap), PF_OK);
  pf_branch_id mine = 0;
  ASSERT_EQ(pf_checkout(c.get(), snap.cid, &mine, nullptr, 0), PF_OK);
  const std::vector<std::uint32_t> pages_before = view_pages(c.get(), mine);

  RunResult cow =
      run(kTestClient, {"cow", daemon_.socket(), snap.cid, "21", "22", "10", "5"}, daemon_.dir());
  EXPECT_EQ(cow.code, 0) << cow.out << cow.err;
  EXPECT_EQ(cow.out, "ok copied_page=1\n");

  EXPECT_EQ(view_pages(c.get(), mine), pages_before);
  EXPECT_EQ(mismatches(c.get(), mine, 0, 10, 21), 0u);
  // In this process too: a write into a fork of our own copies the page for that fork only.
  pf_branch_id kid = 0;
  const pf_source src = pf_source_named(snap.cid);
  ASSERT_EQ(pf_fork(c.get(), &src, 1, &kid, 1, nullptr, 0), PF_OK);
  const pf_append_result res = append_and_write(c.get(), kid, token_range(900, 3), 23);
  EXPECT_EQ(res.copied_page, 1u);
  EXPECT_EQ(mismatches(c.get(), kid, 0, 10, 21), 0u);
  EXPECT_EQ(mismatches(c.get(), kid, 10, 13, 23), 0u);
  EXPECT_EQ(mismatches(c.get(), mine, 0, 10, 21), 0u);
  EXPECT_NE(view_pages(c.get(), kid).back(), pages_before.back());
}

// Client A (another process) commits pages for a token sequence and exits; the prefix index
// keeps them. Client B (this process, then a third process) creates a branch from the same
// tokens plus more, is told how many tokens were reused, and reads A's bytes for them.
TEST_F(ShimsE2E, PrefixReuseAcrossProcesses) {
  RunResult a =
      run(kTestClient, {"prefill", daemon_.socket(), "31", "12", "4000", "commit"}, daemon_.dir());
  ASSERT_EQ(a.code, 0) << a.out << a.err;
  EXPECT_EQ(a.field("reused"), "0");

  ClientPtr b(connect_or_fail(daemon_.socket()));
  const std::vector<std::uint32_t> tokens = token_range(4000, 17);
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(b.get(), tokens.data(), tokens.size(), &nb), PF_OK);
  EXPECT_EQ(nb.reused_tokens, 12u);
  EXPECT_EQ(nb.n_tokens, 12u);
  EXPECT_EQ(mismatches(b.get(), nb.branch, 0, 12, 31), 0u);
  EXPECT_EQ(mismatches(b.get(), nb.branch, 0, 12, 32), 12u);  // the check can fail

  // A sequence that diverges inside the second page reuses only the first page.
  std::vector<std::uint32_t> diverging = token_range(4000, 12);
  diverging[6] = 1;
  pf_new_branch partial{};
  ASSERT_EQ(pf_branch_create(b.get(), diverging.data(), diverging.size(), &partial), PF_OK);
  EXPECT_EQ(partial.reused_tokens, 4u);

  RunResult c =
      run(kTestClient, {"reuse", daemon_.socket(), "31", "12", "9", "4000"}, daemon_.dir());
  EXPECT_EQ(c.code, 0) << c.out << c.err;
  EXPECT_EQ(c.field("reused"), "12");
}

// SIGKILL a client that holds four branches and is appending in a loop: every page it held
// comes back, as seen by another client through the library.
TEST_F(ShimsE2E, SigkilledClientMidAppendLeaksNoPage) {
  ClientPtr c(connect_or_fail(daemon_.socket(), PF_CONNECT_NO_ATTACH));
  const std::uint64_t baseline = pool_stats(c.get()).used_pages;
  const std::uint64_t branches_before = pool_json(c.get()).value("branches", 0u);

  Child looper(kTestClient, {"append-loop", daemon_.socket()}, daemon_.dir().file("loop.err"));
  ASSERT_TRUE(looper.wait_line("ready")) << read_file(daemon_.dir().file("loop.err"));
  // Let it get well into its loop so the kill lands mid-append more often than not.
  ASSERT_TRUE(wait_until([&] { return pool_stats(c.get()).used_pages >= baseline + 64; }));
  EXPECT_EQ(pool_json(c.get()).value("branches", 0u), branches_before + 4);
  looper.kill_now(SIGKILL);

  EXPECT_TRUE(wait_until([&] { return pool_stats(c.get()).used_pages == baseline; }))
      << "used pages " << pool_stats(c.get()).used_pages << ", baseline " << baseline;
  EXPECT_EQ(pool_json(c.get()).value("branches", 0u), branches_before);
}

// A client attached while the pool was empty sees pages in chunks the daemon mapped later:
// first through pf_page_ptr alone (no other request: it re-attaches on demand), then through
// a checkout whose reply carries the new epoch. A gc that releases chunks shrinks it again.
TEST_F(ShimsE2E, PoolGrowthAndShrinkAreRemappedWithCorrectBytes) {
  ClientPtr early(connect_or_fail(daemon_.socket()));
  pf_mapping_info before{};
  ASSERT_EQ(pf_mapping_info_get(early.get(), &before), PF_OK);
  EXPECT_EQ(before.attached, 1u);
  const std::uint32_t chunks_before = before.mapped_chunks;

  // 40000 tokens of 4 per page in 512-byte pages: 10000 pages, 3 chunks of 2 MiB.
  Child writer(kTestClient,
               {"prefill", daemon_.socket(), "41", "40000", "20000", "snapshot", "pages", "hold"},
               daemon_.dir().file("grow.err"));
  ASSERT_TRUE(writer.wait_line("ready")) << read_file(daemon_.dir().file("grow.err"));
  const std::string cid = writer.field("cid");
  const std::vector<std::uint32_t> pages = parse_pages(writer.field("pages"));
  ASSERT_EQ(pages.size(), 10000u);
  const pf_pool_info info = pool_info(early.get());

  // The last page lies in a chunk this client has never seen.
  const std::uint32_t last = pages.back();
  ASSERT_GE(std::size_t{last} * info.page_bytes / info.chunk_bytes, chunks_before);
  void* p = nullptr;
  ASSERT_EQ(pf_page_ptr(early.get(), last, &p), PF_OK) << pf_last_error_message(early.get());
  for (std::uint32_t s = 0; s < info.page_tokens; ++s) {
    EXPECT_TRUE(kvp_check_token(&info, p, s, 41, 39996 + s)) << "slot " << s;
  }
  pf_mapping_info grown{};
  ASSERT_EQ(pf_mapping_info_get(early.get(), &grown), PF_OK);
  EXPECT_NE(grown.epoch, before.epoch);
  EXPECT_EQ(grown.mapped_chunks, pool_json(early.get()).value("chunks", 0u));
  EXPECT_GE(grown.mapped_chunks, 3u);

  pf_branch_id b = 0;
  ASSERT_EQ(pf_checkout(early.get(), cid.c_str(), &b, nullptr, 0), PF_OK);
  EXPECT_EQ(view_pages(early.get(), b), pages);
  EXPECT_EQ(mismatches(early.get(), b, 0, 40000, 41), 0u);

  // Shrink: drop every holder, gc gives the trailing chunks back, the next reply's epoch
  // makes this client unmap them.
  ASSERT_EQ(pf_branch_free(early.get(), b), PF_OK);
  writer.close_stdin();
  EXPECT_EQ(writer.wait(), 0);
  // The writer named its snapshot "prefill": that ref goes first, then the pin.
  ASSERT_EQ(pf_ref_delete(early.get(), "prefill"), PF_OK) << pf_last_error_message(early.get());
  ASSERT_EQ(pf_unpin(early.get(), cid.c_str()), PF_OK) << pf_last_error_message(early.get());
  pf_gc_result gc{};
  ASSERT_EQ(pf_gc(early.get(), PF_GC_DROP_CACHE, &gc), PF_OK) << pf_last_error_message(early.get());
  EXPECT_GE(gc.released_chunks, 1u);
  const json pool = pool_json(early.get());  // a request after the gc: carries the new epoch
  pf_mapping_info shrunk{};
  ASSERT_EQ(pf_mapping_info_get(early.get(), &shrunk), PF_OK);
  EXPECT_EQ(shrunk.mapped_chunks, pool.value("chunks", 999u));
  EXPECT_LT(shrunk.mapped_chunks, grown.mapped_chunks);
  EXPECT_EQ(shrunk.epoch, shrunk.latest_epoch);
  // A page beyond the pool's chunks now is not found (and never a crash).
  EXPECT_EQ(pf_page_ptr(early.get(), last, &p), PF_NOT_FOUND);
}

}  // namespace
}  // namespace pf::shimtest
