// The Unix-socket protocol against a running daemon, with raw frames: HELLO, attach (real
// chunk fds, mapped in two processes' worth of mappings), every fast-path op, errors inside
// well-formed frames, and hostile clients (truncated frames, wrong magic and version,
// unknown types, bogus ids, over-long payloads, fds sent to the daemon, disconnects
// mid-request). After each abuse another client still works, GET /v1/pool shows nothing
// leaked and the daemon holds no extra fd.
#include <gtest/gtest.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/page_format.h"
#include "tests/ipc/daemon_harness.h"
#include "tests/support/pattern.h"

namespace pf::testing {
namespace {

using wire::MsgType;

template <typename T>
wire::PayloadWriter payload(const T& v) {
  wire::PayloadWriter w;
  w.put(v);
  return w;
}

std::vector<std::byte> raw_bytes(const void* p, std::size_t n) {
  std::vector<std::byte> out(n);
  std::memcpy(out.data(), p, n);
  return out;
}

bool send_all(int fd, const std::vector<std::byte>& bytes) {
  return send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// A mapping of the whole pool through attach's fds, as a client library makes it.
struct PoolMapping {
  std::byte* base = nullptr;
  std::size_t bytes = 0;
  ~PoolMapping() {
    if (base) munmap(base, bytes);
  }
};

void map_pool(RawClient& c, const wire::HelloReply& hello, PoolMapping* m) {
  m->bytes = hello.capacity_bytes;
  m->base = static_cast<std::byte*>(
      mmap(nullptr, m->bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(m->base, MAP_FAILED);
  wire::AttachRequest req;
  Result<WireReply> r = c.call(MsgType::kAttach, payload(req));
  ASSERT_TRUE(r.is_ok() && r->ok());
  auto ar = r->as<wire::AttachReply>();
  ASSERT_EQ(ar.n_fds, r->fds.size());
  ASSERT_EQ(ar.total_chunks, r->rh.pool_chunks);
  ASSERT_EQ(ar.pool_epoch, r->rh.pool_epoch);
  for (std::uint32_t i = 0; i < ar.n_fds; ++i) {
    struct stat st {};
    ASSERT_EQ(fstat(r->fds[i].get(), &st), 0);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), hello.chunk_bytes);
    void* at = mmap(m->base + (ar.first_chunk + i) * hello.chunk_bytes, hello.chunk_bytes,
                    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->fds[i].get(), 0);
    ASSERT_NE(at, MAP_FAILED);
  }
}

class ProtocolTest : public ::testing::Test {
 protected:
  Daemon d;

  // Another client can still do real work, and the pool is back at `pool`.
  void expect_healthy(const std::string& pool) {
    RawClient c(d.socket());
    ASSERT_TRUE(c.connected());
    c.hello();
    const std::uint64_t b = c.create_branch({});
    EXPECT_EQ(c.append(b, iota_tokens(1, 5)).size(), 2u);
    EXPECT_TRUE(c.branch_op(MsgType::kBranchFree, b)->ok());
    c.close();
    EXPECT_TRUE(wait_until([&] { return d.pool() == pool; })) << d.pool() << "\n" << pool;
  }
};

TEST_F(ProtocolTest, HelloDescribesThePoolAndGrantsALease) {
  RawClient a(d.socket()), b(d.socket());
  ASSERT_TRUE(a.connected() && b.connected());
  wire::HelloReply ha = a.hello();
  wire::HelloReply hb = b.hello();
  EXPECT_EQ(ha.major, wire::kVersionMajor);
  EXPECT_EQ(ha.minor, wire::kVersionMinor);
  EXPECT_EQ(ha.daemon_pid, static_cast<std::uint32_t>(d.pid()));
  EXPECT_NE(ha.lease, 0u);
  EXPECT_NE(ha.lease, hb.lease);
  EXPECT_EQ(ha.geometry.layers, 2u);
  EXPECT_EQ(ha.geometry.kv_heads, 2u);
  EXPECT_EQ(ha.geometry.head_dim, 8u);
  EXPECT_EQ(ha.geometry.page_tokens, 4u);
  EXPECT_EQ(ha.geometry.dtype, 0u);  // bf16
  EXPECT_EQ(ha.page_bytes, 512u);
  EXPECT_EQ(ha.chunk_bytes, 2u << 20);
  EXPECT_GE(ha.capacity_bytes, 64u << 20);
  EXPECT_EQ(ha.capacity_bytes % ha.chunk_bytes, 0u);
  EXPECT_EQ(ha.capacity_pages, (64u << 20) / 512);
  EXPECT_STREQ(ha.backend, "host");
  EXPECT_STREQ(ha.device, "host");
}

TEST_F(ProtocolTest, AttachHandsOutChunkFdsThatMapThePoolInEveryProcess) {
  RawClient w(d.socket());
  ASSERT_TRUE(w.connected());
  const wire::HelloReply hello = w.hello();
  // Nothing mapped yet: attach answers no fds.
  Result<WireReply> empty = w.call(MsgType::kAttach, payload(wire::AttachRequest{}));
  ASSERT_TRUE(empty.is_ok() && empty->ok());
  EXPECT_EQ(empty->as<wire::AttachReply>().total_chunks, 0u);
  EXPECT_TRUE(empty->fds.empty());
  const std::uint64_t epoch0 = empty->rh.pool_epoch;

  const std::uint64_t b = w.create_branch({});
  Result<WireReply> ar = w.append_raw(b, iota_tokens(10, 10));
  ASSERT_TRUE(ar.is_ok() && ar->ok());
  EXPECT_NE(ar->rh.pool_epoch, epoch0);  // the pool grew: every reply says so
  EXPECT_EQ(ar->rh.pool_chunks, 1u);
  const auto head = ar->as<wire::AppendReply>();
  EXPECT_EQ(head.first_token, 0u);
  EXPECT_EQ(head.pages_added, 3u);
  EXPECT_EQ(head.copied_page, 0u);
  ASSERT_EQ(head.n_runs, 3u);
  ASSERT_EQ(ar->body.size(), sizeof head + 3 * sizeof(wire::WriteRunWire));

  PoolMapping mine;
  map_pool(w, hello, &mine);
  // Write each token's K row of layer 0 with a pattern, through the write runs.
  const rt::Geometry g{2, 2, 8, rt::DType::kBF16, 4};
  std::vector<wire::WriteRunWire> runs;
  for (std::uint32_t i = 0; i < head.n_runs; ++i) {
    runs.push_back(ar->as<wire::WriteRunWire>(sizeof head + i * sizeof(wire::WriteRunWire)));
  }
  for (const auto& run : runs) {
    for (std::uint32_t k = 0; k < run.count; ++k) {
      const auto bytes = pattern(g.token_bytes(), run.first_token + k);
      std::memcpy(
          mine.base + std::size_t{run.page} * 512 + g.offset(0, rt::Half::kK, run.first_slot + k),
          bytes.data(), bytes.size());
    }
  }
  const std::string cid = w.snapshot(b, "bytes");
  ASSERT_FALSE(cid.empty());

  // Another client checks the snapshot out and reads the same bytes through its mapping.
  RawClient r(d.socket());
  ASSERT_TRUE(r.connected());
  const wire::HelloReply rh = r.hello();
  PoolMapping theirs;
  map_pool(r, rh, &theirs);
  wire::CheckoutRequest co;
  co.name_bytes = static_cast<std::uint32_t>(cid.size());
  wire::PayloadWriter cw;
  cw.put(co).put_text(cid);
  Result<WireReply> c = r.call(MsgType::kCheckout, cw);
  ASSERT_TRUE(c.is_ok() && c->ok());
  const auto creply = c->as<wire::CheckoutReply>();
  EXPECT_EQ(std::string(creply.cid), cid);
  wire::BranchViewRequest vr;
  vr.branch = creply.branch;
  vr.with_tokens = 1;
  Result<WireReply> v = r.call(MsgType::kBranchView, payload(vr));
  ASSERT_TRUE(v.is_ok() && v->ok());
  const auto view = v->as<wire::BranchViewReply>();
  ASSERT_EQ(view.n_pages, 3u);
  EXPECT_EQ(view.n_tokens, 10u);
  EXPECT_EQ(view.fill_in_last_page, 2u);
  EXPECT_EQ(view.owner, rh.lease);
  ASSERT_EQ(v->body.size(), sizeof view + 3 * 4 + 10 * 4);
  for (std::uint64_t t = 0; t < 10; ++t) {
    const auto page = v->as<std::uint32_t>(sizeof view + (t / 4) * 4);
    const auto expect = pattern(g.token_bytes(), t);
    EXPECT_EQ(std::memcmp(theirs.base + std::size_t{page} * 512 +
                              g.offset(0, rt::Half::kK, static_cast<std::uint32_t>(t % 4)),
                          expect.data(), expect.size()),
              0)
        << "token " << t;
    EXPECT_EQ(v->as<std::uint32_t>(sizeof view + 12 + t * 4), 10 + t);
  }
  // Attach of a range past the end is an error; a partial range is served.
  wire::AttachRequest past;
  past.first_chunk = 5;
  Result<WireReply> bad = r.call(MsgType::kAttach, payload(past));
  ASSERT_TRUE(bad.is_ok());
  EXPECT_EQ(bad->code(), Code::kInvalidArgument);
  wire::AttachRequest none;
  none.max_chunks = 0;
  Result<WireReply> zero = r.call(MsgType::kAttach, payload(none));
  ASSERT_TRUE(zero.is_ok() && zero->ok());
  EXPECT_EQ(zero->as<wire::AttachReply>().n_fds, 0u);
  EXPECT_EQ(zero->as<wire::AttachReply>().total_chunks, 1u);
  EXPECT_TRUE(zero->fds.empty());
}

// More chunks than one message can carry fds for: attach pages through them with
// first_chunk, and every fd is the chunk its serial names.
TEST(ProtocolAttachTest, MoreThan253ChunksArriveInPages) {
  // One 2 MiB page per 2 MiB chunk: 260 pages map 260 chunks (memfds never touched).
  Daemon d({"--capacity", "600MiB", "--geometry",
            "layers=1,kv_heads=1,head_dim=256,dtype=fp32,page_tokens=1024"});
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  const wire::HelloReply hello = c.hello();
  ASSERT_EQ(hello.page_bytes, 2u << 20);
  const std::uint64_t b = c.create_branch({});
  Result<WireReply> a = c.append_raw(b, iota_tokens(0, 260 * 1024));
  ASSERT_TRUE(a.is_ok() && a->ok()) << (a.is_ok() ? a->text() : a.status().to_string());
  ASSERT_EQ(a->rh.pool_chunks, 260u);

  Result<WireReply> first = c.call(MsgType::kAttach, payload(wire::AttachRequest{}));
  ASSERT_TRUE(first.is_ok() && first->ok());
  const auto r1 = first->as<wire::AttachReply>();
  EXPECT_EQ(r1.total_chunks, 260u);
  EXPECT_EQ(r1.first_chunk, 0u);
  EXPECT_EQ(r1.n_fds, 253u);
  EXPECT_EQ(first->fds.size(), 253u);
  ASSERT_EQ(first->body.size(), sizeof r1 + 253 * 8);
  wire::AttachRequest rest;
  rest.first_chunk = 253;
  Result<WireReply> second = c.call(MsgType::kAttach, payload(rest));
  ASSERT_TRUE(second.is_ok() && second->ok());
  const auto r2 = second->as<wire::AttachReply>();
  EXPECT_EQ(r2.first_chunk, 253u);
  EXPECT_EQ(r2.n_fds, 7u);
  EXPECT_EQ(second->fds.size(), 7u);
  EXPECT_EQ(r2.pool_epoch, r1.pool_epoch);
  // Serials are distinct, and each fd is a distinct chunk of the right size.
  std::set<std::uint64_t> serials;
  std::set<std::pair<dev_t, ino_t>> files;
  for (std::uint32_t i = 0; i < 253; ++i)
    serials.insert(first->as<std::uint64_t>(sizeof r1 + i * 8));
  for (std::uint32_t i = 0; i < 7; ++i)
    serials.insert(second->as<std::uint64_t>(sizeof r2 + i * 8));
  for (const auto* r : {&*first, &*second}) {
    for (const UniqueFd& fd : r->fds) {
      struct stat st {};
      ASSERT_EQ(fstat(fd.get(), &st), 0);
      EXPECT_EQ(static_cast<std::size_t>(st.st_size), hello.chunk_bytes);
      files.insert({st.st_dev, st.st_ino});
    }
  }
  EXPECT_EQ(serials.size(), 260u);
  EXPECT_EQ(files.size(), 260u);
}

TEST_F(ProtocolTest, FastPathOps) {
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  const wire::HelloReply hello = c.hello();
  const std::uint64_t b = c.create_branch({});
  std::vector<wire::WriteRunWire> runs = c.append(b, iota_tokens(0, 6));
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].first_slot, 0u);
  EXPECT_EQ(runs[0].count, 4u);
  EXPECT_EQ(runs[0].first_token, 0u);
  EXPECT_EQ(runs[1].first_slot, 0u);
  EXPECT_EQ(runs[1].count, 2u);
  EXPECT_EQ(runs[1].first_token, 4u);
  runs = c.append(b, iota_tokens(6, 3));  // fills the second page, starts a third
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].first_slot, 2u);
  EXPECT_EQ(runs[0].count, 2u);
  EXPECT_EQ(runs[0].first_token, 6u);
  EXPECT_TRUE(c.branch_op(MsgType::kCommit, b)->ok());

  // Prefix reuse: two committed full pages.
  std::uint64_t reused = 0;
  const std::uint64_t p = c.create_branch(iota_tokens(0, 11), &reused);
  EXPECT_EQ(reused, 8u);

  // Truncate and view.
  wire::TruncateRequest tr;
  tr.branch = p;
  tr.n_tokens = 5;
  EXPECT_TRUE(c.call(MsgType::kTruncate, payload(tr))->ok());
  wire::BranchViewRequest vr;
  vr.branch = p;
  Result<WireReply> v = c.call(MsgType::kBranchView, payload(vr));
  ASSERT_TRUE(v.is_ok() && v->ok());
  EXPECT_EQ(v->as<wire::BranchViewReply>().n_tokens, 5u);
  EXPECT_EQ(v->as<wire::BranchViewReply>().n_pages, 2u);
  EXPECT_EQ(v->as<wire::BranchViewReply>().with_tokens, 0u);
  EXPECT_EQ(v->body.size(), sizeof(wire::BranchViewReply) + 2 * 4);

  // Snapshot (dedup), fork from CID, ref and branch, checkout by ref.
  wire::SnapshotRequest sr;
  sr.branch = b;
  Result<WireReply> s1 = c.call(MsgType::kSnapshot, payload(sr));
  ASSERT_TRUE(s1.is_ok() && s1->ok());
  const auto snap = s1->as<wire::SnapshotReply>();
  EXPECT_EQ(snap.n_tokens, 9u);
  EXPECT_EQ(snap.n_pages, 3u);
  EXPECT_EQ(snap.created, 1u);
  EXPECT_EQ(c.call(MsgType::kSnapshot, payload(sr))->as<wire::SnapshotReply>().created, 0u);
  const std::string cid = snap.cid;
  EXPECT_EQ(c.rendered<ipc::Op::kRefSet>({"base", cid}),
            (json{{"name", "base"}, {"cid", cid}}.dump()));

  auto fork = [&](std::uint8_t kind, std::uint64_t branch, const std::string& name,
                  std::uint32_t n) {
    wire::ForkRequest fr;
    fr.n = n;
    wire::SourceWire src;
    src.kind = kind;
    src.branch = branch;
    src.name_bytes = static_cast<std::uint32_t>(name.size());
    wire::PayloadWriter w;
    w.put(fr).put(src).put_text(name);
    return c.call(MsgType::kFork, w);
  };
  Result<WireReply> f = fork(1, 0, cid, 12);
  ASSERT_TRUE(f.is_ok() && f->ok()) << f->text();
  auto fr = f->as<wire::ForkReply>();
  EXPECT_EQ(fr.n, 12u);
  EXPECT_EQ(std::string(fr.source), cid);
  ASSERT_EQ(f->body.size(), sizeof fr + 12 * 8);
  const auto child = f->as<std::uint64_t>(sizeof fr);
  Result<WireReply> f2 = fork(1, 0, "base", 1);
  ASSERT_TRUE(f2.is_ok() && f2->ok());
  EXPECT_EQ(std::string(f2->as<wire::ForkReply>().source), cid);
  Result<WireReply> f3 = fork(0, b, "", 1024);
  ASSERT_TRUE(f3.is_ok() && f3->ok());
  EXPECT_EQ(f3->as<wire::ForkReply>().n, 1024u);
  EXPECT_EQ(f3->as<wire::ForkReply>().source[0], '\0');

  // A child of a CID starts with the whole context; appending copies its shared last page.
  Result<WireReply> ca = c.append_raw(child, {42});
  ASSERT_TRUE(ca.is_ok() && ca->ok());
  EXPECT_EQ(ca->as<wire::AppendReply>().copied_page, 1u);
  EXPECT_EQ(ca->as<wire::AppendReply>().first_token, 9u);

  // Detach: the branch outlives the connection; the rest dies with it.
  EXPECT_TRUE(c.branch_op(MsgType::kDetach, child)->ok());
  wire::BranchViewRequest cv;
  cv.branch = child;
  EXPECT_EQ(c.call(MsgType::kBranchView, payload(cv))->as<wire::BranchViewReply>().owner, 0u);
  EXPECT_TRUE(c.branch_op(MsgType::kBranchFree, p)->ok());
  EXPECT_EQ(c.branch_op(MsgType::kBranchFree, p)->code(), Code::kNotFound);
  EXPECT_EQ(d.pool_json()["branches"], 1 + 12 + 1 + 1024);  // b, children, detached child
  (void)hello;
  c.close();
  ASSERT_TRUE(wait_until([&] { return d.pool_json()["branches"] == 1; }));
  httplib::Client h = d.http();
  auto info = h.Get(("/v1/branches/" + std::to_string(child)).c_str());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200);
  EXPECT_EQ(json::parse(info->body)["n_tokens"], 10);
}

