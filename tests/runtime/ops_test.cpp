// Unit tests per runtime operation with real page bytes, run on every backend: host always,
// cuda:0 where a GPU is (skipped with the reason otherwise). KV bytes are written through
// append's write slots and every byte each branch sees is checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "runtime/manifest.h"
#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

class RuntimeOps : public BackendRuntimeTest {
 protected:
  // A branch holding `tokens` with their KV written.
  BranchId make(const std::vector<Token>& tokens) {
    auto nb = rt_->create_branch();
    EXPECT_TRUE(nb.is_ok());
    append_and_write(*rt_, nb->id, tokens, tokens);
    return nb->id;
  }
  std::size_t used() { return rt_->pool_stats().used_pages; }
};

TEST_P(RuntimeOps, AppendReturnsWriteRunsPerPage) {
  auto nb = rt_->create_branch();
  ASSERT_TRUE(nb.is_ok());
  auto ar = rt_->append(nb->id, iota_tokens(10));
  ASSERT_TRUE(ar.is_ok());
  // tiny: 4 tokens/page -> runs of 4, 4, 2 in three distinct pages.
  ASSERT_EQ(ar->runs.size(), 3u);
  EXPECT_EQ(ar->runs[0].first_slot, 0u);
  EXPECT_EQ(ar->runs[0].count, 4u);
  EXPECT_EQ(ar->runs[2].count, 2u);
  EXPECT_EQ(ar->runs[2].first_token, 8u);
  EXPECT_EQ(ar->pages_added, 3u);
  EXPECT_FALSE(ar->copied_page);
  std::set<PageId> distinct{ar->runs[0].page, ar->runs[1].page, ar->runs[2].page};
  EXPECT_EQ(distinct.size(), 3u);
  // Appending into the partially filled exclusive page writes in place.
  auto ar2 = rt_->append(nb->id, iota_tokens(1, 100));
  ASSERT_TRUE(ar2.is_ok());
  ASSERT_EQ(ar2->runs.size(), 1u);
  EXPECT_EQ(ar2->runs[0].page, ar->runs[2].page);
  EXPECT_EQ(ar2->runs[0].first_slot, 2u);
  EXPECT_EQ(ar2->pages_added, 0u);
  // An empty append is a no-op.
  auto ar3 = rt_->append(nb->id, {});
  ASSERT_TRUE(ar3.is_ok());
  EXPECT_TRUE(ar3->runs.empty());
}

TEST_P(RuntimeOps, ForkSharesPagesAndCopiesOnlyTheLastOnWrite) {
  const auto ctx = iota_tokens(18);  // 4 full pages + 2 tokens in the fifth
  BranchId parent = make(ctx);
  ASSERT_TRUE(branch_bytes_match(*rt_, parent, ctx));
  const std::size_t before = used();
  ASSERT_EQ(before, 5u);
  auto fk = rt_->fork(parent, 3);
  ASSERT_TRUE(fk.is_ok()) << fk.status().to_string();
  ASSERT_EQ(fk->branches.size(), 3u);
  EXPECT_EQ(used(), before) << "fork must add no page";
  const auto parent_pages = rt_->branch_view(parent)->pages;
  for (BranchId c : fk->branches) {
    EXPECT_EQ(rt_->branch_view(c)->pages, parent_pages);
    EXPECT_TRUE(branch_bytes_match(*rt_, c, ctx));
  }
  // Each child appends one different token: exactly one page added per child (the CoW
  // copy of the shared partially filled last page).
  std::vector<std::vector<Token>> expect;
  for (std::size_t i = 0; i < fk->branches.size(); ++i) {
    const std::vector<Token> add{static_cast<Token>(1000 + i)};
    expect.push_back(concat(ctx, add));
    const std::size_t u = used();
    auto ar = append_and_write(*rt_, fk->branches[i], add, expect.back());
    EXPECT_TRUE(ar.copied_page);
    EXPECT_EQ(ar.pages_added, 1u);
    EXPECT_EQ(used(), u + 1);
  }
  // Every branch sees exactly its own bytes; the parent is untouched.
  EXPECT_TRUE(branch_bytes_match(*rt_, parent, ctx));
  for (std::size_t i = 0; i < fk->branches.size(); ++i) {
    EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[i], expect[i]));
    const auto pages = rt_->branch_view(fk->branches[i])->pages;
    EXPECT_TRUE(std::equal(pages.begin(), pages.end() - 1, parent_pages.begin()))
        << "full pages stay shared";
    EXPECT_NE(pages.back(), parent_pages.back());
  }
  // The parent itself writing after the fork also copies (its last page is shared now).
  auto ar = append_and_write(*rt_, parent, {7}, concat(ctx, {7}));
  EXPECT_TRUE(ar.copied_page);
  EXPECT_TRUE(branch_bytes_match(*rt_, parent, concat(ctx, {7})));
  for (std::size_t i = 0; i < fk->branches.size(); ++i) {
    EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[i], expect[i]));
  }
  // Second append in a child: its tail page is exclusive now, written in place.
  auto ar2 = append_and_write(*rt_, fk->branches[0], {5}, concat(expect[0], {5}));
  EXPECT_FALSE(ar2.copied_page);
  EXPECT_EQ(ar2.pages_added, 0u);
  EXPECT_TRUE(branch_bytes_match(*rt_, fk->branches[0], concat(expect[0], {5})));
}

