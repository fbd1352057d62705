// The daemon's life: start-up checks (live socket, stale socket, non-socket path, busy HTTP
// port, non-loopback without a token, bad device), the socket's mode and peer-uid check,
// and clean shutdown on SIGTERM/SIGINT (exit 0, clients see EOF, socket and ready file
// removed).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "tests/ipc/daemon_harness.h"
#include "tests/support/tcp.h"

namespace pf::testing {
namespace {

std::vector<std::string> base_args(const TempDir& dir, const std::string& socket) {
  return {"--socket",     socket,
          "--http",       "off",
          "--device",     "host",
          "--capacity",   "8MiB",
          "--chunk",      "2MiB",
          "--geometry",   "tiny",
          "--ready-file", dir.file("ready.json")};
}

TEST(LifecycleTest, SigtermShutsDownCleanly) {
  Daemon d;
  struct stat st {};
  ASSERT_EQ(stat(d.socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(d.info()["pid"], d.pid());
  EXPECT_EQ(d.info()["socket"], d.socket());
  EXPECT_EQ(d.info()["backend"], "host");
  EXPECT_NE(d.log().find("processfork: backend "), std::string::npos) << d.log();

  RawClient a(d.socket()), b(d.socket());
  a.hello();
  b.hello();
  a.append(a.create_branch({}), iota_tokens(0, 9));
  EXPECT_EQ(d.stop(SIGTERM), 0) << d.log();
  EXPECT_TRUE(sees_eof(a.fd()));
  EXPECT_TRUE(sees_eof(b.fd()));
  EXPECT_FALSE(fs::exists(d.socket()));
  EXPECT_FALSE(fs::exists(d.ready_file()));
  EXPECT_NE(d.log().find("received SIGTERM"), std::string::npos) << d.log();
}

// A signal the instant the daemon says it is ready still shuts everything down at once
// (the HTTP loop is running by then, so stopping it cannot be missed).
TEST(LifecycleTest, SigtermRightAfterReady) {
  for (int i = 0; i < 10; ++i) {
    Daemon d;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(d.stop(SIGTERM), 0) << d.log();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
    EXPECT_FALSE(fs::exists(d.socket()));
  }
}

TEST(LifecycleTest, SigintShutsDownCleanlyWithAClientMidFrame) {
  Daemon d;
  RawClient a(d.socket());
  a.hello();
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(wire::MsgType::kAppend);
  h.payload_bytes = 100;
  ASSERT_EQ(send(a.fd(), &h, sizeof h, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h));
  EXPECT_EQ(d.stop(SIGINT), 0) << d.log();
  EXPECT_TRUE(sees_eof(a.fd()));
  EXPECT_FALSE(fs::exists(d.socket()));
}

TEST(LifecycleTest, RefusesToStartOverALiveDaemon) {
  Daemon a;
  TempDir dir;
  RunResult e = run_to_exit(base_args(dir, a.socket()), dir.file("err"));
  EXPECT_EQ(e.code, 1) << e.err;
  EXPECT_NE(e.err.find("already serving on " + a.socket()), std::string::npos) << e.err;
  EXPECT_FALSE(fs::exists(dir.file("ready.json")));
  // The first daemon is untouched and still serves.
  EXPECT_TRUE(fs::exists(a.socket()));
  RawClient c(a.socket());
  ASSERT_TRUE(c.connected());
  EXPECT_NE(c.hello().lease, 0u);
}

TEST(LifecycleTest, RecoversAStaleSocket) {
  TempDir dir;
  const std::string path = dir.file("stale.sock");
  {
    // A socket file whose daemon is gone: bound, never listened to, closed.
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ASSERT_TRUE(fs::exists(path));
  Child daemon(test_daemon(base_args(dir, path), dir.file("err")));
  ASSERT_TRUE(daemon.wait_for_path(dir.file("ready.json"))) << read_file(dir.file("err"));
  RawClient c(path);
  ASSERT_TRUE(c.connected());
  EXPECT_NE(c.hello().lease, 0u);
  EXPECT_NE(read_file(dir.file("err")).find("removed stale socket"), std::string::npos);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
  EXPECT_FALSE(fs::exists(path));
}

// Started with a low soft open-file limit (prlimit execs the daemon in place), the daemon
// raises it to the hard limit and says so; a client then attaches a pool of more chunks
// than the old soft limit allowed open at once.
TEST(LifecycleTest, RaisesTheOpenFileLimitToTheHardLimit) {
  rlimit ours{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &ours), 0);
  if (ours.rlim_max != RLIM_INFINITY && ours.rlim_max < 512) {
    GTEST_SKIP() << "the hard open-file limit (" << ours.rlim_max << ") leaves no room";
  }
  if (access("/usr/bin/prlimit", X_OK) != 0) GTEST_SKIP() << "needs /usr/bin/prlimit";
  const std::string hard =
      ours.rlim_max == RLIM_INFINITY ? "unlimited" : std::to_string(ours.rlim_max);
  TempDir dir;
  const std::string path = dir.file("s.sock");
  std::vector<std::string> args = {"--nofile=64:" + hard, PF_TEST_DAEMON};
  // 256 KiB pages of 16 tokens, 8 to a 2 MiB chunk: 100 chunks for the branch below (the
  // pages are never written, so they cost address space, not memory).
  for (std::string& a : base_args(dir, path)) {
    args.push_back(a == "8MiB"   ? "256MiB"
                   : a == "tiny" ? "layers=2,kv_heads=8,head_dim=128,dtype=fp32,page_tokens=16"
                                 : std::move(a));
  }
  Child daemon(ChildSpec("/usr/bin/prlimit", args, dir.file("err"), ChildSpec::Stdout::kInherit));
  ASSERT_TRUE(daemon.wait_for_path(dir.file("ready.json"))) << read_file(dir.file("err"));
  EXPECT_NE(read_file(dir.file("err")).find("raised the open-file limit from 64 to " + hard),
            std::string::npos)
      << read_file(dir.file("err"));
  // /proc/PID/limits: "Max open files  <soft>  <hard>  files".
  std::istringstream limits(read_file("/proc/" + std::to_string(daemon.pid()) + "/limits"));
  std::string soft, hard_now;
  for (std::string line; std::getline(limits, line);) {
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream(line.substr(std::strlen("Max open files"))) >> soft >> hard_now;
    }
  }
  EXPECT_EQ(soft, hard);
  EXPECT_EQ(hard_now, hard);

  RawClient writer(path);
  writer.hello();
  const std::uint64_t b = writer.create_branch({});
  ASSERT_EQ(writer.append(b, iota_tokens(0, 100 * 8 * 16)).empty(), false);
  RawClient reader(path);
  reader.hello();
  Result<msg::AttachAnswer> attach = reader.op_call<ipc::Op::kAttach>({});
  ASSERT_TRUE(attach.is_ok()) << attach.status().to_string();
  EXPECT_EQ(attach->head.total_chunks, 100u);
  EXPECT_EQ(attach->head.n_fds, 100u);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(LifecycleTest, NeverReplacesSomethingThatIsNotASocket) {
  TempDir dir;
  const std::string path = dir.file("not-a-socket");
  { std::ofstream(path) << "precious"; }
  RunResult e = run_to_exit(base_args(dir, path), dir.file("err"));
  EXPECT_EQ(e.code, 1);
  EXPECT_NE(e.err.find("not a socket"), std::string::npos) << e.err;
  EXPECT_EQ(read_file(path), "precious");
}

TEST(LifecycleTest, BusyHttpPortFailsStartAndCleansUp) {
  int port = 0;
  UniqueFd tcp = listen_loopback(&port, 1);
  ASSERT_TRUE(tcp.valid());
  TempDir dir;
  std::vector<std::string> args = base_args(dir, dir.file("s.sock"));
  args.push_back("--http");
  args.push_back("127.0.0.1:" + std::to_string(port));
  RunResult e = run_to_exit(args, dir.file("err"));
  EXPECT_EQ(e.code, 1) << e.err;
  EXPECT_NE(e.err.find("cannot start"), std::string::npos) << e.err;
  EXPECT_FALSE(fs::exists(dir.file("s.sock")));  // the socket it had bound is gone again
  EXPECT_FALSE(fs::exists(dir.file("ready.json")));
}

TEST(LifecycleTest, UsageErrorsAndBadDevice) {
  TempDir dir;
  std::vector<std::string> args = base_args(dir, dir.file("s.sock"));
  args.insert(args.end(), {"--http", "0.0.0.0:0"});
  RunResult e = run_to_exit(args, dir.file("err"));
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.err.find("--token"), std::string::npos) << e.err;
  EXPECT_NE(e.err.find("usage:"), std::string::npos);

  e = run_to_exit({"--capacity", "plenty"}, dir.file("err"));
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.err.find("--capacity"), std::string::npos) << e.err;

  e = run_to_exit({"--help"}, dir.file("err"));
  EXPECT_EQ(e.code, 0);

  args = base_args(dir, dir.file("s.sock"));
  args.insert(args.end(), {"--device", "no-such-device"});
  e = run_to_exit(args, dir.file("err"));
  EXPECT_EQ(e.code, 1);
  EXPECT_NE(e.err.find("no-such-device"), std::string::npos) << e.err;
  EXPECT_FALSE(fs::exists(dir.file("s.sock")));

  // The environment configures it too; a bad value there is a usage error naming it.
  e = run_to_exit({}, dir.file("err"), {{"PROCESSFORK_GEOMETRY", "nope"}});
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.err.find("PROCESSFORK_GEOMETRY"), std::string::npos) << e.err;
}

TEST(LifecycleTest, NonLoopbackWithTokenAndEnvironmentConfig) {
  TempDir dir;
  const std::string sock = dir.file("env.sock");
  Child daemon(test_daemon({}, dir.file("err"),
                           {{"PROCESSFORK_SOCKET", sock},
                            {"PROCESSFORK_HTTP", "0.0.0.0:0"},
                            {"PROCESSFORK_TOKEN", "tok"},
                            {"PROCESSFORK_DEVICE", "host"},
                            {"PROCESSFORK_CAPACITY", "4MiB"},
                            {"PROCESSFORK_CHUNK", "2MiB"},
                            {"PROCESSFORK_GEOMETRY", "tiny"},
                            {"PROCESSFORK_READY_FILE", dir.file("ready.json")}}));
  ASSERT_TRUE(daemon.wait_for_path(dir.file("ready.json"))) << read_file(dir.file("err"));
  json ready = json::parse(read_file(dir.file("ready.json")));
  const std::string hp = ready["http"];
  ASSERT_EQ(hp.rfind("0.0.0.0:", 0), 0u) << hp;
  httplib::Client cli("127.0.0.1", std::stoi(hp.substr(8)));
  auto anon = cli.Get("/v1/pool");
  ASSERT_TRUE(anon);
  EXPECT_EQ(anon->status, 401);
  cli.set_bearer_token_auth("tok");
  auto pool = cli.Get("/v1/pool");
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->status, 200);
  EXPECT_EQ(json::parse(pool->body)["capacity_pages"], (4 << 20) / 512);
  EXPECT_TRUE(fs::exists(sock));
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(LifecycleTest, HttpOffWritesNullInTheReadyFile) {
  TempDir dir;
  Child daemon(test_daemon(base_args(dir, dir.file("s.sock")), dir.file("err")));
  ASSERT_TRUE(daemon.wait_for_path(dir.file("ready.json")));
  json ready = json::parse(read_file(dir.file("ready.json")));
  EXPECT_TRUE(ready["http"].is_null());
  EXPECT_EQ(ready["pid"], daemon.pid());
  EXPECT_NE(read_file(dir.file("err")).find("HTTP off"), std::string::npos);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(LifecycleTest, PeerOfAnotherUidIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid (setuid)";
  Daemon d;
  constexpr uid_t kNobody = 65534;
  // Mode 0600: another uid cannot even connect.
  auto child_connects = [&](bool expect_connect) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(10);
      UniqueFd fd(socket(AF_UNIX, SOCK_STREAM, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, d.socket().c_str(), sizeof addr.sun_path - 1);
      if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        _exit(errno == EACCES ? 20 : 21);
      }
      if (!expect_connect) _exit(22);
      wire::HelloRequest req;
      wire::PayloadWriter w;
      w.put(req);
      // The daemon closes the connection without a single byte of HELLO reply.
      (void)ipc::send_frame(fd.get(), wire::MsgType::kHello, 0, 1, w.bytes());
      timeval tv{5, 0};
      setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[64];
      const ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
      _exit(n == 0 || (n < 0 && errno == ECONNRESET) ? 0 : 30);
    }
    return wait_exit(pid, std::chrono::milliseconds(10000));
  };
  EXPECT_EQ(child_connects(false), 20);  // EACCES
  // Open the file permissions so the uid check itself is what refuses it.
  ASSERT_EQ(chmod(d.dir().path.c_str(), 0755), 0);
  ASSERT_EQ(chmod(d.socket().c_str(), 0666), 0);
  EXPECT_EQ(child_connects(true), 0);
  EXPECT_NE(d.log().find("refused a connection from uid 65534"), std::string::npos) << d.log();
  // Our own uid is still served.
  RawClient c(d.socket());
  EXPECT_NE(c.hello().lease, 0u);
  httplib::Client h = d.http();
  auto m = h.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("processfork_connections_refused_total{reason=\"uid\"} 1\n"),
            std::string::npos);
}

}  // namespace
}  // namespace pf::testing