// Errors inside well-formed frames: answered with the right code, the connection goes on,
// nothing changes.
TEST_F(ProtocolTest, ErrorsInsideFramesAreAnsweredAndChangeNothing) {
  RawClient c(d.socket()), other(d.socket());
  ASSERT_TRUE(c.connected() && other.connected());
  c.hello();
  other.hello();
  const std::uint64_t mine = c.create_branch({});
  c.append(mine, iota_tokens(0, 6));
  const std::string cid = c.snapshot(mine);
  const std::uint64_t theirs = other.create_branch({});
  other.append(theirs, iota_tokens(0, 3));
  const std::string before = d.pool();
  const std::uint64_t bogus = 0xdeadbeef;

  auto expect_code = [&](Result<WireReply> r, Code code, const char* what) {
    ASSERT_TRUE(r.is_ok()) << what << ": " << r.status().to_string();
    EXPECT_EQ(r->code(), code) << what << ": " << r->text();
    EXPECT_FALSE(r->text().empty()) << what;
    EXPECT_EQ(d.pool(), before) << what;
  };
  expect_code(c.append_raw(bogus, {1}), Code::kNotFound, "append to a bogus branch");
  for (MsgType t : {MsgType::kCommit, MsgType::kBranchFree, MsgType::kDetach}) {
    expect_code(c.branch_op(t, bogus), Code::kNotFound, "bogus branch op");
  }
  wire::TruncateRequest tr;
  tr.branch = mine;
  tr.n_tokens = 7;
  expect_code(c.call(MsgType::kTruncate, payload(tr)), Code::kInvalidArgument, "truncate past end");
  wire::BranchViewRequest vr;
  vr.branch = bogus;
  expect_code(c.call(MsgType::kBranchView, payload(vr)), Code::kNotFound, "view bogus");
  wire::SnapshotRequest sr;
  sr.branch = bogus;
  expect_code(c.call(MsgType::kSnapshot, payload(sr)), Code::kNotFound, "snapshot bogus");
  // A name longer than the limit.
  sr.branch = mine;
  sr.name_bytes = 300;
  wire::PayloadWriter long_name;
  long_name.put(sr).put_text(std::string(300, 'n'));
  expect_code(c.call(MsgType::kSnapshot, long_name), Code::kInvalidArgument, "long name");
  // Fork: n = 0, n = 1025, bad source kind, bogus branch, unknown CID.
  for (std::uint32_t n : {0u, 1025u}) {
    wire::ForkRequest fr;
    fr.n = n;
    wire::SourceWire src;
    src.branch = mine;
    wire::PayloadWriter w;
    w.put(fr).put(src);
    expect_code(c.call(MsgType::kFork, w), Code::kInvalidArgument, "fork n");
  }
  {
    wire::ForkRequest fr;
    fr.n = 2;
    wire::SourceWire src;
    src.kind = 7;
    wire::PayloadWriter w;
    w.put(fr).put(src);
    expect_code(c.call(MsgType::kFork, w), Code::kInvalidArgument, "fork source kind");
    src.kind = 0;
    src.branch = bogus;
    wire::PayloadWriter w2;
    w2.put(fr).put(src);
    expect_code(c.call(MsgType::kFork, w2), Code::kNotFound, "fork bogus branch");
    const std::string unknown = "sha256:" + std::string(64, 'f');
    src.kind = 1;
    src.name_bytes = static_cast<std::uint32_t>(unknown.size());
    wire::PayloadWriter w3;
    w3.put(fr).put(src).put_text(unknown);
    expect_code(c.call(MsgType::kFork, w3), Code::kNotFound, "fork unknown cid");
  }
  // Too many tokens announced.
  wire::AppendRequest big;
  big.branch = mine;
  big.n_tokens = wire::kMaxTokensPerRequest + 1;
  expect_code(c.call(MsgType::kAppend, payload(big)), Code::kInvalidArgument, "token limit");
  // Short and long payloads.
  wire::AppendRequest shortreq;
  shortreq.branch = mine;
  shortreq.n_tokens = 10;
  wire::PayloadWriter sw;
  sw.put(shortreq).put(std::uint32_t{1});
  expect_code(c.call(MsgType::kAppend, sw), Code::kProtocol, "short append");
  wire::PayloadWriter lw;
  lw.put(wire::BranchRequest{mine}).put(std::uint64_t{0});
  expect_code(c.call(MsgType::kCommit, lw), Code::kProtocol, "long commit");
  expect_code(c.call(MsgType::kCommit, std::span<const std::byte>()), Code::kProtocol,
              "empty commit");
  wire::PayloadWriter half;
  half.put(std::uint32_t{1});
  expect_code(c.call(MsgType::kAttach, half), Code::kProtocol, "short attach");
  // Unknown types, a second HELLO.
  for (std::uint16_t t : {0, 3, 39, 99, 65535}) {
    expect_code(c.call(static_cast<MsgType>(t), std::span<const std::byte>()), Code::kUnsupported,
                "unknown type");
  }
  expect_code(c.call(MsgType::kHello, payload(wire::HelloRequest{})), Code::kProtocol,
              "second hello");
  // Binary ops with garbage: too short for their sources, then a bad source kind.
  expect_code(c.call(MsgType::kMerge, std::as_bytes(std::span<const char>("\xff\xfe", 2))),
              Code::kProtocol, "merge garbage");
  {
    msg::Merge bad_kind{source(mine), source(mine)};
    bad_kind.into.head.kind = 9;
    expect_code(c.call(MsgType::kMerge, wire::encode(bad_kind)), Code::kInvalidArgument,
                "merge source kind");
  }
  // Another lease's branch: kConflict for every change, reading is allowed.
  expect_code(c.append_raw(theirs, {1}), Code::kConflict, "append to theirs");
  for (MsgType t : {MsgType::kCommit, MsgType::kBranchFree, MsgType::kDetach}) {
    expect_code(c.branch_op(t, theirs), Code::kConflict, "op on theirs");
  }
  tr.branch = theirs;
  tr.n_tokens = 1;
  expect_code(c.call(MsgType::kTruncate, payload(tr)), Code::kConflict, "truncate theirs");
  sr.branch = theirs;
  sr.name_bytes = 0;
  expect_code(c.call(MsgType::kSnapshot, payload(sr)), Code::kConflict, "snapshot theirs");
  {
    wire::ForkRequest fr;
    fr.n = 1;
    wire::SourceWire src;
    src.branch = theirs;
    wire::PayloadWriter w;
    w.put(fr).put(src);
    expect_code(c.call(MsgType::kFork, w), Code::kConflict, "fork theirs");
  }
  EXPECT_EQ(c.rendered<ipc::Op::kMerge>({source(theirs), source(cid)}).rfind("ERROR 10: ", 0), 0u);
  vr.branch = theirs;
  expect_code(c.call(MsgType::kBranchView, payload(vr)), Code::kOk, "view theirs");
  // Everything still works on this connection.
  EXPECT_EQ(c.append(mine, {5}).size(), 1u);
}