TEST_P(RuntimeOps, ForkAtPageBoundaryAllocatesOneFreshPagePerChild) {
  const auto ctx = iota_tokens(16);
  BranchId parent = make(ctx);
  auto fk = rt_->fork(parent, 2);
  ASSERT_TRUE(fk.is_ok());
  for (BranchId c : fk->branches) {
    const std::size_t u = used();
    auto ar = append_and_write(*rt_, c, {42}, concat(ctx, {42}));
    EXPECT_FALSE(ar.copied_page);
    EXPECT_EQ(used(), u + 1);
    EXPECT_TRUE(branch_bytes_match(*rt_, c, concat(ctx, {42})));
  }
}

TEST_P(RuntimeOps, ForkOfForkChainsAndTruncateBackIntoTheChain) {
  const auto a = iota_tokens(6);
  BranchId root = make(a);
  auto f1 = rt_->fork(root, 1);
  ASSERT_TRUE(f1.is_ok());
  BranchId c1 = f1->branches[0];
  const auto b = concat(a, iota_tokens(5, 50));
  append_and_write(*rt_, c1, iota_tokens(5, 50), b);
  auto f2 = rt_->fork(c1, 2);  // freezes c1's tail into a chained list
  ASSERT_TRUE(f2.is_ok());
  for (BranchId c : f2->branches) EXPECT_TRUE(branch_bytes_match(*rt_, c, b));
  const auto c = concat(b, {9, 9, 9});
  append_and_write(*rt_, f2->branches[0], {9, 9, 9}, c);
  EXPECT_TRUE(branch_bytes_match(*rt_, f2->branches[0], c));
  EXPECT_TRUE(branch_bytes_match(*rt_, f2->branches[1], b));
  // Truncate below the chain's parent boundary, then grow differently.
  ASSERT_TRUE(rt_->truncate(f2->branches[0], 5).is_ok());
  const auto d = concat(std::vector<Token>(a.begin(), a.begin() + 5), {77, 78, 79, 80, 81});
  append_and_write(*rt_, f2->branches[0], {77, 78, 79, 80, 81}, d);
  EXPECT_TRUE(branch_bytes_match(*rt_, f2->branches[0], d));
  EXPECT_TRUE(branch_bytes_match(*rt_, f2->branches[1], b));
  EXPECT_TRUE(branch_bytes_match(*rt_, c1, b));
  EXPECT_TRUE(branch_bytes_match(*rt_, root, a));
  ASSERT_TRUE(rt_->verify().is_ok());
}

TEST_P(RuntimeOps, TruncateDropsTokensAndPages) {
  const auto t = iota_tokens(13);
  BranchId b = make(t);
  EXPECT_EQ(used(), 4u);
  ASSERT_TRUE(rt_->truncate(b, 9).is_ok());
  EXPECT_EQ(used(), 3u);
  EXPECT_TRUE(branch_bytes_match(*rt_, b, std::vector<Token>(t.begin(), t.begin() + 9)));
  ASSERT_TRUE(rt_->truncate(b, 9).is_ok());  // no-op
  ASSERT_TRUE(rt_->truncate(b, 0).is_ok());
  EXPECT_EQ(used(), 0u);
  EXPECT_EQ(rt_->branch_info(b)->n_tokens, 0u);
  auto bad = rt_->truncate(b, 1);
  EXPECT_EQ(bad.code(), Code::kInvalidArgument);
}

