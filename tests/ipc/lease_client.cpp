// A raw protocol client the lease tests run as a child process and then SIGKILL.
//
//   pf_lease_client SOCKET hold N TOKENS   N branches of TOKENS tokens each (committed)
//   pf_lease_client SOCKET stream          appends to a branch in a tight loop (forks with a
//                                          copy-on-write append, truncates mixed in), killed
//                                          somewhere mid-stream
//   pf_lease_client SOCKET partial         holds a branch, then sends half of an append
//   pf_lease_client SOCKET keep            a detached branch and a snapshotted one
//   pf_lease_client SOCKET keyed N         keyed pages (protocol 1.2): N allocated pages,
//                                          the first published under a key and held again
//                                          through a key lookup; prints the page ids
//
// Prints "ready <details>" on stdout once its state is in place, then waits to be killed.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ipc/frame_io.h"
#include "ipc/payload.h"
#include "ipc/wire.h"

namespace {

using namespace pf;
using wire::MsgType;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "lease_client: %s\n", what.c_str());
  std::exit(3);
}

int g_fd = -1;
std::uint32_t g_id = 0;

std::vector<std::byte> call(MsgType type, const wire::PayloadWriter& w) {
  if (Status s = ipc::send_frame(g_fd, type, 0, ++g_id, w.bytes()); !s.is_ok()) {
    die(s.to_string());
  }
  ipc::Frame f;
  if (Status s = ipc::recv_frame(g_fd, &f, wire::kMaxPayload, 253); !s.is_ok()) {
    die(s.to_string());
  }
  wire::ReplyHeader rh;
  std::memcpy(&rh, f.payload.data(), sizeof rh);
  if (rh.code != 0) {
    die(std::string(reinterpret_cast<const char*>(f.payload.data()) + sizeof rh, rh.message_bytes));
  }
  return std::vector<std::byte>(f.payload.begin() + sizeof rh, f.payload.end());
}

template <typename T>
T first(const std::vector<std::byte>& body) {
  T v{};
  std::memcpy(&v, body.data(), sizeof v);
  return v;
}

std::uint64_t create() {
  wire::BranchCreateRequest req;
  wire::PayloadWriter w;
  w.put(req);
  return first<wire::BranchCreateReply>(call(MsgType::kBranchCreate, w)).branch;
}

void append(std::uint64_t branch, std::uint32_t first_token, std::uint32_t n) {
  std::vector<std::uint32_t> tokens(n);
  for (std::uint32_t i = 0; i < n; ++i) tokens[i] = first_token + i;
  wire::AppendRequest req;
  req.branch = branch;
  req.n_tokens = n;
  wire::PayloadWriter w;
  w.put(req).put_array(std::span<const std::uint32_t>(tokens));
  call(MsgType::kAppend, w);
}

void branch_op(MsgType type, std::uint64_t branch) {
  wire::BranchRequest req;
  req.branch = branch;
  wire::PayloadWriter w;
  w.put(req);
  call(type, w);
}