// A view request as raw bytes at the offsets docs/protocol.md gives (3.4): branch at 0,
// with_tokens at 8, wait_mode at 9, reserved at 10..11, wait_pages at 12.
std::vector<std::byte> view_request_bytes(std::uint64_t branch, std::uint8_t with_tokens,
                                          std::uint8_t wait_mode, std::uint32_t wait_pages,
                                          std::uint8_t reserved = 0) {
  std::vector<std::byte> out(16, std::byte{0});
  std::memcpy(out.data(), &branch, 8);
  out[8] = std::byte{with_tokens};
  out[9] = std::byte{wait_mode};
  out[10] = out[11] = std::byte{reserved};
  std::memcpy(out.data() + 12, &wait_pages, 4);
  return out;
}

// The reply's ready_pages, read at its documented offset (36) of the 40-byte head.
std::uint32_t ready_pages_at_36(const WireReply& r) {
  return r.as<std::uint32_t>(36);
}

// 3.4: kBranchView waits for every page (wait_mode 0, what older clients send) or for the
// first wait_pages pages (wait_mode 1), and its reply says how many leading pages are
// readable. Every page of a branch built by appends (or checked out of a resident snapshot)
// is resident: ready_pages == n_pages whatever was waited for. A bad wait_mode is answered
// kInvalidArgument and the connection goes on.
TEST_F(ProtocolTest, ViewWaitsForLeadingPagesAndReportsReadyPages) {
  static_assert(sizeof(wire::BranchViewRequest) == 16);
  static_assert(sizeof(wire::BranchViewReply) == 40);
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  const wire::HelloReply hello = c.hello();
  ASSERT_EQ(hello.minor, wire::kVersionMinor);
  ASSERT_GE(hello.minor, wire::kViewWaitMinor);
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(100, 10));  // 3 pages of 4 tokens, 2 in the last
  const std::string cid = c.snapshot(b, "view-wait");
  ASSERT_FALSE(cid.empty());
  wire::CheckoutRequest co;
  co.name_bytes = static_cast<std::uint32_t>(cid.size());
  wire::PayloadWriter cw;
  cw.put(co).put_text(cid);
  Result<WireReply> checked_out = c.call(MsgType::kCheckout, cw);
  ASSERT_TRUE(checked_out.is_ok() && checked_out->ok());
  const std::uint64_t copy = checked_out->as<wire::CheckoutReply>().branch;

  std::vector<std::uint32_t> expected_pages;
  for (const std::uint64_t branch : {b, copy}) {
    struct Ask {
      std::uint8_t mode;
      std::uint32_t pages;
    };
    for (const Ask ask :
         {Ask{0, 0}, Ask{0, 1}, Ask{1, 0}, Ask{1, 1}, Ask{1, 3}, Ask{1, 4}, Ask{1, 0xffffffffu}}) {
      SCOPED_TRACE("branch " + std::to_string(branch) + " wait_mode " + std::to_string(ask.mode) +
                   " wait_pages " + std::to_string(ask.pages));
      Result<WireReply> v =
          c.call(MsgType::kBranchView, view_request_bytes(branch, 1, ask.mode, ask.pages));
      ASSERT_TRUE(v.is_ok()) << v.status().to_string();
      ASSERT_TRUE(v->ok()) << v->text();
      const auto head = v->as<wire::BranchViewReply>();
      EXPECT_EQ(head.branch, branch);
      EXPECT_EQ(head.n_tokens, 10u);
      ASSERT_EQ(head.n_pages, 3u);
      EXPECT_EQ(head.fill_in_last_page, 2u);
      EXPECT_EQ(head.with_tokens, 1u);
      EXPECT_EQ(head.ready_pages, 3u);
      EXPECT_EQ(ready_pages_at_36(*v), 3u);
      for (std::size_t i = 33; i < 36; ++i) EXPECT_EQ(v->body[i], std::byte{0}) << "reserved " << i;
      ASSERT_EQ(v->body.size(), sizeof head + 3 * 4 + 10 * 4);
      std::vector<std::uint32_t> pages(3);
      for (std::size_t i = 0; i < 3; ++i) pages[i] = v->as<std::uint32_t>(sizeof head + i * 4);
      // The checkout shares the snapshot's pages with the branch it was taken of.
      if (expected_pages.empty()) expected_pages = pages;
      EXPECT_EQ(pages, expected_pages);
      for (std::uint32_t t = 0; t < 10; ++t) {
        EXPECT_EQ(v->as<std::uint32_t>(sizeof head + 12 + t * 4), 100 + t);
      }
    }
  }
  // Through the codec (what libprocessfork sends), without tokens.
  msg::ViewBranch req;
  req.head.branch = b;
  req.head.wait_mode = wire::kViewWaitLeading;
  req.head.wait_pages = 0;
  Result<msg::BranchViewAnswer> a = c.op_call<ipc::Op::kBranchView>(req);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->head.ready_pages, a->head.n_pages);
  EXPECT_EQ(a->pages, expected_pages);
  EXPECT_TRUE(a->tokens.empty());

  // Reserved bytes are not checked (as everywhere in the protocol).
  Result<WireReply> reserved =
      c.call(MsgType::kBranchView, view_request_bytes(b, 0, 1, 2, /*reserved=*/0xa5));
  ASSERT_TRUE(reserved.is_ok()) << reserved.status().to_string();
  ASSERT_TRUE(reserved->ok()) << reserved->text();
  EXPECT_EQ(ready_pages_at_36(*reserved), 3u);

  // A wait_mode other than 0 and 1: kInvalidArgument naming the field, nothing changes, and
  // the connection goes on.
  const std::string before = d.pool();
  for (const std::uint8_t mode : {std::uint8_t{2}, std::uint8_t{255}}) {
    Result<WireReply> bad = c.call(MsgType::kBranchView, view_request_bytes(b, 1, mode, 1));
    ASSERT_TRUE(bad.is_ok()) << bad.status().to_string();
    EXPECT_EQ(bad->code(), Code::kInvalidArgument) << bad->text();
    EXPECT_NE(bad->text().find("wait_mode"), std::string::npos) << bad->text();
    EXPECT_EQ(d.pool(), before);
  }
  // An unknown branch is still kNotFound, whatever the wait.
  Result<WireReply> bogus = c.call(MsgType::kBranchView, view_request_bytes(0xdeadbeef, 0, 1, 0));
  ASSERT_TRUE(bogus.is_ok());
  EXPECT_EQ(bogus->code(), Code::kNotFound) << bogus->text();
  Result<WireReply> after = c.call(MsgType::kBranchView, view_request_bytes(b, 0, 1, 1));
  ASSERT_TRUE(after.is_ok()) << after.status().to_string();
  ASSERT_TRUE(after->ok()) << after->text();
  EXPECT_EQ(after->as<wire::BranchViewReply>().n_pages, 3u);
  EXPECT_EQ(ready_pages_at_36(*after), 3u);
  EXPECT_EQ(c.append(b, {7}).size(), 1u);
  EXPECT_TRUE(c.branch_op(MsgType::kBranchFree, copy)->ok());
}