TEST_P(RuntimeOps, AppendAfterTruncateIntoACommittedPageCopiesIt) {
  const auto t = iota_tokens(8);
  BranchId b = make(t);
  ASSERT_TRUE(rt_->commit(b).is_ok());  // both pages sealed and indexed
  const PageId sealed = rt_->branch_view(b)->pages[1];
  ASSERT_TRUE(rt_->truncate(b, 6).is_ok());
  const auto t2 = concat(std::vector<Token>(t.begin(), t.begin() + 6), {90, 91});
  auto ar = append_and_write(*rt_, b, {90, 91}, t2);
  EXPECT_TRUE(ar.copied_page) << "a sealed page is never written, even by its own branch";
  EXPECT_NE(rt_->branch_view(b)->pages[1], sealed);
  EXPECT_TRUE(branch_bytes_match(*rt_, b, t2));
  // The indexed page still holds the original tokens' KV.
  auto reuse = rt_->create_branch(t);
  ASSERT_TRUE(reuse.is_ok());
  EXPECT_EQ(reuse->reused_tokens, 8u);
  EXPECT_TRUE(branch_bytes_match(*rt_, reuse->id, t));
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(RuntimeOps, SnapshotCheckoutIsBitIdenticalAndMetadataOnly) {
  const auto t = iota_tokens(10);
  BranchId b = make(t);
  auto snap = rt_->snapshot(b, "first");
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_TRUE(snap->created);
  EXPECT_TRUE(is_cid(snap->cid));
  EXPECT_EQ(snap->n_tokens, 10u);
  EXPECT_EQ(snap->n_pages, 3u);
  const std::size_t u = used();
  // The branch moves on; the snapshot keeps the old state.
  const auto t2 = concat(t, {500, 501, 502});
  auto ar = append_and_write(*rt_, b, {500, 501, 502}, t2);
  EXPECT_TRUE(ar.copied_page) << "the sealed partially filled page is copied, never written";
  ASSERT_TRUE(rt_->truncate(b, 3).is_ok());
  auto co = rt_->checkout(snap->cid);
  ASSERT_TRUE(co.is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, *co, t));
  ASSERT_TRUE(rt_->set_ref("main", snap->cid).is_ok());
  auto co2 = rt_->checkout("main");
  ASSERT_TRUE(co2.is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, *co2, t));
  EXPECT_LE(used(), u + 1);  // only b's own new page
  // Identical state snapshotted twice: same CID, one pin.
  auto again = rt_->snapshot(*co, "first");
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->cid, snap->cid);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(rt_->snapshots().size(), 1u);
  // The manifest re-derives its CID and names the geometry and tokens.
  auto bytes = rt_->manifest(snap->cid);
  ASSERT_TRUE(bytes.is_ok());
  auto pm = parse_manifest(*bytes);
  ASSERT_TRUE(pm.is_ok()) << pm.status().to_string();
  EXPECT_EQ(pm->cid, snap->cid);
  EXPECT_EQ(pm->manifest.tokens, t);
  EXPECT_EQ(pm->manifest.name, "first");
  EXPECT_EQ(pm->manifest.logical_seqs.at(0).fill_in_last_page, 2u);
  EXPECT_EQ(pm->manifest.geometry, rt_->geometry());
}

TEST_P(RuntimeOps, SnapshotParentsFormAChainAndLogWalksIt) {
  BranchId b = make(iota_tokens(5));
  auto s1 = rt_->snapshot(b, "one");
  append_and_write(*rt_, b, {9}, concat(iota_tokens(5), {9}));
  auto s2 = rt_->snapshot(b, "two");
  ASSERT_TRUE(s1.is_ok() && s2.is_ok());
  EXPECT_EQ(s2->parents, std::vector<std::string>{s1->cid});
  auto lg = rt_->log(s2->cid);
  ASSERT_TRUE(lg.is_ok());
  ASSERT_EQ(lg->size(), 2u);
  EXPECT_EQ((*lg)[0].cid, s2->cid);
  EXPECT_EQ((*lg)[0].name, "two");
  EXPECT_EQ((*lg)[1].cid, s1->cid);
  EXPECT_EQ((*lg)[1].n_tokens, 5u);
  EXPECT_TRUE((*lg)[1].parents.empty());
  // Unpinned ancestors stay in the log as unknown CIDs (the ref "one" goes first).
  ASSERT_TRUE(rt_->delete_ref("one").is_ok());
  ASSERT_TRUE(rt_->unpin(s1->cid).is_ok());
  lg = rt_->log(s2->cid);
  ASSERT_TRUE(lg.is_ok());
  ASSERT_EQ(lg->size(), 2u);
  EXPECT_FALSE((*lg)[1].known);
}

