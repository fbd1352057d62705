// Pages of 32 and 128 tokens (vLLM's CPU backend needs a block size that is a multiple of 32,
// 128 by default; a page is one engine block) for a realistic model: Llama-3-8B bf16, 4 MiB
// and 16 MiB pages, over chunks that pages straddle. Every operation of DESIGN §5 keeps
// every KV byte, with a partly filled last page and a prefix hit at a page boundary. Host
// always, cuda:0 where a GPU is.
#include <gtest/gtest.h>

#include <tuple>

#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

using Param = std::tuple<std::string, std::uint32_t>;  // backend, page_tokens

class RuntimePageTokens : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const auto& [backend, page_tokens] = GetParam();
    auto g = parse_geometry("llama-3-8b:" + std::to_string(page_tokens));
    ASSERT_TRUE(g.is_ok()) << g.status().to_string();
    g_ = *g;
    // 24 MiB chunks: 16 MiB pages straddle chunk boundaries.
    f_ = make_runtime(backend, g_, std::size_t{160} << 20, std::size_t{24} << 20);
    if (!f_.rt) GTEST_SKIP() << f_.skip_reason;
    rt_ = f_.rt.get();
  }

  Geometry g_;
  Fixture f_;
  Runtime* rt_ = nullptr;
};

TEST_P(RuntimePageTokens, GeometryAndPoolSizing) {
  const std::uint32_t pt = std::get<1>(GetParam());
  EXPECT_EQ(g_, (Geometry{32, 8, 128, DType::kBF16, pt}));
  EXPECT_EQ(rt_->page_bytes(), (std::size_t{128} << 10) * pt);
  const PoolLayout layout = rt_->pool_layout();
  EXPECT_EQ(layout.page_bytes, rt_->page_bytes());
  EXPECT_EQ(layout.chunk_bytes, std::size_t{24} << 20);
  EXPECT_EQ(layout.capacity_pages, (std::size_t{160} << 20) / rt_->page_bytes());
  EXPECT_EQ(g_.offset(31, Half::kV, pt - 1) + g_.token_bytes(), rt_->page_bytes());
}