// A client that negotiated 3.3 sends a view request with zeros where 3.4 put wait_mode and
// wait_pages: the daemon waits for every page and answers the same 40-byte head (a 3.3
// client ignores ready_pages, which it sees as reserved bytes).
TEST_F(ProtocolTest, ViewFromA33ClientWaitsForEveryPage) {
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  wire::HelloRequest req;
  req.minor = 3;
  req.client_pid = static_cast<std::uint32_t>(getpid());
  Result<WireReply> h = c.call(MsgType::kHello, payload(req));
  ASSERT_TRUE(h.is_ok() && h->ok()) << (h.is_ok() ? h->text() : h.status().to_string());
  EXPECT_EQ(h->as<wire::HelloReply>().minor, wire::kVersionMinor);  // the daemon's own
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(0, 9));
  // The 3.3 layout: branch, with_tokens, seven reserved zero bytes.
  struct OldViewRequest {
    std::uint64_t branch;
    std::uint8_t with_tokens;
    std::uint8_t reserved[7];
  } __attribute__((packed)) old{b, 0, {}};
  static_assert(sizeof old == sizeof(wire::BranchViewRequest));
  Result<WireReply> v = c.call(MsgType::kBranchView, raw_bytes(&old, sizeof old));
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  ASSERT_TRUE(v->ok()) << v->text();
  const auto head = v->as<wire::BranchViewReply>();
  EXPECT_EQ(head.n_tokens, 9u);
  EXPECT_EQ(head.n_pages, 3u);
  EXPECT_EQ(head.fill_in_last_page, 1u);
  EXPECT_EQ(head.with_tokens, 0u);
  EXPECT_EQ(ready_pages_at_36(*v), 3u);
  EXPECT_EQ(v->body.size(), sizeof head + 3 * 4);
}