// A snapshot's name is a ref (docs/runtime.md "Snapshots, refs, log"): checkout, fork and
// log take it; a later snapshot under the same name moves it, like a git branch name; the
// snapshot it named before keeps its pin and can be unpinned once no ref names it.
TEST_P(RuntimeOps, SnapshotNameIsARefThatMovesToTheNewestSnapshot) {
  const auto t = iota_tokens(6);
  BranchId b = make(t);
  auto s1 = rt_->snapshot(b, "ctx");
  ASSERT_TRUE(s1.is_ok()) << s1.status().to_string();
  EXPECT_EQ(*rt_->get_ref("ctx"), s1->cid);
  auto co = rt_->checkout("ctx");
  ASSERT_TRUE(co.is_ok()) << co.status().to_string();
  EXPECT_TRUE(branch_bytes_match(*rt_, *co, t));
  auto kids = rt_->fork(std::string("ctx"), 3);
  ASSERT_TRUE(kids.is_ok()) << kids.status().to_string();
  EXPECT_EQ(kids->source, s1->cid);
  EXPECT_EQ(kids->branches.size(), 3u);
  EXPECT_EQ(rt_->log("ctx")->at(0).cid, s1->cid);
  EXPECT_EQ(rt_->unpin(s1->cid).code(), Code::kConflict);  // the ref names it

  const auto t2 = concat(t, {70, 71});
  append_and_write(*rt_, b, {70, 71}, t2);
  auto s2 = rt_->snapshot(b, "ctx");
  ASSERT_TRUE(s2.is_ok());
  ASSERT_NE(s2->cid, s1->cid);
  EXPECT_EQ(*rt_->get_ref("ctx"), s2->cid);  // moved
  EXPECT_EQ(rt_->refs().size(), 1u);
  auto co2 = rt_->checkout("ctx");
  ASSERT_TRUE(co2.is_ok());
  EXPECT_TRUE(branch_bytes_match(*rt_, *co2, t2));
  EXPECT_EQ(rt_->log("ctx")->at(1).cid, s1->cid);
  // The old snapshot is still pinned (checkout by CID works) and no longer held by a ref.
  EXPECT_TRUE(rt_->checkout(s1->cid).is_ok());
  EXPECT_TRUE(rt_->unpin(s1->cid).is_ok());
  EXPECT_EQ(rt_->unpin(s2->cid).code(), Code::kConflict);

  // An identical snapshot under a new name: the same CID, a second ref to it.
  auto same = rt_->snapshot(*co2, "also");
  ASSERT_TRUE(same.is_ok());
  EXPECT_EQ(*rt_->get_ref("also"), same->cid);
  EXPECT_EQ(rt_->refs().size(), 2u);
  // No name, no ref; a merge's snapshot (manifest name "merge") sets none either.
  ASSERT_TRUE(rt_->snapshot(b).is_ok());
  BranchId other = make({1, 2, 3, 4, 5});
  auto m = rt_->merge(other, b);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->outcome, MergeOutcome::kThreeWay);
  EXPECT_EQ(rt_->get_ref("merge").status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->refs().size(), 2u);
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(RuntimeOps, MergeFastForward) {
  const auto a = iota_tokens(6);
  BranchId b = make(a);
  auto base = rt_->snapshot(b);
  const auto longer = concat(a, {70, 71, 72});
  append_and_write(*rt_, b, {70, 71, 72}, longer);
  auto tip = rt_->snapshot(b);
  ASSERT_TRUE(base.is_ok() && tip.is_ok());
  auto m = rt_->merge(tip->cid, base->cid);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->outcome, MergeOutcome::kFastForward);
  EXPECT_EQ(merge_outcome_name(m->outcome), "fast-forward");
  EXPECT_EQ(m->cid, tip->cid);
  EXPECT_EQ(m->base, base->cid);
  EXPECT_EQ(m->common_tokens, 6u);
  EXPECT_TRUE(m->recompute_tokens.empty());
  EXPECT_TRUE(branch_bytes_match(*rt_, m->branch, longer));
}

