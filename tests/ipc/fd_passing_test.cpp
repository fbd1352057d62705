// SCM_RIGHTS fd passing over real socketpairs, including hostile peers.
#include "ipc/fd_passing.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <thread>

#include "tests/support/process_resources.h"

namespace pf::ipc {
namespace {

struct Pair {
  UniqueFd a, b;
  explicit Pair(int type = SOCK_STREAM) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds), 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
};

UniqueFd temp_file(const char* content) {
  char path[] = "/tmp/pf-fdpass-XXXXXX";
  UniqueFd fd(mkstemp(path));
  unlink(path);
  EXPECT_EQ(write(fd.get(), content, std::strlen(content)),
            static_cast<ssize_t>(std::strlen(content)));
  return fd;
}

bool same_file(int x, int y) {
  struct stat sx {
  }, sy{};
  return fstat(x, &sx) == 0 && fstat(y, &sy) == 0 && sx.st_ino == sy.st_ino &&
         sx.st_dev == sy.st_dev;
}

class FdPassing : public ::testing::TestWithParam<int> {};

TEST_P(FdPassing, FdsArriveWithThePayloadAndAreCloseOnExec) {
  Pair p(GetParam());
  UniqueFd f1 = temp_file("one"), f2 = temp_file("two");
  const std::array<int, 2> out = {f1.get(), f2.get()};
  const char msg[] = "attach-reply";
  ASSERT_TRUE(send_with_fds(p.a.get(), std::as_bytes(std::span(msg)), out).is_ok());

  char got[sizeof msg] = {};
  std::vector<UniqueFd> fds;
  const Status s = recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 4, &fds);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_STREQ(got, msg);
  ASSERT_EQ(fds.size(), 2u);
  EXPECT_TRUE(same_file(fds[0].get(), f1.get()));
  EXPECT_TRUE(same_file(fds[1].get(), f2.get()));
  EXPECT_NE(fds[0].get(), f1.get()) << "the receiver gets its own descriptors";
  EXPECT_TRUE(fcntl(fds[0].get(), F_GETFD) & FD_CLOEXEC);
}

TEST_P(FdPassing, TooManyFdsIsAProtocolErrorAndLeaksNone) {
  Pair p(GetParam());
  UniqueFd f = temp_file("x");
  const std::array<int, 5> out = {f.get(), f.get(), f.get(), f.get(), f.get()};
  const char msg[] = "m";
  ASSERT_TRUE(send_with_fds(p.a.get(), std::as_bytes(std::span(msg)), out).is_ok());
  const testing::ProcessResources before;
  char got[sizeof msg];
  std::vector<UniqueFd> fds;
  const Status s = recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 2, &fds);
  EXPECT_EQ(s.code(), Code::kProtocol) << s.to_string();
  EXPECT_TRUE(fds.empty());
  EXPECT_EQ(testing::ProcessResources{}.fds, before.fds) << "received fds must be closed";
}

TEST_P(FdPassing, PeerClosingEarlyIsUnavailable) {
  Pair p(GetParam());
  const char partial[] = "abc";
  ASSERT_TRUE(send_with_fds(p.a.get(), std::as_bytes(std::span(partial, 3)), {}).is_ok());
  p.a.reset();
  char got[16];
  std::vector<UniqueFd> fds;
  EXPECT_EQ(recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 0, &fds).code(),
            Code::kUnavailable);
}

INSTANTIATE_TEST_SUITE_P(SocketTypes, FdPassing, ::testing::Values(SOCK_STREAM, SOCK_SEQPACKET),
                         [](const auto& info) {
                           return std::string(info.param == SOCK_STREAM ? "stream" : "seqpacket");
                         });

TEST(FdPassingStream, PayloadSplitAcrossWritesIsReassembled) {
  Pair p;
  UniqueFd f = temp_file("y");
  std::vector<char> big(1 << 20, 'z');  // larger than the socket buffer: several reads
  std::thread sender([&] {
    const std::array<int, 1> out = {f.get()};
    EXPECT_TRUE(send_with_fds(p.a.get(), std::as_bytes(std::span(big)), out).is_ok());
  });
  std::vector<char> got(big.size());
  std::vector<UniqueFd> fds;
  const Status s = recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 1, &fds);
  sender.join();
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(got, big);
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_TRUE(same_file(fds[0].get(), f.get()));
}

TEST(FdPassingStream, ForeignControlMessageIsAProtocolError) {
  Pair p;
  int on = 1;
  ASSERT_EQ(setsockopt(p.b.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
  const char msg[] = "creds";
  ASSERT_TRUE(send_with_fds(p.a.get(), std::as_bytes(std::span(msg)), {}).is_ok());
  char got[sizeof msg];
  std::vector<UniqueFd> fds;
  EXPECT_EQ(recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 1, &fds).code(),
            Code::kProtocol);
}

TEST(FdPassingStream, ReceiveTimeoutIsUnavailable) {
  Pair p;
  timeval tv{0, 20000};
  ASSERT_EQ(setsockopt(p.b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  char got[4];
  std::vector<UniqueFd> fds;
  const Status s = recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 0, &fds);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_NE(s.message().find("timed out"), std::string::npos);
}

TEST(FdPassingStream, BadArgumentsAreRejected) {
  Pair p;
  std::vector<int> too_many(kMaxFdsPerMessage + 1, 0);
  const char msg[] = "x";
  EXPECT_EQ(send_with_fds(p.a.get(), std::as_bytes(std::span(msg)), too_many).code(),
            Code::kInvalidArgument);
  const std::array<int, 1> one = {0};
  EXPECT_EQ(send_with_fds(p.a.get(), {}, one).code(), Code::kInvalidArgument);
  char got[1];
  EXPECT_EQ(recv_with_fds(p.b.get(), std::as_writable_bytes(std::span(got)), 0, nullptr).code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace pf::ipc