TEST(ProtocolOutOfPagesTest, AppendBeyondCapacityIsOutOfMemoryAndChangesNothing) {
  Daemon d({"--capacity", "2MiB"});  // 4096 pages of 512 bytes
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  c.hello();
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(0, 4 * 4000));
  const std::string before = d.pool();
  Result<WireReply> r = c.append_raw(b, iota_tokens(0, 4 * 100));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->code(), Code::kOutOfMemory) << r->text();
  EXPECT_EQ(d.pool(), before);
  EXPECT_EQ(c.append(b, iota_tokens(0, 4 * 96)).size(), 96u);  // exactly what is left
}

// --- hostile clients: the connection is dropped, nothing leaks, others are unaffected ----

class AbuseTest : public ProtocolTest {
 protected:
  void SetUp() override {
    // A first client maps the pool's first chunk (the pool grows, and never shrinks without
    // gc), so the baseline is the pool as every later client leaves it.
    {
      RawClient warm(d.socket());
      warm.hello();
      warm.append(warm.create_branch({}), iota_tokens(0, 8));
    }
    ASSERT_TRUE(wait_until([&] { return d.pool_json()["used_pages"] == 0; }));
    baseline_pool_ = d.pool();
    ASSERT_EQ(json::parse(baseline_pool_)["chunks"], 1);
    expect_healthy(baseline_pool_);
    baseline_fds_ = d.fd_count();
  }
  void TearDown() override {
    expect_healthy(baseline_pool_);
    EXPECT_TRUE(wait_until([&] { return d.fd_count() <= baseline_fds_; }))
        << d.fd_count() << " fds, was " << baseline_fds_;
  }
  // The daemon answers one error reply with `code` (or nothing), then closes.
  void expect_error_then_eof(RawClient& c, Code code) {
    Result<WireReply> r = c.receive();
    if (r.is_ok()) {
      EXPECT_EQ(r->code(), code) << r->text();
      EXPECT_FALSE(r->text().empty());
    } else {
      ADD_FAILURE() << "no error reply: " << r.status().to_string();
    }
    EXPECT_TRUE(sees_eof(c.fd()));
  }
  std::string baseline_pool_;
  std::size_t baseline_fds_ = 0;
};