TEST_P(RuntimeOps, MergeThreeWayKeepsIntoAndListsFromTokens) {
  const auto a = iota_tokens(6);
  BranchId root = make(a);
  auto base = rt_->snapshot(root);
  auto fk = rt_->fork(base->cid, 2);
  ASSERT_TRUE(fk.is_ok());
  const auto ours = concat(a, {100, 101});
  const auto theirs = concat(a, {200, 201, 202});
  append_and_write(*rt_, fk->branches[0], {100, 101}, ours);
  append_and_write(*rt_, fk->branches[1], {200, 201, 202}, theirs);
  const std::size_t u = used();
  // Branch sources are snapshotted first.
  auto m = rt_->merge(fk->branches[1], fk->branches[0]);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->outcome, MergeOutcome::kThreeWay);
  EXPECT_EQ(m->common_tokens, 6u);
  EXPECT_EQ(m->recompute_tokens, (std::vector<Token>{200, 201, 202}));
  EXPECT_EQ(m->base, base->cid);
  EXPECT_EQ(used(), u) << "merge is metadata only";
  EXPECT_TRUE(branch_bytes_match(*rt_, m->branch, ours));
  auto info = rt_->snapshot_info(m->cid);
  ASSERT_TRUE(info.is_ok());
  ASSERT_EQ(info->parents.size(), 2u);
  auto into_cid = rt_->branch_info(fk->branches[0])->parents.at(0);
  auto from_cid = rt_->branch_info(fk->branches[1])->parents.at(0);
  EXPECT_EQ(info->parents[0], into_cid);
  EXPECT_EQ(info->parents[1], from_cid);
  // The engine prefills the listed tokens on top of the result.
  const auto merged = concat(ours, m->recompute_tokens);
  append_and_write(*rt_, m->branch, m->recompute_tokens, merged);
  EXPECT_TRUE(branch_bytes_match(*rt_, m->branch, merged));
  EXPECT_EQ(rt_->branch_info(m->branch)->parents, std::vector<std::string>{m->cid});
}

TEST_P(RuntimeOps, DiffCountsSharedAndPrivatePages) {
  const auto a = iota_tokens(9);
  BranchId b = make(a);
  auto fk = rt_->fork(b, 1);
  const auto longer = concat(a, {1, 2, 3, 4, 5});
  append_and_write(*rt_, fk->branches[0], {1, 2, 3, 4, 5}, longer);
  auto d = rt_->diff(b, fk->branches[0]);
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->common_tokens, 9u);
  EXPECT_EQ(d->shared_pages, (std::vector<std::uint64_t>{0, 1}));
  EXPECT_EQ(d->a_only_pages, (std::vector<std::uint64_t>{2}));  // the copied partial page
  EXPECT_EQ(d->b_only_pages, (std::vector<std::uint64_t>{2, 3}));
}

TEST_P(RuntimeOps, PrefixReuseAfterCommit) {
  const auto t = iota_tokens(11);
  BranchId b = make(t);
  ASSERT_TRUE(rt_->commit(b).is_ok());
  EXPECT_EQ(rt_->pool_stats().index_nodes, 2u);
  const std::size_t u = used();
  auto nb = rt_->create_branch(concat(std::vector<Token>(t.begin(), t.begin() + 10), {999}));
  ASSERT_TRUE(nb.is_ok());
  EXPECT_EQ(nb->reused_tokens, 8u);
  EXPECT_EQ(nb->n_tokens, 8u);
  EXPECT_EQ(used(), u) << "prefix reuse copies nothing";
  EXPECT_TRUE(branch_bytes_match(*rt_, nb->id, std::vector<Token>(t.begin(), t.begin() + 8)));
  EXPECT_EQ(rt_->lookup_prefix(iota_tokens(3)), 0u);
  EXPECT_EQ(rt_->lookup_prefix(t), 8u);
  // After the writers go, the index alone holds the pages: cached, then evicted LRU.
  ASSERT_TRUE(rt_->free_branch(b).is_ok());
  ASSERT_TRUE(rt_->free_branch(nb->id).is_ok());
  auto st = rt_->pool_stats();
  EXPECT_EQ(st.cached_pages, 2u);
  EXPECT_EQ(st.used_pages, 2u);
  EXPECT_EQ(rt_->evict(1), 1u);  // the leaf first
  EXPECT_EQ(rt_->lookup_prefix(t), 4u);
  auto gc = rt_->gc(true);
  EXPECT_EQ(gc.evicted_pages, 1u);
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
}

