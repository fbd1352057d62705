// Leases: a client process holding branches is SIGKILLed (idle, in the middle of a stream of
// appends, halfway through sending a frame); every page it held comes back. What it
// detached or snapshotted survives it.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/ipc/daemon_harness.h"

namespace pf::testing {
namespace {

class LeaseTest : public ::testing::Test {
 protected:
  Daemon d;
  json baseline = d.pool_json();

  // Every page the dead lease held is free again, except pages it committed, which stay in
  // the prefix index as evictable cache (that is the point of committing); dropping the
  // cache then frees those too.
  void expect_back_to_baseline() {
    auto held = [](const json& p) {
      return p["used_pages"].get<long>() - p["cached_pages"].get<long>();
    };
    EXPECT_TRUE(wait_until([&] {
      json p = d.pool_json();
      return held(p) == held(baseline) && p["branches"] == baseline["branches"] &&
             p["snapshots"] == baseline["snapshots"];
    })) << d.pool()
        << "\nbaseline " << baseline.dump();
    httplib::Client h = d.http();
    auto gc = h.Post("/v1/gc", R"({"drop_cache":true})", "application/json");
    ASSERT_TRUE(gc);
    EXPECT_EQ(gc->status, 200);
    EXPECT_EQ(d.pool_json()["used_pages"], baseline["used_pages"]) << d.pool();
    EXPECT_EQ(d.pool_json()["free_pages"], baseline["free_pages"]);
    auto m = h.Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("processfork_leases_active 0\n"), std::string::npos);
    EXPECT_NE(m->body.find("processfork_clients_connected 0\n"), std::string::npos);
    // The runtime verified its invariants after every operation (--verify): nothing broke.
    EXPECT_EQ(d.log().find("invariant"), std::string::npos) << d.log();
    EXPECT_EQ(d.log().find("INTERNAL"), std::string::npos) << d.log();
  }
};

TEST_F(LeaseTest, KilledIdleClientLeaksNothing) {
  LeaseClient c(d.socket(), {"hold", "5", "41"});
  const std::vector<std::string> ids = c.ready();
  ASSERT_EQ(ids.size(), 5u);
  json held = d.pool_json();
  EXPECT_EQ(held["branches"], 5);
  EXPECT_EQ(held["used_pages"], 5 * 11);  // 44 tokens each
  EXPECT_EQ(held["cached_pages"], 0);     // committed pages are still the branches'
  // HTTP cannot touch them while the lease lives.
  httplib::Client h = d.http();
  auto del = h.Delete(("/v1/branches/" + ids[0]).c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 409);
  c.kill9();
  expect_back_to_baseline();
  auto gone = h.Get(("/v1/branches/" + ids[0]).c_str());
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
}

TEST_F(LeaseTest, KilledInTheMiddleOfAStreamOfAppends) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(round);
    LeaseClient c(d.socket(), {"stream"});
    ASSERT_EQ(c.ready().size(), 1u);
    // Let it run a random while: appends, forks and copy-on-write copies are in flight.
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 150));
    EXPECT_GT(d.pool_json()["used_pages"].get<int>(), 0);
    c.kill9();
    expect_back_to_baseline();
  }
  httplib::Client h = d.http();
  auto m = h.Get("/metrics");
  ASSERT_TRUE(m);
  // The streams really did append and copy pages before they died.
  EXPECT_EQ(m->body.find("processfork_cow_copied_pages_total 0\n"), std::string::npos);
  EXPECT_EQ(m->body.find("processfork_lease_branches_freed_total 0\n"), std::string::npos);
}

TEST_F(LeaseTest, KilledHalfwayThroughSendingAFrame) {
  LeaseClient c(d.socket(), {"partial"});
  ASSERT_EQ(c.ready().size(), 1u);
  EXPECT_GT(d.pool_json()["used_pages"].get<int>(), 0);
  c.kill9();
  expect_back_to_baseline();
}

TEST_F(LeaseTest, DetachedAndSnapshottedStateSurvivesTheLease) {
  LeaseClient c(d.socket(), {"keep"});
  const std::vector<std::string> words = c.ready();
  ASSERT_EQ(words.size(), 3u);
  const std::string detached = words[0], cid = words[1], doomed = words[2];
  c.kill9();
  httplib::Client h = d.http();
  ASSERT_TRUE(wait_until([&] {
    auto r = h.Get(("/v1/branches/" + doomed).c_str());
    return r && r->status == 404;
  }));
  auto kept = h.Get(("/v1/branches/" + detached).c_str());
  ASSERT_TRUE(kept);
  ASSERT_EQ(kept->status, 200);
  EXPECT_EQ(json::parse(kept->body)["n_tokens"], 6);
  EXPECT_EQ(json::parse(kept->body)["owner"], 0);
  auto snap = h.Get(("/v1/snapshots/" + cid).c_str());
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->status, 200);
  // Detached branch: 2 pages; snapshot of 10 tokens: 3 pages; nothing else.
  EXPECT_EQ(d.pool_json()["used_pages"], 5);
  EXPECT_EQ(d.pool_json()["branches"], 1);
  // Once they are released too, the pool is empty again.
  EXPECT_EQ(h.Delete(("/v1/branches/" + detached).c_str())->status, 204);
  EXPECT_EQ(h.Delete(("/v1/snapshots/" + cid).c_str())->status, 204);
  expect_back_to_baseline();
}

TEST_F(LeaseTest, ManyClientsDieAtOnce) {
  std::vector<std::unique_ptr<LeaseClient>> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(std::make_unique<LeaseClient>(
        d.socket(), std::vector<std::string>{i % 2 ? "stream" : "hold", "3", "9"}));
  }
  // "stream" ignores the extra arguments it does not need; both print "ready".
  for (auto& c : clients) c->ready();
  for (auto& c : clients) c->kill9();
  expect_back_to_baseline();
}

}  // namespace
}  // namespace pf::testing