TEST_F(AbuseTest, TruncatedHeaderThenClose) {
  RawClient c(d.socket());
  wire::FrameHeader h;
  h.type = 1;
  h.payload_bytes = sizeof(wire::HelloRequest);
  std::vector<std::byte> b = raw_bytes(&h, 10);
  ASSERT_TRUE(send_all(c.fd(), b));
}

TEST_F(AbuseTest, TruncatedPayloadThenClose) {
  RawClient c(d.socket());
  c.hello();
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(0, 9));
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(MsgType::kAppend);
  h.payload_bytes = 1000;
  std::vector<std::byte> bytes = raw_bytes(&h, sizeof h);
  bytes.resize(bytes.size() + 200);
  ASSERT_TRUE(send_all(c.fd(), bytes));
  // Closing mid-request ends the lease: its branch goes (checked in TearDown).
}

TEST_F(AbuseTest, WrongMagic) {
  RawClient c(d.socket());
  wire::FrameHeader h;
  h.magic = 0x47455420;  // "GET " — an HTTP client on the wrong socket
  h.type = 1;
  ASSERT_TRUE(send_all(c.fd(), raw_bytes(&h, sizeof h)));
  expect_error_then_eof(c, Code::kProtocol);
}

TEST_F(AbuseTest, WrongMagicAfterHello) {
  RawClient c(d.socket());
  c.hello();
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(0, 5));
  std::vector<std::byte> junk(64, std::byte{0x5a});
  ASSERT_TRUE(send_all(c.fd(), junk));
  expect_error_then_eof(c, Code::kProtocol);
}

