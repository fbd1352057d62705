// Test harness for the daemon: starts pf_test_daemon as a real child process, waits for its
// ready file, and talks to it with raw frames (ipc/wire.h) and real HTTP (httplib).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "ipc/api_json.h"
#include "ipc/fd_passing.h"
#include "ipc/frame_io.h"
#include "ipc/messages.h"
#include "ipc/ops.h"
#include "ipc/payload.h"
#include "ipc/wire.h"

namespace pf::testing {

using nlohmann::json;
namespace fs = std::filesystem;

inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/pfd-XXXXXX";
    const char* p = mkdtemp(tmpl);
    EXPECT_NE(p, nullptr);
    path = p ? p : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// Runs a program to completion (or kills it after `timeout`); returns exit code and stderr.
struct Exit {
  int code = -1;  // exit status, or 128 + signal
  std::string err;
};

inline pid_t spawn(const std::string& program, const std::vector<std::string>& args,
                   const std::string& stderr_path,
                   const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<std::string> full = {program};
  full.insert(full.end(), args.begin(), args.end());
  const pid_t pid = fork();
  if (pid == 0) {
    const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (err >= 0) {
      dup2(err, 2);
      close(err);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (std::string& a : full) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

inline int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -2;  // timed out
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

inline Exit run_to_exit(const std::vector<std::string>& args, const std::string& stderr_path,
                        const std::vector<std::pair<std::string, std::string>>& env = {},
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(15000)) {
  const pid_t pid = spawn(PF_TEST_DAEMON, args, stderr_path, env);
  Exit e;
  e.code = wait_exit(pid, timeout);
  e.err = read_text(stderr_path);
  return e;
}

// A running daemon with a private socket, an ephemeral HTTP port and a ready file.
class Daemon {
 public:
  // Standard test flags plus `extra`.
  explicit Daemon(std::vector<std::string> extra = {}, bool with_defaults = true) {
    socket_ = dir_.file("pf.sock");
    ready_ = dir_.file("ready.json");
    log_ = dir_.file("daemon.log");
    std::vector<std::string> args;
    if (with_defaults) {
      args = {"--socket", socket_,    "--http",     "127.0.0.1:0", "--ready-file",
              ready_,     "--device", "host",       "--capacity",  "64MiB",
              "--chunk",  "2MiB",     "--geometry", "tiny",        "--verify"};
    }
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = spawn(PF_TEST_DAEMON, args, log_);
    const bool ready = wait_until([&] {
      if (fs::exists(ready_)) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return true;
      }
      return false;
    });
    if (!ready || exited_) {
      ADD_FAILURE() << "daemon did not start; its log:\n" << log();
      return;
    }
    info_ = json::parse(read_text(ready_));
    if (info_["http"].is_string()) {
      const std::string hp = info_["http"];
      host_ = hp.substr(0, hp.rfind(':'));
      port_ = std::stoi(hp.substr(hp.rfind(':') + 1));
    }
  }
  ~Daemon() {
    if (!exited_) {
      kill(pid_, SIGTERM);
      wait_exit(pid_, std::chrono::milliseconds(10000));
    }
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // SIGTERM (or `sig`) and the exit code.
  int stop(int sig = SIGTERM) {
    kill(pid_, sig);
    exited_ = true;
    return wait_exit(pid_, std::chrono::milliseconds(10000));
  }

  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& ready_file() const { return ready_; }
  const json& info() const { return info_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  std::string log() const { return read_text(log_); }
  const TempDir& dir() const { return dir_; }

  httplib::Client http(const std::string& token = "") const {
    httplib::Client cli(host_, port_);
    cli.set_connection_timeout(5);
    cli.set_read_timeout(10);
    if (!token.empty()) cli.set_bearer_token_auth(token.c_str());
    return cli;
  }
  // GET /v1/pool's body ("" on failure).
  std::string pool(const std::string& token = "") const {
    auto res = http(token).Get("/v1/pool");
    return res && res->status == 200 ? res->body : std::string();
  }
  json pool_json(const std::string& token = "") const {
    const std::string body = pool(token);
    return body.empty() ? json() : json::parse(body);
  }
  // Open fds of the daemon process (leak checks).
  std::size_t fd_count() const {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd")) {
      (void)e;
      ++n;
    }
    return n;
  }

 private:
  TempDir dir_;
  std::string socket_, ready_, log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  json info_;
  std::string host_;
  int port_ = 0;
};

inline UniqueFd connect_unix(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  timeval tv{10, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// True when the peer closed: recv returns 0 (or ECONNRESET) within the timeout.
inline bool sees_eof(int fd, int timeout_ms = 5000) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET || errno == EPIPE;
    // Drain a final error reply, then expect EOF.
  }
}

struct WireReply {
  wire::FrameHeader header;
  wire::ReplyHeader rh;
  std::vector<std::byte> body;  // after the ReplyHeader (error message on failure)
  std::vector<UniqueFd> fds;
  bool ok() const { return rh.code == 0; }
  Code code() const { return static_cast<Code>(rh.code); }
  std::string text() const {
    return std::string(reinterpret_cast<const char*>(body.data()), body.size());
  }
  template <typename T>
  T as(std::size_t offset = 0) const {
    T v{};
    EXPECT_GE(body.size(), offset + sizeof(T));
    if (body.size() >= offset + sizeof(T)) std::memcpy(&v, body.data() + offset, sizeof(T));
    return v;
  }
};

// A raw protocol client: frames by hand, no client library.
class RawClient {
 public:
  explicit RawClient(const std::string& path) : fd_(connect_unix(path)) {}
  bool connected() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  void close() { fd_.reset(); }

  Status send(wire::MsgType type, std::span<const std::byte> payload,
              std::span<const int> fds = {}) {
    return ipc::send_frame(fd_.get(), type, 0, ++last_id_, payload, fds);
  }
  // Receives one reply frame; kUnavailable when the daemon closed.
  Result<WireReply> receive() {
    ipc::Frame f;
    PF_TRY(ipc::recv_frame(fd_.get(), &f, wire::kMaxPayload, 253));
    WireReply r;
    r.header = f.header;
    EXPECT_TRUE(f.header.flags & wire::kFlagReply);
    if (f.payload.size() < sizeof(wire::ReplyHeader)) {
      return PF_ERROR(Code::kProtocol, "reply shorter than ReplyHeader");
    }
    std::memcpy(&r.rh, f.payload.data(), sizeof r.rh);
    r.body.assign(f.payload.begin() + sizeof r.rh, f.payload.end());
    r.fds = std::move(f.fds);
    if (r.rh.code != 0) {
      EXPECT_EQ(r.rh.message_bytes, r.body.size());
    }
    return r;
  }
  Result<WireReply> call(wire::MsgType type, std::span<const std::byte> payload,
                         std::span<const int> fds = {}) {
    PF_TRY(send(type, payload, fds));
    PF_ASSIGN_OR_RETURN(WireReply r, receive());
    EXPECT_EQ(r.header.request_id, last_id_);
    EXPECT_EQ(r.header.type, static_cast<std::uint16_t>(type));
    return r;
  }
  Result<WireReply> call(wire::MsgType type, const wire::PayloadWriter& w) {
    return call(type, w.bytes());
  }

  wire::HelloReply hello(std::uint16_t major = wire::kVersionMajor) {
    wire::HelloRequest req;
    req.major = major;
    req.client_pid = static_cast<std::uint32_t>(getpid());
    wire::PayloadWriter w;
    w.put(req);
    Result<WireReply> r = call(wire::MsgType::kHello, w);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r.is_ok()) return {};
    EXPECT_TRUE(r->ok()) << r->text();
    return r->ok() ? r->as<wire::HelloReply>() : wire::HelloReply{};
  }

  // Fast-path helpers: EXPECT success and return the interesting part.
  std::uint64_t create_branch(const std::vector<std::uint32_t>& tokens,
                              std::uint64_t* reused = nullptr) {
    wire::BranchCreateRequest req;
    req.n_tokens = static_cast<std::uint32_t>(tokens.size());
    wire::PayloadWriter w;
    w.put(req).put_array(std::span<const std::uint32_t>(tokens));
    Result<WireReply> r = call(wire::MsgType::kBranchCreate, w);
    EXPECT_TRUE(r.is_ok() && r->ok()) << (r.is_ok() ? r->text() : r.status().to_string());
    if (!r.is_ok() || !r->ok()) return 0;
    auto out = r->as<wire::BranchCreateReply>();
    if (reused) *reused = out.reused_tokens;
    return out.branch;
  }
  Result<WireReply> append_raw(std::uint64_t branch, const std::vector<std::uint32_t>& tokens) {
    wire::AppendRequest req;
    req.branch = branch;
    req.n_tokens = static_cast<std::uint32_t>(tokens.size());
    wire::PayloadWriter w;
    w.put(req).put_array(std::span<const std::uint32_t>(tokens));
    return call(wire::MsgType::kAppend, w);
  }
  std::vector<wire::WriteRunWire> append(std::uint64_t branch,
                                         const std::vector<std::uint32_t>& tokens) {
    Result<WireReply> r = append_raw(branch, tokens);
    EXPECT_TRUE(r.is_ok() && r->ok()) << (r.is_ok() ? r->text() : r.status().to_string());
    std::vector<wire::WriteRunWire> runs;
    if (!r.is_ok() || !r->ok()) return runs;
    auto head = r->as<wire::AppendReply>();
    for (std::uint32_t i = 0; i < head.n_runs; ++i) {
      runs.push_back(r->as<wire::WriteRunWire>(sizeof head + i * sizeof(wire::WriteRunWire)));
    }
    return runs;
  }
  Result<WireReply> branch_op(wire::MsgType type, std::uint64_t branch) {
    wire::BranchRequest req;
    req.branch = branch;
    wire::PayloadWriter w;
    w.put(req);
    return call(type, w);
  }
  std::string snapshot(std::uint64_t branch, const std::string& name = "") {
    wire::SnapshotRequest req;
    req.branch = branch;
    req.name_bytes = static_cast<std::uint32_t>(name.size());
    wire::PayloadWriter w;
    w.put(req).put_text(name);
    Result<WireReply> r = call(wire::MsgType::kSnapshot, w);
    EXPECT_TRUE(r.is_ok() && r->ok()) << (r.is_ok() ? r->text() : r.status().to_string());
    if (!r.is_ok() || !r->ok()) return "";
    return r->as<wire::SnapshotReply>().cid;
  }
  // One row of ipc/ops.def through its message codec: the decoded reply, or the daemon's
  // error (its code and message).
  template <ipc::Op op>
  Result<ipc::ReplyOf<op>> op_call(ipc::RequestOf<op> request) {
    const std::vector<std::byte> payload = wire::encode(request);
    PF_ASSIGN_OR_RETURN(WireReply r, call(ipc::OpTraits<op>::message, payload));
    if (!r.ok()) return Status(r.code(), r.text());
    ipc::ReplyOf<op> out;
    PF_TRY(wire::decode(r.body, &out, "reply"));
    return out;
  }
  // The reply as the HTTP port renders it (ipc/api_json.h), or "ERROR <code>: message".
  template <ipc::Op op>
  std::string rendered(ipc::RequestOf<op> request) {
    Result<ipc::ReplyOf<op>> r = op_call<op>(std::move(request));
    if (!r.is_ok()) {
      return "ERROR " + std::to_string(static_cast<int>(r.status().code())) + ": " +
             r.status().message();
    }
    return ipc::api::answer_body(*r);
  }

 private:
  UniqueFd fd_;
  std::uint32_t last_id_ = 0;
};

inline std::vector<std::uint32_t> iota_tokens(std::uint32_t first, std::size_t n) {
  std::vector<std::uint32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = first + static_cast<std::uint32_t>(i);
  return t;
}

}  // namespace pf::testing

namespace pf::testing {

// Request messages for the ops that name one snapshot, ref or branch, or a source.
inline msg::Named named(const std::string& name) {
  msg::Named m;
  m.name = name;
  return m;
}
inline msg::BranchTarget target(std::uint64_t branch) {
  msg::BranchTarget m;
  m.head.branch = branch;
  return m;
}
inline msg::Source source(std::uint64_t branch) {
  return msg::Source::of_branch(branch);
}
inline msg::Source source(const std::string& name) {
  return msg::Source::of_name(name);
}

}  // namespace pf::testing
