// processfork.hpp: RAII handles and exceptions over the C ABI.
#include "shims/include/processfork.hpp"
#include "tests/shims/kv_pattern.h"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

class ShimsHpp : public ::testing::Test {
 protected:
  processfork::Client client() {
    processfork::ConnectOptions o;
    o.socket_path = daemon_.socket();
    return processfork::Client(o);
  }
  std::uint64_t branches(processfork::Client& c) {
    return json::parse(c.pool_json()).value("branches", 0u);
  }

  Daemon daemon_;
};

TEST_F(ShimsHpp, BranchHandlesFreeOnDestructionUnlessReleasedOrDetached) {
  processfork::Client c = client();
  const std::vector<std::uint32_t> tokens = {1, 2, 3, 4, 5, 6};
  {
    processfork::NewBranch b = c.branch();
    const processfork::AppendResult a = b.branch.append(tokens);
    EXPECT_EQ(a.first_token, 0u);
    ASSERT_EQ(a.runs.size(), 2u);
    EXPECT_EQ(branches(c), 1u);
    EXPECT_EQ(c.pool_stats().used_pages, 2u);
  }
  EXPECT_EQ(branches(c), 0u);
  EXPECT_EQ(c.pool_stats().used_pages, 0u);

  processfork::NewBranch kept = c.branch();
  const pf_branch_id kept_id = kept.branch.release();
  processfork::NewBranch detached = c.branch();
  const pf_branch_id detached_id = detached.branch.detach();
  EXPECT_FALSE(kept.branch);
  EXPECT_EQ(branches(c), 2u);
  // Moves transfer ownership; the moved-from handle frees nothing.
  processfork::Branch adopted = c.adopt(kept_id);
  processfork::Branch moved = std::move(adopted);
  EXPECT_EQ(moved.id(), kept_id);
  moved.free();
  EXPECT_EQ(branches(c), 1u);
  EXPECT_EQ(c.adopt(detached_id).view().info.owner, 0u);  // the temporary frees it
  EXPECT_EQ(branches(c), 0u);
}

TEST_F(ShimsHpp, SnapshotForkCheckoutMergeAndPagePointers) {
  processfork::Client c = client();
  const pf_pool_info info = c.pool();
  EXPECT_EQ(info.page_tokens, 4u);
  processfork::NewBranch b = c.branch();
  const std::vector<std::uint32_t> tokens = {7, 8, 9, 10, 11};
  const processfork::AppendResult a = b.branch.append(tokens);
  for (const processfork::WriteRun& r : a.runs) {
    for (std::uint32_t k = 0; k < r.count; ++k) {
      kvp_write_token(&info, c.page_ptr(r.page), r.first_slot + k, 5, r.first_token + k);
    }
  }
  const processfork::Snapshot s = b.branch.snapshot("five");
  EXPECT_TRUE(s.created);
  std::string source;
  std::vector<processfork::Branch> kids = c.fork(s.cid, 3, &source);
  EXPECT_EQ(source, s.cid);
  ASSERT_EQ(kids.size(), 3u);
  const processfork::View v = kids[2].view(true);
  EXPECT_EQ(v.tokens, tokens);
  EXPECT_EQ(v.ready_pages(), v.info.n_pages);
  // ABI 1.6: a view that waits for no page answers the same ids; every page is resident.
  const processfork::View now = kids[2].view(true, 0);
  EXPECT_EQ(now.pages, v.pages);
  EXPECT_EQ(now.tokens, tokens);
  EXPECT_EQ(now.info.n_pages, 2u);
  EXPECT_EQ(now.ready_pages(), 2u);
  for (std::uint64_t t = 0; t < tokens.size(); ++t) {
    EXPECT_TRUE(kvp_check_token(&info, c.page_ptr(v.pages[t / 4]), t % 4, 5, t));
  }
  std::vector<processfork::Branch> from_branch = b.branch.fork(2);
  EXPECT_EQ(from_branch.size(), 2u);
  std::string cid;
  processfork::Branch at = c.checkout(s.cid, &cid);
  EXPECT_EQ(cid, s.cid);
  processfork::Merge m = c.merge(s.cid, at.id());
  EXPECT_TRUE(m.fast_forward);
  EXPECT_TRUE(m.branch);
  EXPECT_EQ(json::parse(c.diff(at.id(), s.cid)).value("common_tokens", 0u), 5u);
  EXPECT_EQ(json::parse(c.log(s.cid))["entries"].size(), 1u);
  c.ref_set("five", s.cid);
  EXPECT_EQ(c.ref_get("five"), s.cid);
  c.ref_delete("five");
  EXPECT_FALSE(json::parse(c.manifest(s.cid)).empty());
  EXPECT_GE(json::parse(c.snapshots())["snapshots"].size(), 1u);
  EXPECT_EQ(json::parse(c.health())["status"], "ok");
  EXPECT_GE(c.mapping().mapped_chunks, 1u);
}

TEST_F(ShimsHpp, FailuresThrowErrorWithTheCode) {
  processfork::Client c = client();
  try {
    c.checkout("sha256:" + std::string(64, '1'));
    FAIL() << "no exception";
  } catch (const processfork::Error& e) {
    EXPECT_EQ(e.code(), PF_NOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("PF_NOT_FOUND"), std::string::npos);
  }
  EXPECT_THROW(c.adopt(999).commit(), processfork::Error);  // (the handle's free fails quietly)
  processfork::ConnectOptions o;
  o.socket_path = daemon_.dir().file("nothing-here");
  try {
    processfork::Client none(o);
    FAIL() << "connected to nothing";
  } catch (const processfork::Error& e) {
    EXPECT_EQ(e.code(), PF_UNAVAILABLE);
  }
  // A Branch outliving its daemon frees quietly (no throw from a destructor).
  processfork::NewBranch b = c.branch();
  daemon_.kill_hard();
  EXPECT_THROW(b.branch.commit(), processfork::Error);
}

}  // namespace
}  // namespace pf::shimtest