TEST_F(AbuseTest, WrongVersion) {
  RawClient c(d.socket());
  wire::HelloRequest req;
  req.major = wire::kVersionMajor + 1;
  Result<WireReply> r = c.call(MsgType::kHello, payload(req));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->code(), Code::kUnsupported);
  EXPECT_NE(r->text().find("not supported"), std::string::npos) << r->text();
  EXPECT_TRUE(sees_eof(c.fd()));
}

TEST_F(AbuseTest, ShortHello) {
  RawClient c(d.socket());
  wire::PayloadWriter w;
  w.put(std::uint16_t{1});
  Result<WireReply> r = c.call(MsgType::kHello, w);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->code(), Code::kProtocol);
  EXPECT_TRUE(sees_eof(c.fd()));
}

TEST_F(AbuseTest, FirstFrameNotHello) {
  RawClient c(d.socket());
  Result<WireReply> r = c.call(MsgType::kBranchCreate, payload(wire::BranchCreateRequest{}));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->code(), Code::kProtocol);
  EXPECT_NE(r->text().find("HELLO"), std::string::npos);
  EXPECT_TRUE(sees_eof(c.fd()));
}

TEST_F(AbuseTest, PayloadOverTheLimit) {
  RawClient c(d.socket());
  c.hello();
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(MsgType::kAppend);
  h.request_id = 77;
  h.payload_bytes = wire::kMaxPayload + 1;
  ASSERT_TRUE(send_all(c.fd(), raw_bytes(&h, sizeof h)));
  Result<WireReply> r = c.receive();
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->header.request_id, 77u);
  EXPECT_EQ(r->code(), Code::kProtocol);
  EXPECT_TRUE(sees_eof(c.fd()));
}

TEST_F(AbuseTest, ClientSendsAnFd) {
  RawClient c(d.socket());
  c.hello();
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(0, 5));
  UniqueFd pipe_r, pipe_w;
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pipe_r.reset(p[0]);
  pipe_w.reset(p[1]);
  const int fds[] = {pipe_r.get()};
  ASSERT_TRUE(c.send(MsgType::kCommit, payload(wire::BranchRequest{b}).bytes(), fds).is_ok());
  expect_error_then_eof(c, Code::kProtocol);
  // The daemon closed its copy: with ours closed too, the pipe's write end sees no reader.
  pipe_r.reset();
  EXPECT_TRUE(wait_until([&] {
    pollfd pfd{pipe_w.get(), POLLOUT, 0};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR);
  }));
}

TEST_F(AbuseTest, FdFloodWithHello) {
  RawClient c(d.socket());
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 253; ++i) {
    owned.emplace_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
    fds.push_back(owned.back().get());
  }
  ASSERT_TRUE(c.send(MsgType::kHello, payload(wire::HelloRequest{}).bytes(), fds).is_ok());
  expect_error_then_eof(c, Code::kProtocol);
}

// Descriptors trickled with the header's first bytes are refused and closed at once: the
// daemon never holds them while waiting for the rest of the frame (which never comes).
TEST_F(AbuseTest, FdsTrickledWithAPartialHeaderAreClosedAtOnce) {
  RawClient c(d.socket());
  c.hello();
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) {
    owned.emplace_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
    fds.push_back(owned.back().get());
  }
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(MsgType::kCommit);
  h.payload_bytes = sizeof(wire::BranchRequest);
  const auto* bytes = reinterpret_cast<const std::byte*>(&h);
  // One header byte with 200 descriptors; the other 15 bytes are never sent.
  ASSERT_TRUE(ipc::send_with_fds(c.fd(), std::span(bytes, 1), fds).is_ok());
  expect_error_then_eof(c, Code::kProtocol);
  owned.clear();  // the daemon's copies are gone too: TearDown checks its fd count
}

