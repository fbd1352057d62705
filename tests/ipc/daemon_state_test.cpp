// Daemon state across restarts and damage, through real daemon processes, sockets and HTTP:
//  - boot epochs (runtime/ids.h, ipc/boot_epoch.h): a restarted daemon on the same socket
//    hands out branch and lease ids that no earlier run used, so an id kept from before the
//    restart names nothing (404) and a stale free cannot delete another client's branch;
//    HELLO's 3.2 tail names the epoch, and a 3.1 client's HELLO still works;
//  - quarantine (docs/daemon.md "Quarantined pages"): with --verify, a sealed page whose
//    bytes are changed through a client's mapping is quarantined; forks of other snapshots
//    keep working and create exactly their branches, while fork/checkout/manifest of the
//    damaged snapshot answer data_corrupt naming the page and the CID and change nothing.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "runtime/ids.h"
#include "tests/ipc/daemon_harness.h"

namespace pf::testing {
namespace {

using wire::MsgType;

// One HTTP exchange: status and parsed JSON body (null for an empty body or no answer).
struct Answer {
  int status = 0;
  json body;
};
Answer http_call(const Daemon& d, const std::string& method, const std::string& path,
                 const json& body = json()) {
  httplib::Client cli = d.http();
  const std::string text = body.is_null() ? "" : body.dump();
  httplib::Result r = method == "GET"      ? cli.Get(path.c_str())
                      : method == "DELETE" ? cli.Delete(path.c_str())
                                           : cli.Post(path.c_str(), text, "application/json");
  Answer a;
  if (!r) {
    ADD_FAILURE() << method << " " << path << ": no answer";
    return a;
  }
  a.status = r->status;
  if (!r->body.empty()) a.body = json::parse(r->body, nullptr, false);
  return a;
}

std::uint32_t boot_epoch(const Daemon& d) {
  const Answer h = http_call(d, "GET", "/v1/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_TRUE(h.body.contains("boot_epoch")) << h.body.dump();
  return h.body.value("boot_epoch", 0u);
}

std::uint64_t http_branch(const Daemon& d) {
  const Answer a = http_call(d, "POST", "/v1/branches", json::object());
  EXPECT_EQ(a.status, 201) << a.body.dump();
  return a.body.value("branch", std::uint64_t{0});
}

// HELLO's reply ends with the boot epoch (3.2, an optional tail after HelloReply): the same
// epoch as the health reply's and the lease id's high bits. A 3.1 client's HELLO is answered
// as well (it reads HelloReply and ignores the bytes after it).
TEST(DaemonBootEpoch, HelloNamesTheBootEpoch) {
  Daemon d;
  ASSERT_GT(d.pid(), 0);
  const std::uint32_t epoch = boot_epoch(d);
  for (const std::uint16_t minor : {wire::kVersionMinor, std::uint16_t{1}}) {
    RawClient c(d.socket());
    wire::HelloRequest req;
    req.minor = minor;
    wire::PayloadWriter w;
    w.put(req);
    Result<WireReply> r = c.call(MsgType::kHello, w);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    ASSERT_TRUE(r->ok()) << r->text();
    // 3.3 appended HelloDevice (empty names for a host pool) after HelloSession.
    ASSERT_EQ(r->body.size(),
              sizeof(wire::HelloReply) + sizeof(wire::HelloSession) + sizeof(wire::HelloDevice));
    const auto hello = r->as<wire::HelloReply>();
    const auto session = r->as<wire::HelloSession>(sizeof(wire::HelloReply));
    const auto device =
        r->as<wire::HelloDevice>(sizeof(wire::HelloReply) + sizeof(wire::HelloSession));
    EXPECT_EQ(device.uuid[0], '\0') << "a host pool has no GPU UUID";
    EXPECT_EQ(device.pci_bus_id[0], '\0');
    EXPECT_EQ(hello.minor, wire::kVersionMinor);
    EXPECT_EQ(session.boot_epoch, epoch);
    EXPECT_EQ(session.reserved, 0u);
    EXPECT_EQ(wire::id_epoch(hello.lease), epoch);
    EXPECT_EQ(rt::id_epoch(hello.lease), epoch);
    // The session works after either HELLO.
    EXPECT_NE(c.create_branch({1, 2, 3}), 0u);
  }
}

TEST(DaemonBootEpoch, IdsFromAnEarlierRunNameNothingAfterARestart) {
  Daemon first;
  ASSERT_GT(first.pid(), 0);
  const std::uint32_t e1 = boot_epoch(first);
  EXPECT_GE(e1, 1u);
  EXPECT_LE(e1, rt::kMaxBootEpoch);
  EXPECT_EQ(first.info().value("boot_epoch", 0u), e1);
  const std::uint64_t old_branch = http_branch(first);
  EXPECT_EQ(rt::id_epoch(old_branch), e1);
  RawClient c1(first.socket());
  const std::uint64_t old_lease = c1.hello().lease;
  EXPECT_EQ(rt::id_epoch(old_lease), e1);
  c1.close();
  // The counter sits next to the socket, readable by its owner only.
  struct stat st {};
  EXPECT_EQ(stat((first.socket() + ".epoch").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(first.stop(), 0);

  Daemon second({"--socket", first.socket()});
  ASSERT_GT(second.pid(), 0);
  const std::uint32_t e2 = boot_epoch(second);
  EXPECT_EQ(e2, e1 == rt::kMaxBootEpoch ? 1u : e1 + 1);
  EXPECT_NE(second.log().find("boot epoch " + std::to_string(e2) + " from counter"),
            std::string::npos)
      << second.log();
  // Another client's new branch; then the first client comes back and frees its old id.
  const std::uint64_t new_branch = http_branch(second);
  EXPECT_NE(new_branch, old_branch);
  EXPECT_EQ(rt::id_epoch(new_branch), e2);
  const std::string old_path = "/v1/branches/" + std::to_string(old_branch);
  EXPECT_EQ(http_call(second, "GET", old_path).status, 404);
  const Answer freed = http_call(second, "DELETE", old_path);
  EXPECT_EQ(freed.status, 404);
  EXPECT_EQ(freed.body["error"].value("code", ""), "not_found");
  // Nothing changed: the other client's branch is alive.
  EXPECT_EQ(http_call(second, "GET", "/v1/branches/" + std::to_string(new_branch)).status, 200);
  EXPECT_EQ(second.pool_json().value("branches", 0), 1);
  // Through the socket too: an old id is unknown, and leases carry the new epoch.
  RawClient c2(first.socket());  // second.socket() is the harness default, overridden
  const std::uint64_t new_lease = c2.hello().lease;
  EXPECT_NE(new_lease, old_lease);
  EXPECT_EQ(rt::id_epoch(new_lease), e2);
  Result<WireReply> stale = c2.branch_op(MsgType::kBranchFree, old_branch);
  ASSERT_TRUE(stale.is_ok());
  EXPECT_EQ(stale->code(), Code::kNotFound) << stale->text();
  EXPECT_EQ(http_call(second, "GET", "/v1/branches/" + std::to_string(new_branch)).status, 200);
  // The metrics show the epoch.
  httplib::Result m = second.http().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("processfork_boot_epoch " + std::to_string(e2) + "\n"), std::string::npos);
}

TEST(DaemonBootEpoch, AnUnusableCounterFileGivesARandomEpoch) {
  TempDir dir("pfe");
  const std::string socket = dir.file("pf.sock");
  // A directory where the counter file belongs: it can be neither read nor replaced.
  ASSERT_EQ(mkdir((socket + ".epoch").c_str(), 0700), 0);
  Daemon d({"--socket", socket});
  ASSERT_GT(d.pid(), 0);
  const std::uint32_t e = boot_epoch(d);
  EXPECT_GE(e, 1u);
  EXPECT_LE(e, rt::kMaxBootEpoch);
  EXPECT_NE(d.log().find("boot epoch " + std::to_string(e) + " from random"), std::string::npos)
      << d.log();
  EXPECT_EQ(rt::id_epoch(http_branch(d)), e);
}

// Flips one byte of pool page `page` through a mapping of the chunk fd that attach hands
// out: what a misbehaving engine writing into a sealed page does.
void corrupt_through_mapping(RawClient& c, const wire::HelloReply& hello, std::uint32_t page) {
  wire::AttachRequest req;
  wire::PayloadWriter w;
  w.put(req);
  Result<WireReply> r = c.call(MsgType::kAttach, w);
  ASSERT_TRUE(r.is_ok() && r->ok());
  const auto ar = r->as<wire::AttachReply>();
  const std::size_t offset = std::size_t{page} * hello.page_bytes;
  const std::size_t chunk = offset / hello.chunk_bytes;
  ASSERT_GE(chunk, ar.first_chunk);
  ASSERT_LT(chunk - ar.first_chunk, r->fds.size());
  void* m = mmap(nullptr, hello.chunk_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                 r->fds[chunk - ar.first_chunk].get(), 0);
  ASSERT_NE(m, MAP_FAILED) << std::strerror(errno);
  auto* byte = static_cast<unsigned char*>(m) + offset % hello.chunk_bytes;
  *byte = static_cast<unsigned char>(~*byte);
  munmap(m, hello.chunk_bytes);
}

// A snapshot of `tokens` written through the socket; `page` receives its first page.
std::string socket_snapshot(RawClient& c, const std::vector<std::uint32_t>& tokens,
                            std::uint32_t* page) {
  const std::uint64_t b = c.create_branch({});
  const std::vector<wire::WriteRunWire> runs = c.append(b, tokens);
  EXPECT_FALSE(runs.empty());
  if (page != nullptr && !runs.empty()) *page = runs[0].page;
  const std::string cid = c.snapshot(b);
  EXPECT_TRUE(c.branch_op(MsgType::kBranchFree, b)->ok());
  return cid;
}

TEST(DaemonQuarantine, ADamagedSnapshotFailsCleanlyAndEverythingElseWorks) {
  Daemon d;  // --verify
  ASSERT_GT(d.pid(), 0);
  RawClient c(d.socket());
  const wire::HelloReply hello = c.hello();
  std::uint32_t bad = 0;
  const std::string broken = socket_snapshot(c, iota_tokens(1, 10), &bad);
  const std::string healthy = socket_snapshot(c, iota_tokens(500, 10), nullptr);
  ASSERT_FALSE(broken.empty());
  ASSERT_FALSE(healthy.empty());
  corrupt_through_mapping(c, hello, bad);

  // Another client's fork of an unrelated snapshot works and creates exactly 3 branches.
  const int branches_before = d.pool_json().value("branches", -1);
  const Answer kids = http_call(d, "POST", "/v1/processfork/fork", {{"cid", healthy}, {"n", 3}});
  ASSERT_EQ(kids.status, 201) << kids.body.dump();
  EXPECT_EQ(kids.body["branches"].size(), 3u);
  EXPECT_EQ(d.pool_json().value("branches", -1), branches_before + 3);

  // Building on the damaged snapshot fails with data_corrupt naming page and CID, and
  // changes nothing: same pool counters, same branch list.
  const std::string pool_before = d.pool();
  const Answer list_before = http_call(d, "GET", "/v1/branches");
  auto expect_corrupt = [&](const Answer& a) {
    EXPECT_EQ(a.status, 500) << a.body.dump();
    const json err = a.body.value("error", json::object());
    EXPECT_EQ(err.value("code", ""), "data_corrupt") << a.body.dump();
    const std::string message = err.value("message", "");
    EXPECT_NE(message.find(broken), std::string::npos) << message;
    EXPECT_NE(message.find("pool page " + std::to_string(bad)), std::string::npos) << message;
    EXPECT_EQ(d.pool(), pool_before);
    EXPECT_EQ(http_call(d, "GET", "/v1/branches").body, list_before.body);
  };
  expect_corrupt(http_call(d, "POST", "/v1/processfork/fork", {{"cid", broken}, {"n", 3}}));
  expect_corrupt(http_call(d, "POST", "/v1/processfork/checkout", {{"cid", broken}}));
  expect_corrupt(http_call(d, "GET", "/v1/snapshots/" + broken));
  // The socket answers the same code.
  msg::Fork fork;
  fork.source = source(broken);
  fork.head.n = 2;
  Result<msg::Forked> forked = c.op_call<ipc::Op::kFork>(fork);
  EXPECT_EQ(forked.status().code(), Code::kDataCorrupt) << forked.status().to_string();
  EXPECT_EQ(d.pool(), pool_before);

  // Health and metrics answer, and say what happened.
  EXPECT_EQ(http_call(d, "GET", "/v1/health").status, 200);
  httplib::Result m = d.http().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("processfork_pages{state=\"quarantined\"} 1\n"), std::string::npos);
  EXPECT_NE(d.log().find("quarantined page " + std::to_string(bad)), std::string::npos) << d.log();

  // A second client works as before: write, snapshot, fork, free.
  RawClient other(d.socket());
  other.hello();
  const std::string cid = socket_snapshot(other, iota_tokens(900, 7), nullptr);
  ASSERT_FALSE(cid.empty());
  EXPECT_EQ(http_call(d, "POST", "/v1/processfork/fork", {{"cid", cid}, {"n", 2}}).status, 201);
  // The damaged snapshot can still be dropped.
  EXPECT_EQ(http_call(d, "DELETE", "/v1/snapshots/" + broken).status, 204);
}

}  // namespace
}  // namespace pf::testing
