// HttpGuard (ipc/http_guard.h) in process over real loopback TCP sockets, for what a daemon
// test cannot make happen on cue: every connection busy inside a handler. The request runner
// here is the test's own (the guard runs whatever httplib would), and it blocks until told.
#include "ipc/http_guard.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "tests/support/tcp.h"

namespace pf::ipc {
namespace {

UniqueFd connect_to(int port) {
  UniqueFd fd = testing::connect_loopback(port);
  timeval tv{10, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Everything the peer sends until it closes (or 10 s pass).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

// With the cap reached and its only connection busy in a handler, a new connection is
// answered 503 (JSON) and closed; the busy one is not evicted and finishes its answer.
TEST(HttpGuardTest, RefusesWith503WhenEveryConnectionIsBusy) {
  HttpGuardOptions options;
  options.request_timeout = std::chrono::seconds(60);
  options.max_connections = 1;
  options.max_connections_per_peer = 1;
  HttpGuard guard(options);
  int port = 0;
  UniqueFd listener = testing::listen_loopback(&port);
  ASSERT_TRUE(listener.valid());

  std::promise<void> busy, release;
  std::shared_future<void> released = release.get_future().share();
  // The handler: reads the request (one byte), marks it whole, blocks until released,
  // answers and ends the connection.
  const HttpGuard::RequestRunner runner = [&](httplib::Stream& strm, bool, bool& closed,
                                              const std::function<void(httplib::Request&)>& setup) {
    char c;
    if (strm.read(&c, 1) != 1) return false;
    httplib::Request req;
    setup(req);  // no body: the request is whole, the connection busy
    busy.set_value();
    released.wait();
    const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    strm.write(answer.data(), answer.size());
    closed = true;
    return true;
  };
  std::vector<std::thread> served;
  std::thread acceptor([&] {
    for (int i = 0; i < 2; ++i) {
      const int fd = accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      ASSERT_GE(fd, 0);
      served.emplace_back([&, fd] { guard.serve(fd, runner, /*refuse_now=*/false); });
    }
  });

  UniqueFd a = connect_to(port);
  ASSERT_EQ(send(a.get(), "x", 1, MSG_NOSIGNAL), 1);
  busy.get_future().wait();
  UniqueFd b = connect_to(port);
  const std::string refusal = read_all(b.get());
  EXPECT_EQ(refusal.rfind("HTTP/1.1 503 ", 0), 0u) << refusal;
  EXPECT_NE(refusal.find(R"({"error":{"code":"unavailable")"), std::string::npos) << refusal;
  EXPECT_EQ(guard.counters().refused, 1u);
  EXPECT_EQ(guard.counters().evicted, 0u);

  release.set_value();
  EXPECT_EQ(read_all(a.get()), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  acceptor.join();
  for (std::thread& t : served) t.join();
  EXPECT_EQ(guard.counters().open, 0u);
}

}  // namespace
}  // namespace pf::ipc