TEST_F(AbuseTest, FdsRidingOnThePayload) {
  RawClient c(d.socket());
  c.hello();
  // The header alone, then the payload carrying an fd.
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(MsgType::kCommit);
  h.payload_bytes = sizeof(wire::BranchRequest);
  ASSERT_TRUE(send_all(c.fd(), raw_bytes(&h, sizeof h)));
  UniqueFd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int fds[] = {devnull.get()};
  wire::BranchRequest br;
  ASSERT_TRUE(ipc::send_with_fds(c.fd(), raw_bytes(&br, sizeof br), fds).is_ok());
  expect_error_then_eof(c, Code::kProtocol);
}

// A frame must arrive whole within the frame timeout from its first byte: a client that
// trickles a 24-byte frame one byte every 150 ms (each gap well under the timeout) is
// dropped long before its last byte, and its request never runs.
TEST(FrameDeadlineTest, ATrickledFrameIsDroppedAtTheDeadline) {
  Daemon d({"--frame-timeout-ms", "500"});
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  c.hello();
  const std::uint64_t b = c.create_branch({});
  ASSERT_TRUE(c.branch_op(MsgType::kDetach, b)->ok());  // outlives this connection
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(MsgType::kBranchFree);
  h.request_id = 77;
  h.payload_bytes = sizeof(wire::BranchRequest);
  std::vector<std::byte> frame = raw_bytes(&h, sizeof h);
  const wire::BranchRequest br{b};
  const std::vector<std::byte> body = raw_bytes(&br, sizeof br);
  frame.insert(frame.end(), body.begin(), body.end());
  std::size_t sent = 0;
  for (; sent < frame.size(); ++sent) {
    if (send(c.fd(), &frame[sent], 1, MSG_NOSIGNAL) != 1) break;  // dropped: EPIPE
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // the client's pace
  }
  EXPECT_TRUE(sees_eof(c.fd()));
  EXPECT_LT(sent, frame.size()) << "the whole trickled frame was accepted";
  // The detached branch is still there: the trickled free never ran.
  httplib::Client http = d.http();
  auto info = http.Get(("/v1/branches/" + std::to_string(b)).c_str());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200) << info->body;
}

// The daemon reads a frame's payload as it arrives: 16 clients each announcing a 16 MiB
// frame and sending one byte of it cost the daemon a few MiB, not 256 (no buffer is
// allocated, let alone zero-filled, ahead of the bytes).
TEST_F(AbuseTest, AnnouncedFramesCostNothingUntilTheirBytesArrive) {
  auto rss_kib = [&] {
    std::istringstream status(read_file("/proc/" + std::to_string(d.pid()) + "/status"));
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    }
    return 0ull;
  };
  const unsigned long long before = rss_kib();
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(std::make_unique<RawClient>(d.socket()));
    RawClient& c = *clients.back();
    c.hello();
    wire::FrameHeader h;
    h.type = static_cast<std::uint16_t>(MsgType::kBranchCreate);
    h.payload_bytes = wire::kMaxPayload;
    std::vector<std::byte> bytes = raw_bytes(&h, sizeof h);
    bytes.push_back(std::byte{0});
    ASSERT_TRUE(send_all(c.fd(), bytes));
  }
  // Every announced header and its first byte were read by the daemon: nothing of ours is
  // left queued (SIOCOUTQ counts what the peer has not consumed yet).
  for (auto& c : clients) {
    ASSERT_TRUE(wait_until([&] {
      int queued = -1;
      return ioctl(c->fd(), SIOCOUTQ, &queued) == 0 && queued == 0;
    }));
  }
  const unsigned long long after = rss_kib();
  EXPECT_LT(after, before + 32 * 1024)
      << "daemon RSS grew from " << before << " KiB to " << after << " KiB";
  clients.clear();
}

TEST_F(AbuseTest, DisconnectMidRequestWithManyBranches) {
  for (int round = 0; round < 3; ++round) {
    RawClient c(d.socket());
    c.hello();
    for (int i = 0; i < 20; ++i) {
      const std::uint64_t b = c.create_branch({});
      c.append(b, iota_tokens(static_cast<std::uint32_t>(i * 100), 17));
      if (i % 3 == 0) {
        // Children of the lease too (sealing the parent's pages).
        wire::ForkRequest fr;
        fr.n = 2;
        wire::SourceWire src;
        src.branch = b;
        wire::PayloadWriter w;
        w.put(fr).put(src);
        EXPECT_TRUE(c.call(MsgType::kFork, w)->ok());
      }
    }
    // Send a whole append and leave without reading the reply.
    const std::uint64_t last = c.create_branch({});
    wire::AppendRequest req;
    req.branch = last;
    req.n_tokens = 4000;
    wire::PayloadWriter w;
    w.put(req).put_array(std::span<const std::uint32_t>(iota_tokens(0, 4000)));
    ASSERT_TRUE(c.send(MsgType::kAppend, w.bytes()).is_ok());
  }
}

TEST_F(AbuseTest, SilentClientsDoNotBlockOthers) {
  RawClient silent(d.socket());
  RawClient half(d.socket());
  wire::FrameHeader h;
  ASSERT_TRUE(send_all(half.fd(), raw_bytes(&h, 4)));
  expect_healthy(baseline_pool_);
}

TEST(ConnectionLimitTest, ConnectionsOverTheCapAreClosed) {
  Daemon d({"--max-clients", "2"});
  RawClient a(d.socket()), b(d.socket());
  a.hello();
  b.hello();
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());  // the kernel accepts; the daemon closes it at once
  EXPECT_TRUE(sees_eof(c.fd()));
  a.close();
  ASSERT_TRUE(wait_until([&] {
    RawClient e(d.socket());
    wire::PayloadWriter w;
    w.put(wire::HelloRequest{});
    if (!e.send(MsgType::kHello, w.bytes()).is_ok()) return false;
    Result<WireReply> r = e.receive();
    return r.is_ok() && r->ok();
  }));
  httplib::Client h = d.http();
  auto m = h.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("processfork_connections_refused_total{reason=\"limit\"} "),
            std::string::npos);
  EXPECT_EQ(m->body.find("processfork_connections_refused_total{reason=\"limit\"} 0\n"),
            std::string::npos);
}

}  // namespace
}  // namespace pf::testing
