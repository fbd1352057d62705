// Engine block sizes other than 16 through a real daemon: vLLM's CPU backend needs a block
// size that is a multiple of 32 (128 by default), and a ProcessFork page is one engine block.
// The daemon serves Llama-3-8B's geometry with 32- and 128-token pages (4 MiB and 16 MiB,
// given as "llama-3-8b:N"), over 24 MiB chunks so that pages straddle chunk boundaries, and
// this process writes and reads every KV byte through its own mapping of the pool.
#include "tests/shims/kv_io.h"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

constexpr std::size_t kLlama8bTokenBytes = 32 * 2 * 8 * 128 * 2;  // layers x K|V x heads x dim

class ShimsPageTokens : public ::testing::TestWithParam<std::uint32_t> {
 protected:
  ShimsPageTokens() : daemon_("256MiB", "24MiB", "llama-3-8b:" + std::to_string(GetParam())) {}
  Daemon daemon_;
};

// Create, append (the last page partly filled), commit, snapshot, fork with a copy-on-write
// append, checkout, and prefix reuse that ends exactly at a page boundary.
TEST_P(ShimsPageTokens, EveryOperationKeepsTheBytesOfLargePages) {
  const std::uint32_t pt = GetParam();
  ClientPtr c(connect_or_fail(daemon_.socket()));
  const pf_pool_info info = pool_info(c.get());
  EXPECT_EQ(info.page_tokens, pt);
  EXPECT_EQ(info.page_bytes, kLlama8bTokenBytes * pt);
  const json pool = pool_json(c.get());
  EXPECT_EQ(pool["page_bytes"], kLlama8bTokenBytes * pt);
  EXPECT_EQ(pool["geometry"]["page_tokens"], pt);
  EXPECT_EQ(pool["capacity_pages"], (256u << 20) / (kLlama8bTokenBytes * pt));

  // 2.5 pages: two full ones and a half-filled last page.
  const std::size_t n = 2 * pt + pt / 2;
  const std::vector<std::uint32_t> tokens = token_range(7000, n);
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &nb), PF_OK);
  // Two appends: the second starts inside the first page and crosses into the third.
  append_and_write(c.get(), nb.branch, {tokens.begin(), tokens.begin() + pt / 2}, 41);
  const pf_append_result second =
      append_and_write(c.get(), nb.branch, {tokens.begin() + pt / 2, tokens.end()}, 41);
  EXPECT_EQ(second.n_runs, 3u);
  ASSERT_EQ(pf_commit(c.get(), nb.branch), PF_OK) << pf_last_error_message(c.get());
  pf_branch_info bi{};
  const std::vector<std::uint32_t> pages = view_pages(c.get(), nb.branch, &bi);
  EXPECT_EQ(bi.n_tokens, n);
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(mismatches(c.get(), nb.branch, 0, n, 41), 0u);
  EXPECT_EQ(mismatches(c.get(), nb.branch, 0, n, 42), n);  // the check can fail

  pf_snapshot_result snap{};
  ASSERT_EQ(pf_snapshot(c.get(), nb.branch, "ctx", &snap), PF_OK) << pf_last_error_message(c.get());
  EXPECT_EQ(snap.n_tokens, n);
  EXPECT_EQ(snap.n_pages, 3u);

  // Fork twice; one child appends: only its half-filled last page is copied.
  pf_branch_id kids[2] = {0, 0};
  const pf_source src = pf_source_named(snap.cid);
  ASSERT_EQ(pf_fork(c.get(), &src, 2, kids, 2, nullptr, 0), PF_OK)
      << pf_last_error_message(c.get());
  EXPECT_EQ(view_pages(c.get(), kids[0]), pages);
  const std::size_t more = pt / 2 + 3;  // fills the last page and starts a fourth
  const pf_append_result cow = append_and_write(c.get(), kids[0], token_range(9000, more), 43);
  EXPECT_EQ(cow.copied_page, 1u);
  const std::vector<std::uint32_t> kid_pages = view_pages(c.get(), kids[0]);
  ASSERT_EQ(kid_pages.size(), 4u);
  EXPECT_EQ(kid_pages[0], pages[0]);
  EXPECT_EQ(kid_pages[1], pages[1]);
  EXPECT_NE(kid_pages[2], pages[2]);
  EXPECT_EQ(mismatches(c.get(), kids[0], 0, n, 41), 0u);  // the copy kept the shared tokens
  EXPECT_EQ(mismatches(c.get(), kids[0], n, n + more, 43), 0u);
  EXPECT_EQ(view_pages(c.get(), kids[1]), pages);
  EXPECT_EQ(mismatches(c.get(), kids[1], 0, n, 41), 0u);
  EXPECT_EQ(mismatches(c.get(), nb.branch, 0, n, 41), 0u);

  pf_branch_id back = 0;
  ASSERT_EQ(pf_checkout(c.get(), snap.cid, &back, nullptr, 0), PF_OK)
      << pf_last_error_message(c.get());
  EXPECT_EQ(view_pages(c.get(), back), pages);
  EXPECT_EQ(mismatches(c.get(), back, 0, n, 41), 0u);

  // Prefix reuse is by whole pages: exactly two pages' worth of tokens reuses both, one
  // token less reuses one, and a longer request stops at the page boundary too.
  for (const auto& [len, reused] :
       {std::pair<std::size_t, std::size_t>{2 * pt, 2 * pt}, {2 * pt - 1, pt}, {n, 2 * pt}}) {
    pf_new_branch hit{};
    ASSERT_EQ(pf_branch_create(c.get(), tokens.data(), len, &hit), PF_OK)
        << pf_last_error_message(c.get());
    EXPECT_EQ(hit.reused_tokens, reused) << len;
    EXPECT_EQ(hit.n_tokens, reused) << len;
    const std::vector<std::uint32_t> hit_pages = view_pages(c.get(), hit.branch);
    EXPECT_EQ(hit_pages, std::vector<std::uint32_t>(pages.begin(), pages.begin() + reused / pt));
    EXPECT_EQ(mismatches(c.get(), hit.branch, 0, reused, 41), 0u) << len;
    ASSERT_EQ(pf_branch_free(c.get(), hit.branch), PF_OK);
  }
  const pf_pool_stats stats = pool_stats(c.get());
  // The snapshot's three pages, the child's copy of the last one and its fourth page.
  EXPECT_EQ(stats.used_pages, 5u);
}

INSTANTIATE_TEST_SUITE_P(VllmCpuBlockSizes, ShimsPageTokens, ::testing::Values(32u, 128u),
                         [](const auto& info) {
                           return "page_tokens_" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace pf::shimtest
