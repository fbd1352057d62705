// Test harness for the daemon: starts pf_test_daemon as a real child process and waits for its
// ready file (tests/support/daemon_process.h), and talks to it with raw frames (ipc/wire.h)
// and real HTTP (httplib).
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
#include "tests/support/daemon_process.h"

namespace pf::testing {

using nlohmann::json;
namespace fs = std::filesystem;

// pf_test_daemon with `args` (and `env` on top of this environment) as a child process;
// stderr goes to `stderr_path`, stdout stays this process's.
inline ChildSpec test_daemon(const std::vector<std::string>& args, const std::string& stderr_path,
                             const std::vector<std::pair<std::string, std::string>>& env = {}) {
  ChildSpec spec(PF_TEST_DAEMON, args, stderr_path, ChildSpec::Stdout::kInherit);
  spec.env = env;
  return spec;
}

// pf_test_daemon run to completion (killed after `timeout`): its exit code and stderr.
inline RunResult run_to_exit(const std::vector<std::string>& args, const std::string& stderr_path,
                             const std::vector<std::pair<std::string, std::string>>& env = {},
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(15000)) {
  return run(test_daemon(args, stderr_path, env), timeout);
}

// A running daemon with a private socket, an ephemeral HTTP port and a ready file; its log is
// dir()/daemon.log, stop(sig) its exit code, and the destructor stops it (SIGTERM).
class Daemon : public DaemonProcess {
 public:
  // Standard test flags plus `extra`.
  explicit Daemon(std::vector<std::string> extra = {}, bool with_defaults = true)
      : DaemonProcess("pfd") {
    socket_ = dir().file("pf.sock");
    ready_ = dir().file("ready.json");
    std::vector<std::string> args;
    if (with_defaults) {
      args = {"--socket", socket_,    "--http",     "127.0.0.1:0", "--ready-file",
              ready_,     "--device", "host",       "--capacity",  "64MiB",
              "--chunk",  "2MiB",     "--geometry", "tiny",        "--verify"};
    }
    args.insert(args.end(), extra.begin(), extra.end());
    if (!start(PF_TEST_DAEMON, args, ready_)) return;
    const auto http = info().find("http");
    if (http != info().end() && http->is_string()) {
      const std::string hp = *http;
      host_ = hp.substr(0, hp.rfind(':'));
      port_ = std::stoi(hp.substr(hp.rfind(':') + 1));
    }
    // The bearer token the daemon wrote for local clients (auth is on by default).
    const auto token_file = info().find("token_file");
    if (token_file != info().end() && token_file->is_string()) {
      token_ = read_file(*token_file);
      while (!token_.empty() && token_.back() == '\n') token_.pop_back();
    }
  }

  const std::string& socket() const { return socket_; }
  const std::string& ready_file() const { return ready_; }
  const json& info() const { return ready(); }
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // The token from the daemon's token file; "" when it wrote none (HTTP or auth off).
  const std::string& token() const { return token_; }

  // An HTTP client sending the daemon's token (token()).
  httplib::Client http() const { return http(token_); }
  // An HTTP client sending `token`; "" sends none.
  httplib::Client http(const std::string& token) const {
    httplib::Client cli(host_, port_);
    cli.set_connection_timeout(5);
    cli.set_read_timeout(10);
    if (!token.empty()) cli.set_bearer_token_auth(token.c_str());
    return cli;
  }
  // An HTTP client without a token.
  httplib::Client anon() const { return http(std::string()); }
  // GET /v1/pool's body ("" on failure), with the daemon's token or `token`.
  std::string pool() const { return pool(token_); }
  std::string pool(const std::string& token) const {
    auto res = http(token).Get("/v1/pool");
    return res && res->status == 200 ? res->body : std::string();
  }
  json pool_json() const {
    const std::string body = pool();
    return body.empty() ? json() : json::parse(body);
  }
  // Open fds of the daemon process (leak checks).
  std::size_t fd_count() const {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid()) + "/fd")) {
      (void)e;
      ++n;
    }
    return n;
  }

 private:
  std::string socket_, ready_;
  std::string host_;
  int port_ = 0;
  std::string token_;
};

// pf_lease_client (lease_client.cpp) on `socket` as a child process with stdout on a pipe: it
// prints "ready <details>" once its state is in place, then waits to be SIGKILLed.
class LeaseClient {
 public:
  LeaseClient(const std::string& socket, std::vector<std::string> args)
      : child_(ChildSpec(PF_LEASE_CLIENT, with_socket(socket, std::move(args)))) {}

  // The words after "ready" on its first line.
  std::vector<std::string> ready() {
    std::istringstream in(child_.read_line(std::chrono::milliseconds(10000)));
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    EXPECT_FALSE(words.empty()) << "the client never got ready";
    if (!words.empty()) {
      EXPECT_EQ(words[0], "ready");
      words.erase(words.begin());
    }
    return words;
  }
  // SIGKILL and reap; true when it was still running (not dead of an error).
  bool kill9() {
    const int code = child_.kill_now(SIGKILL);
    EXPECT_EQ(code, 128 + SIGKILL) << "the client was not running any more";
    return code == 128 + SIGKILL;
  }

 private:
  static std::vector<std::string> with_socket(const std::string& socket,
                                              std::vector<std::string> args) {
    args.insert(args.begin(), socket);
    return args;
  }

  Child child_;
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