TEST_P(RuntimePageTokens, EveryOperationKeepsTheBytes) {
  const std::uint32_t pt = std::get<1>(GetParam());
  const std::size_t n = 2 * pt + pt / 2;  // two full pages and a half-filled one
  const std::vector<Token> tokens = iota_tokens(n, 5000);

  auto nb = rt_->create_branch();
  ASSERT_TRUE(nb.is_ok());
  const std::vector<Token> head(tokens.begin(), tokens.begin() + pt / 2);
  append_and_write(*rt_, nb->id, head, head);
  const AppendResult rest =
      append_and_write(*rt_, nb->id, {tokens.begin() + pt / 2, tokens.end()}, tokens);
  ASSERT_EQ(rest.runs.size(), 3u);
  EXPECT_EQ(rest.runs[0].first_slot, pt / 2);
  EXPECT_EQ(rest.runs[0].count, pt - pt / 2);
  EXPECT_EQ(rest.runs[2].count, pt / 2);
  EXPECT_EQ(rest.pages_added, 2u);
  ASSERT_TRUE(rt_->commit(nb->id).is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, nb->id, tokens));
  EXPECT_FALSE(branch_bytes_match(*rt_, nb->id, tokens, /*salt=*/1));  // the check can fail
  const auto view = rt_->branch_view(nb->id);
  ASSERT_TRUE(view.is_ok());
  ASSERT_EQ(view->pages.size(), 3u);

  auto snap = rt_->snapshot(nb->id, "ctx");
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_EQ(snap->n_tokens, n);
  EXPECT_EQ(snap->n_pages, 3u);
  const std::size_t used_before_fork = rt_->pool_stats().used_pages;

  // Fork: metadata only. A child's append copies the shared half-filled page, nothing else.
  auto fk = rt_->fork(snap->cid, 2);
  ASSERT_TRUE(fk.is_ok()) << fk.status().to_string();
  EXPECT_EQ(rt_->pool_stats().used_pages, used_before_fork);
  const std::vector<Token> more = iota_tokens(pt / 2 + 3, 9000);
  const std::vector<Token> child_tokens = concat(tokens, more);
  const AppendResult cow = append_and_write(*rt_, fk->branches[0], more, child_tokens);
  EXPECT_TRUE(cow.copied_page);
  EXPECT_EQ(cow.pages_added, 2u);  // the copy of page 2, and page 3
  EXPECT_EQ(rt_->pool_stats().used_pages, used_before_fork + 2);
  EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[0], child_tokens));
  EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[1], tokens));
  EXPECT_TRUE(branch_bytes_match(*rt_, nb->id, tokens));
  const auto child_view = rt_->branch_view(fk->branches[0]);
  ASSERT_TRUE(child_view.is_ok());
  ASSERT_EQ(child_view->pages.size(), 4u);
  EXPECT_EQ(child_view->pages[1], view->pages[1]);
  EXPECT_NE(child_view->pages[2], view->pages[2]);

  auto back = rt_->checkout(snap->cid);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(rt_->branch_view(*back)->pages, view->pages);
  EXPECT_TRUE(branch_bytes_match(*rt_, *back, tokens));

  // Prefix reuse is by whole pages and stops exactly at a page boundary.
  for (const auto& [len, reused] :
       {std::pair<std::size_t, std::size_t>{2 * pt, 2 * pt}, {2 * pt - 1, pt}, {n, 2 * pt}}) {
    const std::vector<Token> ask(tokens.begin(), tokens.begin() + len);
    auto hit = rt_->create_branch(ask);
    ASSERT_TRUE(hit.is_ok()) << hit.status().to_string();
    EXPECT_EQ(hit->reused_tokens, reused) << len;
    const std::vector<Token> held(tokens.begin(), tokens.begin() + reused);
    EXPECT_TRUE(branch_bytes_match(*rt_, hit->id, held)) << len;
    EXPECT_EQ(rt_->branch_view(hit->id)->pages,
              std::vector<PageId>(view->pages.begin(), view->pages.begin() + reused / pt));
    // Continuing past the boundary starts a fresh page; the shared ones stay shared.
    const std::vector<Token> tail(tokens.begin() + reused, tokens.end());
    const AppendResult ar = append_and_write(*rt_, hit->id, tail, tokens);
    EXPECT_FALSE(ar.copied_page) << len;
    EXPECT_TRUE(branch_bytes_match(*rt_, hit->id, tokens)) << len;
    ASSERT_TRUE(rt_->free_branch(hit->id).is_ok());
  }

  // Truncate into the middle of a page, then grow again: copy-on-write of the shared page.
  ASSERT_TRUE(rt_->truncate(fk->branches[1], pt + 1).is_ok());
  const std::vector<Token> kept(tokens.begin(), tokens.begin() + pt + 1);
  EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[1], kept));
  const std::vector<Token> regrown = concat(kept, iota_tokens(pt, 20000));
  const AppendResult again =
      append_and_write(*rt_, fk->branches[1], {regrown.begin() + pt + 1, regrown.end()}, regrown);
  EXPECT_TRUE(again.copied_page);
  EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[1], regrown));
  EXPECT_TRUE(branch_bytes_match(*rt_, *back, tokens));

  for (BranchId b : {nb->id, fk->branches[0], fk->branches[1], *back}) {
    ASSERT_TRUE(rt_->free_branch(b).is_ok());
  }
  // The snapshot's name is a ref to it; the ref goes first, then the pin.
  ASSERT_TRUE(rt_->delete_ref("ctx").is_ok());
  ASSERT_TRUE(rt_->unpin(snap->cid).is_ok());
  rt_->gc(/*drop_cache=*/true);
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

INSTANTIATE_TEST_SUITE_P(VllmCpuBlockSizes, RuntimePageTokens,
                         ::testing::Combine(::testing::Values("host", "cuda:0"),
                                            ::testing::Values(32u, 128u)),
                         [](const auto& info) {
                           std::string backend = std::get<0>(info.param);
                           for (char& ch : backend) {
                             if (ch == ':') ch = '_';
                           }
                           return backend + "_page_tokens_" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace pf::rt::testing