TEST_P(RuntimeOps, EverythingFreedMeansEveryPageFree) {
  BranchId b = make(iota_tokens(23));
  ASSERT_TRUE(rt_->commit(b).is_ok());
  auto s = rt_->snapshot(b, "x");
  auto fk = rt_->fork(s->cid, 4);
  for (BranchId c : fk->branches)
    append_and_write(*rt_, c, {1, 2}, concat(iota_tokens(23), {1, 2}));
  ASSERT_TRUE(rt_->set_ref("r", s->cid).is_ok());
  EXPECT_EQ(rt_->unpin(s->cid).code(), Code::kConflict);
  ASSERT_TRUE(rt_->delete_ref("r").is_ok());
  EXPECT_EQ(rt_->unpin(s->cid).code(), Code::kConflict);  // "x", its name, is a ref too
  ASSERT_TRUE(rt_->delete_ref("x").is_ok());
  for (BranchId id : rt_->branches()) ASSERT_TRUE(rt_->free_branch(id).is_ok());
  ASSERT_TRUE(rt_->unpin(s->cid).is_ok());
  rt_->gc(true);
  auto st = rt_->pool_stats();
  EXPECT_EQ(st.used_pages, 0u);
  EXPECT_EQ(st.free_pages, st.capacity_pages);
  EXPECT_EQ(st.chunks, 0u) << "empty trailing chunks go back to the backend";
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(RuntimeOps, OwnersAndLeases) {
  auto a = rt_->create_branch({}, 7);
  auto b = rt_->create_branch({}, 7);
  auto c = rt_->create_branch({}, 8);
  ASSERT_TRUE(a.is_ok() && b.is_ok() && c.is_ok());
  append_and_write(*rt_, a->id, iota_tokens(5), iota_tokens(5));
  EXPECT_TRUE(rt_->check_access(a->id, 7).is_ok());
  EXPECT_EQ(rt_->check_access(a->id, 8).code(), Code::kConflict);
  ASSERT_TRUE(rt_->set_owner(b->id, 0).is_ok());  // detached: outlives its lease
  EXPECT_TRUE(rt_->check_access(b->id, 8).is_ok());
  EXPECT_EQ(rt_->free_owned_by(7), 1u);
  EXPECT_EQ(rt_->branch_info(a->id).status().code(), Code::kNotFound);
  EXPECT_TRUE(rt_->branch_info(b->id).is_ok());
  EXPECT_TRUE(rt_->branch_info(c->id).is_ok());
  EXPECT_EQ(used(), 0u);
}

TEST_P(RuntimeOps, ErrorsChangeNothing) {
  BranchId b = make(iota_tokens(7));
  auto s = rt_->snapshot(b);
  const auto stats = rt_->pool_stats();
  const auto view = rt_->branch_view(b)->pages;
  const std::string unknown_cid = "sha256:" + std::string(64, '0');
  // kNotFound: unknown branch, CID, ref.
  EXPECT_EQ(rt_->append(BranchId{9999}, iota_tokens(1)).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->commit(BranchId{9999}).code(), Code::kNotFound);
  EXPECT_EQ(rt_->truncate(BranchId{9999}, 0).code(), Code::kNotFound);
  EXPECT_EQ(rt_->free_branch(BranchId{9999}).code(), Code::kNotFound);
  EXPECT_EQ(rt_->snapshot(BranchId{9999}).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->fork(BranchId{9999}, 2).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->fork(unknown_cid, 2).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->checkout(unknown_cid).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->checkout("no-such-ref").status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->merge(unknown_cid, s->cid).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->merge(b, BranchId{9999}).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->diff(b, std::string("nope")).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->log(unknown_cid).status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->unpin(unknown_cid).code(), Code::kNotFound);
  EXPECT_EQ(rt_->get_ref("nope").status().code(), Code::kNotFound);
  EXPECT_EQ(rt_->delete_ref("nope").code(), Code::kNotFound);
  EXPECT_EQ(rt_->set_ref("x", unknown_cid).code(), Code::kNotFound);
  EXPECT_EQ(rt_->set_owner(BranchId{9999}, 1).code(), Code::kNotFound);
  // kInvalidArgument: n out of range, truncate past the end, bad names.
  EXPECT_EQ(rt_->fork(b, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->fork(b, kMaxForkChildren + 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->fork(s->cid, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->truncate(b, 8).code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->set_ref("bad name!", s->cid).code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->set_ref("", s->cid).code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->snapshot(b, std::string(300, 'n')).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->snapshot(b, std::string("\xff\xfe")).status().code(), Code::kInvalidArgument);
  // A snapshot name is a ref name: one set_ref would refuse is refused before anything
  // changes (no snapshot, no ref).
  const std::size_t n_snaps = rt_->snapshots().size();
  EXPECT_EQ(rt_->snapshot(b, "my ctx").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->snapshot(b, "-ctx").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->snapshot(b, std::string(256, 'n')).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->snapshots().size(), n_snaps);
  EXPECT_TRUE(rt_->refs().empty());
  // Geometry mismatch: a manifest from a pool of another geometry.
  Manifest other;
  other.geometry = *geometry_preset("llama-3-8b");
  other.logical_seqs.push_back({});
  auto other_bytes = canonical_json(other);
  ASSERT_TRUE(other_bytes.is_ok());
  auto mp = rt_->missing_pages(*other_bytes);
  EXPECT_EQ(mp.status().code(), Code::kInvalidArgument);
  EXPECT_NE(mp.status().message().find("geometry mismatch"), std::string::npos);
  EXPECT_EQ(rt_->missing_pages("{not json").status().code(), Code::kInvalidArgument);
  // A same-geometry manifest: pages we hold are not missing.
  auto ours = rt_->manifest(s->cid);
  ASSERT_TRUE(ours.is_ok());
  EXPECT_TRUE(rt_->missing_pages(*ours)->empty());
  // kConflict: another lease's branch.
  ASSERT_TRUE(rt_->set_owner(b, 5).is_ok());
  EXPECT_EQ(rt_->check_access(b, 6).code(), Code::kConflict);
  // Nothing changed.
  const auto after = rt_->pool_stats();
  EXPECT_EQ(after.used_pages, stats.used_pages);
  EXPECT_EQ(after.branches, stats.branches);
  EXPECT_EQ(after.snapshots, stats.snapshots);
  EXPECT_EQ(rt_->branch_view(b)->pages, view);
  EXPECT_TRUE(branch_bytes_match(*rt_, b, iota_tokens(7)));
  EXPECT_TRUE(rt_->verify().is_ok());
}

TEST_P(RuntimeOps, OutOfPagesIsReportedAndChangesNothing) {
  // A pool of 6 pages (capacity below one chunk).
  Fixture f = make_runtime(GetParam(), *geometry_preset("tiny"), 6 * 512);
  if (!f.rt) GTEST_SKIP() << f.skip_reason;
  Runtime& rt = *f.rt;
  auto b = rt.create_branch();
  append_and_write(rt, b->id, iota_tokens(22), iota_tokens(22));  // 6 pages
  auto fk = rt.fork(b->id, 2);                                    // still fine: no page needed
  ASSERT_TRUE(fk.is_ok());
  auto ar = rt.append(fk->branches[0], iota_tokens(1));
  EXPECT_EQ(ar.status().code(), Code::kOutOfMemory);
  EXPECT_TRUE(branch_bytes_match(rt, fk->branches[0], iota_tokens(22)));
  EXPECT_EQ(rt.pool_stats().used_pages, 6u);
  EXPECT_TRUE(rt.verify().is_ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, RuntimeOps, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           return info.param == "host" ? std::string("host") : std::string("cuda");
                         });

}  // namespace
}  // namespace pf::rt::testing