[[noreturn]] void ready_and_wait(const std::string& details) {
  std::printf("ready %s\n", details.c_str());
  std::fflush(stdout);
  for (;;) pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) die("usage: pf_lease_client SOCKET MODE [ARGS]");
  g_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  if (connect(g_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("connect");
  wire::HelloRequest hello;
  hello.client_pid = static_cast<std::uint32_t>(getpid());
  wire::PayloadWriter hw;
  hw.put(hello);
  call(MsgType::kHello, hw);

  const std::string mode = argv[2];
  if (mode == "hold" && argc == 5) {
    const int n = std::atoi(argv[3]);
    const auto tokens = static_cast<std::uint32_t>(std::atoi(argv[4]));
    std::string ids;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t b = create();
      append(b, 1000u * static_cast<std::uint32_t>(i), tokens);
      branch_op(MsgType::kCommit, b);
      append(b, 7, 3);  // an exclusive partial page on top of the committed ones
      ids += std::to_string(b) + " ";
    }
    ready_and_wait(ids);
  }
  if (mode == "stream") {
    const std::uint64_t b = create();
    append(b, 0, 5);
    std::printf("ready %llu\n", static_cast<unsigned long long>(b));
    std::fflush(stdout);
    std::uint32_t length = 5;
    for (std::uint32_t round = 0;; ++round) {
      append(b, round, 5);  // 5 per round: forks happen mid-page, so children copy
      length += 5;
      if (round % 16 == 0) {
        // A fork (seals the tail) then an append that copies the shared last page.
        wire::ForkRequest req;
        req.n = 2;
        wire::SourceWire src;
        src.kind = 0;
        src.branch = b;
        wire::PayloadWriter w;
        w.put(req).put(src);
        const auto body = call(MsgType::kFork, w);
        const auto reply = first<wire::ForkReply>(body);
        std::uint64_t child = 0;
        std::memcpy(&child, body.data() + sizeof reply, sizeof child);
        append(child, 99, 2);
      }
      if (length > 4000) {
        wire::TruncateRequest t;
        t.branch = b;
        t.n_tokens = 3;
        wire::PayloadWriter w;
        w.put(t);
        call(MsgType::kTruncate, w);
        length = 3;
      }
    }
  }
  if (mode == "partial") {
    const std::uint64_t b = create();
    append(b, 0, 9);
    // Half of an append frame: the header promises 16 + 400 bytes, 100 arrive.
    wire::FrameHeader h;
    h.type = static_cast<std::uint16_t>(MsgType::kAppend);
    h.request_id = ++g_id;
    h.payload_bytes = sizeof(wire::AppendRequest) + 400;
    std::vector<std::byte> bytes(sizeof h + 100);
    std::memcpy(bytes.data(), &h, sizeof h);
    wire::AppendRequest req;
    req.branch = b;
    req.n_tokens = 100;
    std::memcpy(bytes.data() + sizeof h, &req, sizeof req);
    if (send(g_fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(bytes.size())) {
      die("send");
    }
    ready_and_wait(std::to_string(b));
  }
  if (mode == "keep") {
    const std::uint64_t detached = create();
    append(detached, 0, 6);
    branch_op(MsgType::kDetach, detached);
    const std::uint64_t snapped = create();
    append(snapped, 500, 10);
    wire::SnapshotRequest req;
    req.branch = snapped;
    wire::PayloadWriter w;
    w.put(req);
    const auto snap = first<wire::SnapshotReply>(call(MsgType::kSnapshot, w));
    const std::uint64_t doomed = create();
    append(doomed, 900, 5);
    ready_and_wait(std::to_string(detached) + " " + snap.cid + " " + std::to_string(doomed));
  }
  if (mode == "keyed" && argc == 4) {
    const auto n = static_cast<std::uint32_t>(std::atoi(argv[3]));
    wire::PagesAllocRequest alloc;
    alloc.n_pages = n;
    wire::PayloadWriter aw;
    aw.put(alloc);
    const auto body = call(MsgType::kPagesAlloc, aw);
    std::vector<std::uint32_t> pages(first<wire::PagesReply>(body).n_pages);
    std::memcpy(pages.data(), body.data() + sizeof(wire::PagesReply), pages.size() * 4);
    std::uint8_t key[wire::kKeyBytes];
    for (std::uint32_t i = 0; i < wire::kKeyBytes; ++i) key[i] = static_cast<std::uint8_t>(i + 1);
    wire::PagesPublishRequest pub;
    pub.n = 1;
    wire::PayloadWriter pw;
    pw.put(pub).put_array(std::span<const std::uint8_t>(key)).put(pages[0]);
    call(MsgType::kPagesPublish, pw);
    wire::PagesLookupKeysRequest look;
    look.n_keys = 1;
    look.hold = 1;
    wire::PayloadWriter lw;
    lw.put(look).put_array(std::span<const std::uint8_t>(key));
    call(MsgType::kPagesLookupKeys, lw);
    std::string ids;
    for (std::uint32_t p : pages) ids += std::to_string(p) + " ";
    ready_and_wait(ids);
  }
  die("unknown mode " + mode);
}
