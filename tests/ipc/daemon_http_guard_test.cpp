// The HTTP port's hardening (DESIGN §8) through a real daemon and raw TCP sockets: bodies are
// bounded however framed, ambiguous framing is refused, Range never slices an answer, the
// bearer token covers the whole header, deep JSON is refused, slow and idle connections
// cannot starve the port (deadlines, caps, eviction), and auth is on by default.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/ipc/daemon_harness.h"
#include "tests/support/tcp.h"

namespace pf::testing {
namespace {

using Clock = std::chrono::steady_clock;

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

struct RawResponse {
  int status = 0;  // 0: none (closed or timed out first)
  std::string head, body;
  json j;  // the body parsed (null unless JSON)
};

// Reads one HTTP response (head, then a Content-Length body) within `timeout`.
RawResponse read_response(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  RawResponse r;
  std::string data;
  const Clock::time_point deadline = Clock::now() + timeout;
  std::size_t head_end = std::string::npos, need = 0;
  for (;;) {
    if (head_end == std::string::npos) {
      head_end = data.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        r.head = data.substr(0, head_end + 2);
        std::sscanf(r.head.c_str(), "HTTP/1.%*d %d", &r.status);
        const std::size_t cl = r.head.find("Content-Length: ");
        need = cl == std::string::npos ? 0 : std::stoul(r.head.substr(cl + 16));
      }
    }
    if (head_end != std::string::npos && data.size() >= head_end + 4 + need) {
      r.body = data.substr(head_end + 4, need);
      r.j = json::parse(r.body, nullptr, false);
      return r;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[65536];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  r.status = 0;
  return r;
}

// Sends `request` on a fresh connection and reads the answer.
RawResponse exchange(int port, const std::string& request) {
  UniqueFd fd = connect_loopback(port);
  EXPECT_TRUE(fd.valid());
  EXPECT_TRUE(send_all(fd.get(), request));
  return read_response(fd.get());
}

// Whether the daemon has closed `fd` (EOF or reset) right now, without waiting.
bool closed_now(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

std::string bearer(const Daemon& d) {
  return "Authorization: Bearer " + d.token() + "\r\n";
}

// A VmRSS/VmHWM line of /proc/PID/status in KiB.
long status_kib(pid_t pid, const std::string& key) {
  const std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
  const std::size_t at = status.find("\n" + key + ":");
  return at == std::string::npos ? -1 : std::stol(status.substr(at + key.size() + 2));
}

std::size_t branch_count(const Daemon& d) {
  return d.pool_json().value("branches", std::size_t{0});
}

// A keep-alive connection from its own peer address (127.0.0.9) that reads
// processfork_http_connections: it adds exactly one connection to the gauge, itself.
class GaugeProbe {
 public:
  explicit GaugeProbe(int port) : fd_(connect_loopback(port, "127.0.0.9")) {}
  long connections() { return value("processfork_http_connections "); }
  // The value of the /metrics line that starts with `series` (name, labels, space); -1 if none.
  long value(const std::string& series) {
    if (!send_all(fd_.get(), "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")) return -1;
    const RawResponse r = read_response(fd_.get());
    const std::size_t at = r.body.find("\n" + series);
    return at == std::string::npos ? -1 : std::stol(r.body.substr(at + 1 + series.size()));
  }
  // Waits until the daemon holds `n` connections besides this one.
  bool wait_for(long n) {
    return wait_until([&] { return connections() == n + 1; });
  }

 private:
  UniqueFd fd_;
};

// --- bodies and framing -------------------------------------------------------------------

// A 256 MiB chunked body is cut at the 1 MiB limit: 413, and the daemon's peak RSS does not
// grow by anything like the body (the old daemon buffered it all and answered 201).
TEST(HttpBodyTest, ChunkedBodyOverTheLimitIs413AndNotBuffered) {
  Daemon d;
  const std::size_t branches = branch_count(d);
  const long hwm_before = status_kib(d.pid(), "VmHWM");
  const long rss_before = status_kib(d.pid(), "VmRSS");
  UniqueFd fd = connect_loopback(d.port());
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(send_all(fd.get(), "POST /v1/branches HTTP/1.1\r\nHost: t\r\n" + bearer(d) +
                                     "Content-Type: application/json\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n"));
  constexpr std::size_t kBody = 256u << 20, kChunk = 64u << 10;
  std::atomic<bool> answered{false};
  std::atomic<std::size_t> sent{0};
  std::thread sender([&] {
    const std::string chunk = "10000\r\n" + std::string(kChunk, ' ') + "\r\n";
    while (!answered && sent < kBody) {
      if (!send_all(fd.get(), chunk)) return;  // the daemon closed
      sent += kChunk;
    }
    if (sent >= kBody) send_all(fd.get(), "2\r\n{}\r\n0\r\n\r\n");
  });
  RawResponse r = read_response(fd.get(), std::chrono::seconds(60));
  answered = true;
  ::shutdown(fd.get(), SHUT_WR);  // unblocks a sender stuck in send()
  sender.join();
  EXPECT_EQ(r.status, 413) << r.head << r.body;
  EXPECT_EQ(r.j["error"]["code"], "payload_too_large") << r.body;
  EXPECT_NE(r.head.find("Connection: close"), std::string::npos) << r.head;
  const long hwm_after = status_kib(d.pid(), "VmHWM");
  const long rss_after = status_kib(d.pid(), "VmRSS");
  std::printf(
      "[ measured ] chunked 256 MiB POST: %zu MiB sent before the answer; daemon VmRSS "
      "%ld -> %ld KiB, VmHWM %ld -> %ld KiB\n",
      sent.load() >> 20, rss_before, rss_after, hwm_before, hwm_after);
  EXPECT_LT(hwm_after - hwm_before, 32 * 1024) << "the daemon buffered the body";
  EXPECT_LT(sent.load(), kBody);
  EXPECT_EQ(branch_count(d), branches);
}

// Every body is bounded, whatever the method or route: a chunked DELETE, a chunked POST to an
// unknown path, and a Content-Length over the limit (answered before the body is sent).
TEST(HttpBodyTest, EveryBodyIsBounded) {
  Daemon d;
  // 2 MiB of spaces in one chunk (0x200000 bytes).
  const std::string chunked_big = "200000\r\n" + std::string(2u << 20, ' ') + "\r\n0\r\n\r\n";
  struct Case {
    std::string target;
    int status;
  };
  for (const Case& c : {Case{"POST /v1/no-such-route", 404}, Case{"PUT /v1/refs/main", 413},
                        Case{"POST /processfork/fork", 413}, Case{"DELETE /v1/branches/1", 400}}) {
    SCOPED_TRACE(c.target);
    UniqueFd fd = connect_loopback(d.port());
    ASSERT_TRUE(send_all(fd.get(), c.target + " HTTP/1.1\r\nHost: t\r\n" + bearer(d) +
                                       "Transfer-Encoding: chunked\r\n\r\n"));
    send_all(fd.get(), chunked_big);  // may fail once the daemon answered and closed
    RawResponse r = read_response(fd.get());
    EXPECT_EQ(r.status, c.status) << r.body;
    EXPECT_TRUE(sees_eof(fd.get()));
  }
  // Declared too large: answered at once, without waiting for the body.
  UniqueFd fd = connect_loopback(d.port());
  ASSERT_TRUE(send_all(fd.get(), "POST /v1/branches HTTP/1.1\r\nHost: t\r\n" + bearer(d) +
                                     "Content-Length: 268435456\r\n\r\n{"));
  RawResponse r = read_response(fd.get());
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_EQ(r.j["error"]["code"], "payload_too_large");
}

// Content-Length must be one decimal number; two lengths, a length with chunked, another
// transfer coding or a body on GET are refused (400) and end the connection.
TEST(HttpBodyTest, AmbiguousFramingIs400AndChangesNothing) {
  Daemon d;
  const std::size_t branches = branch_count(d);
  const std::string post = "POST /v1/branches HTTP/1.1\r\nHost: t\r\n" + bearer(d);
  const std::vector<std::string> requests = {
      post + "Content-Length: abc\r\n\r\n{}",
      post + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
      post + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{} ",
      post + "Content-Length: 2, 2\r\n\r\n{}",
      post + "Content-Length: -2\r\n\r\n{}",
      post + "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      post + "Transfer-Encoding: gzip\r\n\r\n{}",
      post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "GET /v1/pool HTTP/1.1\r\nHost: t\r\n" + bearer(d) + "Content-Length: 5\r\n\r\nGET /",
  };
  for (const std::string& request : requests) {
    SCOPED_TRACE(request.substr(0, 200));
    UniqueFd fd = connect_loopback(d.port());
    ASSERT_TRUE(send_all(fd.get(), request));
    RawResponse r = read_response(fd.get());
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.j["error"]["code"], "invalid_argument") << r.body;
    EXPECT_TRUE(sees_eof(fd.get())) << "the connection stays open after ambiguous framing";
  }
  EXPECT_EQ(branch_count(d), branches);
  // A well-framed chunked body is served.
  RawResponse ok =
      exchange(d.port(), post + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
  EXPECT_EQ(ok.status, 201) << ok.body;
}

// A Range header never slices a JSON answer: the whole answer, 200.
TEST(HttpBodyTest, RangeIsIgnored) {
  Daemon d;
  const std::string whole = d.pool();
  ASSERT_FALSE(whole.empty());
  for (const std::string range : {"bytes=0-3", "bytes=2-", "bytes=0-1,4-5"}) {
    RawResponse r = exchange(d.port(), "GET /v1/pool HTTP/1.1\r\nHost: t\r\n" + bearer(d) +
                                           "Range: " + range + "\r\n\r\n");
    EXPECT_EQ(r.status, 200) << range << ": " << r.head;
    EXPECT_EQ(r.body, whole) << range;
    EXPECT_NE(r.head.find("Accept-Ranges: none"), std::string::npos) << r.head;
  }
}

// "Expect: 100-continue" is answered after the same checks as any request: a refusal (401,
// 413) instead of "100 Continue", so a waiting client never sends a body that would be
// refused; a request that passes gets "100 Continue" and is served.
TEST(HttpBodyTest, ExpectContinueComesAfterTheChecks) {
  Daemon d;
  const std::string post =
      "POST /v1/branches HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
      "Expect: 100-continue\r\n";
  const std::size_t before = branch_count(d);
  {
    UniqueFd fd = connect_loopback(d.port());
    ASSERT_TRUE(send_all(fd.get(), post + "Content-Length: 2\r\n\r\n"));
    RawResponse r = read_response(fd.get());
    EXPECT_EQ(r.status, 401) << r.head;
    EXPECT_TRUE(sees_eof(fd.get()));
  }
  {
    UniqueFd fd = connect_loopback(d.port());
    ASSERT_TRUE(send_all(fd.get(), post + bearer(d) + "Content-Length: 999999999\r\n\r\n"));
    RawResponse r = read_response(fd.get());
    EXPECT_EQ(r.status, 413) << r.head;
    EXPECT_TRUE(sees_eof(fd.get()));
  }
  EXPECT_EQ(branch_count(d), before);
  UniqueFd fd = connect_loopback(d.port());
  ASSERT_TRUE(send_all(fd.get(), post + bearer(d) + "Content-Length: 2\r\n\r\n"));
  RawResponse go_on = read_response(fd.get());
  EXPECT_EQ(go_on.status, 100) << go_on.head;
  ASSERT_TRUE(send_all(fd.get(), "{}"));
  RawResponse created = read_response(fd.get());
  EXPECT_EQ(created.status, 201) << created.head << created.body;
  EXPECT_EQ(branch_count(d), before + 1);
}

// Deep nesting is refused before a tree is built; brackets inside strings do not count.
TEST(HttpBodyTest, DeepJsonIs400) {
  Daemon d;
  httplib::Client cli = d.http();
  const std::string deep =
      "{\"tokens\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto r = cli.Post("/v1/branches", deep, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("deeper than 64"), std::string::npos) << r->body;
  // 64 levels are parsed (and refused for their type, not their depth).
  const std::string ok_depth = "{\"tokens\":" + std::string(63, '[') + std::string(63, ']') + "}";
  r = cli.Post("/v1/branches", ok_depth, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->body.find("deeper"), std::string::npos) << r->body;
  r = cli.Post("/v1/processfork/checkout",
               json{{"cid", std::string(5000, '[') + "\\\"" + std::string(5000, '{')}}.dump(),
               "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;  // parsed: no such ref
  EXPECT_EQ(r->body.find("deeper"), std::string::npos) << r->body;
}

// --- authentication -----------------------------------------------------------------------

// The bearer token must be the whole value of the one Authorization header.
TEST(HttpAuthTest, BearerCoversTheWholeHeader) {
  Daemon d({"--token", "s3cret"});
  const std::string get = "GET /v1/pool HTTP/1.1\r\nHost: t\r\n";
  const std::vector<std::string> refused = {
      "Authorization: Bearer s3cret%00junk\r\n",
      std::string("Authorization: Bearer s3cret") + '\0' + "junk\r\n",
      "Authorization: Bearer s3cret\r\nAuthorization: Bearer wrong\r\n",
      "Authorization: Bearer wrong\r\nAuthorization: Bearer s3cret\r\n",
      "Authorization: Bearer s3cre\r\n",
      "Authorization: Bearer s3cretx\r\n",
  };
  for (const std::string& header : refused) {
    SCOPED_TRACE(header);
    RawResponse r = exchange(d.port(), get + header + "\r\n");
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_EQ(r.j["error"]["code"], "unauthorized");
  }
  EXPECT_EQ(exchange(d.port(), get + "Authorization: Bearer s3cret\r\n\r\n").status, 200);
}

// Auth by default: a random token in "<socket>.token" (0600), every route but health and
// metrics needs it, a request without it changes nothing; the file goes at a clean stop.
TEST(HttpAuthTest, RoutesNeedTheTokenByDefault) {
  Daemon d;
  const std::string token_file = d.socket() + ".token";
  EXPECT_EQ(d.info()["token_file"], token_file);
  struct stat st {};
  ASSERT_EQ(stat(token_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, getuid());
  ASSERT_EQ(d.token().size(), 64u);
  EXPECT_EQ(d.token().find_first_not_of("0123456789abcdef"), std::string::npos);

  httplib::Client good = d.http();
  auto made = good.Post("/v1/branches", "{}", "application/json");
  ASSERT_TRUE(made && made->status == 201);
  const std::uint64_t branch = json::parse(made->body)["branch"];
  const std::string before = d.pool();

  httplib::Client anon = d.anon();
  auto check_401 = [](const httplib::Result& r, const char* what) {
    ASSERT_TRUE(r) << what;
    EXPECT_EQ(r->status, 401) << what << ": " << r->body;
    EXPECT_EQ(json::parse(r->body, nullptr, false)["error"]["code"], "unauthorized") << what;
  };
  check_401(anon.Post("/v1/branches", "{}", "application/json"), "POST /v1/branches");
  check_401(anon.Delete(("/v1/branches/" + std::to_string(branch)).c_str()), "DELETE branch");
  check_401(anon.Post("/v1/gc", "{}", "application/json"), "POST /v1/gc");
  check_401(anon.Put("/v1/refs/x", "{\"cid\":\"y\"}", "application/json"), "PUT ref");
  check_401(anon.Get("/v1/pool"), "GET /v1/pool");
  EXPECT_EQ(d.pool(), before);
  auto still = good.Get(("/v1/branches/" + std::to_string(branch)).c_str());
  ASSERT_TRUE(still);
  EXPECT_EQ(still->status, 200);

  // The probes stay open.
  for (const char* path : {"/v1/health", "/metrics"}) {
    auto r = anon.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 200) << path;
  }
  EXPECT_EQ(d.stop(), 0);
  EXPECT_FALSE(fs::exists(token_file));
}

// --http-auth=off: open on loopback (no token file), refused on any other address and with
// --token.
TEST(HttpAuthTest, AuthOffOnlyOnLoopback) {
  {
    Daemon d({"--http-auth=off"});
    EXPECT_TRUE(d.token().empty());
    EXPECT_FALSE(fs::exists(d.socket() + ".token"));
    auto r = d.anon().Post("/v1/branches", "{}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 201) << r->body;
  }
  TempDir dir;
  const std::vector<std::string> base = {
      "--socket", dir.file("s.sock"), "--device", "host",       "--capacity",
      "4MiB",     "--chunk",          "2MiB",     "--geometry", "tiny"};
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--http", "0.0.0.0:0", "--http-auth", "off"},
        std::vector<std::string>{"--http", "0.0.0.0:0", "--http-auth=off", "--token", "t"},
        std::vector<std::string>{"--http", "127.0.0.1:0", "--http-auth=off", "--token", "t"}}) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    RunResult e = run_to_exit(args, dir.file("err"));
    EXPECT_EQ(e.code, 2) << e.err;
    EXPECT_NE(e.err.find("--http-auth=off"), std::string::npos) << e.err;
  }
}

// --- slow and idle connections ------------------------------------------------------------

// The time GET `path` takes on a fresh connection (anonymous: the probes are open), or -1 ms
// when it got no 200.
std::chrono::milliseconds probe(const Daemon& d, const char* path) {
  httplib::Client cli = d.anon();
  cli.set_read_timeout(5);
  const Clock::time_point t0 = Clock::now();
  auto r = cli.Get(path);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  if (!r || r->status != 200) {
    std::printf("[ probe    ] GET %s: %s\n", path,
                r ? ("status " + std::to_string(r->status) + " " + r->body).c_str()
                  : httplib::to_string(r.error()).c_str());
  }
  return r && r->status == 200 ? took : std::chrono::milliseconds(-1);
}

// 50 idle connections and 50 with half a request: /v1/health and /metrics still answer
// within a second. The old port (8 pool threads, per-read timeouts) took tens of seconds.
// The requirement is 1 s; the assertion allows 2 s because this runs on two cores shared
// with other builds, where scheduling a thread can take hundreds of ms; the figure is printed.
TEST(HttpSlowClientsTest, ProbesAnswerWhileManyConnectionsAreSlowOrIdle) {
  Daemon d;
  GaugeProbe gauge(d.port());  // its own peer address: outside 127.0.0.1's cap
  std::vector<UniqueFd> conns;
  for (int i = 0; i < 100; ++i) {
    conns.push_back(connect_loopback(d.port()));
    ASSERT_TRUE(conns.back().valid());
    if (i % 2 == 1) {
      ASSERT_TRUE(send_all(conns.back().get(), "GET /v1/pool HTTP/1.1\r\nHo"));
    }
  }
  // Each connection registers with the guard on its own thread, so a probe sent now could
  // register before some of the 100 and, being the peer's longest waiting, be the one a later
  // registration evicts (the documented policy). Probe once all 100 have registered: the
  // per-peer cap (64) has then evicted exactly 36.
  ASSERT_TRUE(wait_until([&] {
    return gauge.value("processfork_http_connections_closed_total{reason=\"evicted\"} ") == 36;
  })) << "the guard did not settle at 64 connections of 127.0.0.1";
  for (const char* path : {"/v1/health", "/metrics", "/v1/health"}) {
    const std::chrono::milliseconds took = probe(d, path);
    std::printf("[ measured ] GET %s with 100 slow/idle connections open: %lld ms\n", path,
                static_cast<long long>(took.count()));
    EXPECT_GE(took.count(), 0) << path << " got no answer";
    EXPECT_LE(took.count(), 2000) << path;
  }
  EXPECT_EQ(d.stop(), 0) << "a clean stop with the connections still open";
}

// With caps above 100 every connection stays open (a thread each), and the probes answer.
TEST(HttpSlowClientsTest, HundredConnectionsStayOpenUnderRaisedCaps) {
  Daemon d({"--http-max-connections-per-peer", "200", "--http-max-connections", "300",
            "--http-request-timeout-ms", "120000"});
  std::vector<UniqueFd> conns;
  for (int i = 0; i < 100; ++i) {
    conns.push_back(connect_loopback(d.port()));
    ASSERT_TRUE(conns.back().valid());
  }
  GaugeProbe gauge(d.port());
  EXPECT_TRUE(gauge.wait_for(100)) << "the daemon never held the 100 connections";
  const std::chrono::milliseconds took = probe(d, "/v1/health");
  std::printf("[ measured ] GET /v1/health with 100 idle connections held: %lld ms\n",
              static_cast<long long>(took.count()));
  EXPECT_GE(took.count(), 0);
  EXPECT_LE(took.count(), 2000);
  for (const UniqueFd& c : conns) EXPECT_FALSE(closed_now(c.get()));
}

// A request trickled a byte at a time is cut at the request deadline (300 ms here), however
// often bytes arrive; an idle connection is closed after it too.
TEST(HttpSlowClientsTest, TrickledRequestIsCutAtTheDeadline) {
  Daemon d({"--http-request-timeout-ms", "300"});
  UniqueFd fd = connect_loopback(d.port());
  ASSERT_TRUE(fd.valid());
  const std::string request =
      "GET /v1/health HTTP/1.1\r\nHost: t\r\nX-Slow: " + std::string(200, 'a') + "\r\n\r\n";
  std::size_t sent = 0;
  // One byte every 20 ms: the whole request would take 4.5 s. The pacing is the behaviour
  // under test, not synchronization; the loop ends when the daemon closes.
  while (sent < request.size() && !closed_now(fd.get())) {
    if (send(fd.get(), request.data() + sent, 1, MSG_NOSIGNAL) != 1) break;
    ++sent;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LT(sent, request.size()) << "the whole trickled request was accepted";
  EXPECT_TRUE(sees_eof(fd.get()));
  RawResponse none = read_response(fd.get(), std::chrono::milliseconds(10));
  EXPECT_NE(none.status, 200);

  UniqueFd idle = connect_loopback(d.port());
  ASSERT_TRUE(idle.valid());
  EXPECT_TRUE(sees_eof(idle.get(), 5000)) << "an idle connection was kept past the deadline";

  auto metrics = d.anon().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->body.find("processfork_http_connections_closed_total{reason=\"timeout\"} 0"),
            std::string::npos);
}

// A body that stops arriving is answered 408 at the deadline.
TEST(HttpSlowClientsTest, StalledBodyIs408) {
  Daemon d({"--http-request-timeout-ms", "300"});
  UniqueFd fd = connect_loopback(d.port());
  ASSERT_TRUE(send_all(fd.get(), "POST /v1/branches HTTP/1.1\r\nHost: t\r\n" + bearer(d) +
                                     "Content-Length: 10\r\n\r\n{"));
  RawResponse r = read_response(fd.get());
  EXPECT_EQ(r.status, 408) << r.head << r.body;
  EXPECT_EQ(r.j["error"]["code"], "request_timeout");
  EXPECT_TRUE(sees_eof(fd.get()));
}

// One keep-alive request on `fd`; true when it was answered 200.
bool health_on(int fd) {
  if (!send_all(fd, "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")) return false;
  return read_response(fd).status == 200;
}

// Over the per-peer cap a new connection evicts that peer's longest-waiting connection, not
// another peer's.
TEST(HttpSlowClientsTest, EvictsThePeersLongestWaitingConnection) {
  // A long deadline: no idle connection is closed for that while the test runs.
  Daemon d({"--http-max-connections-per-peer", "2", "--http-request-timeout-ms", "120000"});
  GaugeProbe gauge(d.port());
  // Idle connections, each admitted (waiting) before the next is opened.
  UniqueFd other = connect_loopback(d.port(), "127.0.0.2");
  ASSERT_TRUE(gauge.wait_for(1));
  UniqueFd a1 = connect_loopback(d.port());
  ASSERT_TRUE(gauge.wait_for(2));
  UniqueFd a2 = connect_loopback(d.port());
  ASSERT_TRUE(gauge.wait_for(3));
  // a3 evicts a1 (127.0.0.1's oldest), not `other` (older, but another peer's).
  UniqueFd a3 = connect_loopback(d.port());
  EXPECT_TRUE(sees_eof(a1.get()));
  EXPECT_FALSE(closed_now(other.get()));
  EXPECT_FALSE(closed_now(a2.get()));
  EXPECT_TRUE(health_on(a3.get()));
  EXPECT_TRUE(health_on(other.get()));
  EXPECT_TRUE(health_on(a2.get()));
}

// Over the overall cap a new connection evicts the longest-waiting connection of any peer.
TEST(HttpSlowClientsTest, EvictsTheLongestWaitingConnectionOverall) {
  Daemon d({"--http-max-connections", "3", "--http-request-timeout-ms", "120000"});
  GaugeProbe gauge(d.port());  // one of the 3
  UniqueFd x = connect_loopback(d.port(), "127.0.0.2");
  ASSERT_TRUE(gauge.wait_for(1));
  UniqueFd y = connect_loopback(d.port(), "127.0.0.3");
  ASSERT_TRUE(gauge.wait_for(2));
  UniqueFd z = connect_loopback(d.port(), "127.0.0.4");
  EXPECT_TRUE(sees_eof(x.get()));
  EXPECT_FALSE(closed_now(y.get()));
  EXPECT_TRUE(health_on(z.get()));
  EXPECT_TRUE(health_on(y.get()));
  auto metrics = d.anon().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->body.find("processfork_http_connections_closed_total{reason=\"evicted\"} 0"),
            std::string::npos);
}

}  // namespace
}  // namespace pf::testing
