// Harness for the shim tests: a real daemon (`processfork serve`, the CLI binary) as a child
// process, real client processes (shims_test_client, the CLI) with their output captured,
// and a few helpers over the C ABI. Everything talks to the daemon through libprocessfork.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
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

#include "shims/include/processfork.h"

extern char** environ;

namespace pf::shimtest {

using nlohmann::json;
using namespace std::chrono_literals;

inline const char* kCli = PF_CLI_PATH;
inline const char* kTestClient = PF_TEST_CLIENT_PATH;

inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/pfs-XXXXXX";
    const char* p = mkdtemp(tmpl);
    if (p == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path = p != nullptr ? p : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// A child process with its stdin and stdout connected to pipes and stderr to a file.
class Child {
 public:
  Child(const std::string& program, const std::vector<std::string>& args,
        const std::string& stderr_path) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << std::strerror(errno);
      return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0600);
    std::vector<std::string> full = {program};
    full.insert(full.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : full) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, program.c_str(), &fa, nullptr, argv.data(), environ) != 0) {
      ADD_FAILURE() << "posix_spawn " << program;
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  ~Child() {
    if (stdin_ >= 0) close(stdin_);
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_ >= 0) close(stdout_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }

  // Reads stdout until a line equal to `line` arrived (true) or the timeout / EOF.
  bool wait_line(const std::string& line, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      std::size_t start = 0;
      for (std::size_t nl; (nl = out_.find('\n', start)) != std::string::npos; start = nl + 1) {
        if (out_.compare(start, nl - start, line) == 0) return true;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !read_some(static_cast<int>(left.count()))) return false;
    }
  }
  void close_stdin() {
    if (stdin_ >= 0) close(stdin_);
    stdin_ = -1;
  }
  // Waits for exit (reading all output); returns the exit code or 128 + signal.
  int wait(std::chrono::milliseconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (read_some(50)) {
      if (std::chrono::steady_clock::now() > deadline) break;
    }
    int status = 0;
    for (;;) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      read_some(10);
    }
    while (read_some(0)) {
    }
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void kill_now(int sig) {
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
  }
  const std::string& output() const { return out_; }
  // The value after "key " on the first line starting with it; "" if none.
  std::string field(const std::string& key) const;

 private:
  bool read_some(int timeout_ms) {
    pollfd p{stdout_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[65536];
    const ssize_t n = read(stdout_, buf, sizeof buf);
    if (n <= 0) return false;
    out_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  bool reaped_ = false;
  std::string out_;
};

// The value after "key " on the first line of `text` starting with it; "" if none.
inline std::string field_of(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + " ", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
  std::string field(const std::string& key) const { return field_of(out, key); }
};

// Runs a program to completion, capturing stdout and stderr.
inline RunResult run(const std::string& program, const std::vector<std::string>& args,
                     const TempDir& dir) {
  static int counter = 0;
  const std::string err_path = dir.file("run-" + std::to_string(counter++) + ".err");
  Child child(program, args, err_path);
  child.close_stdin();
  RunResult r;
  r.code = child.wait();
  r.out = child.output();
  r.err = read_file(err_path);
  return r;
}

inline std::string Child::field(const std::string& key) const {
  return field_of(out_, key);
}

// `processfork serve` as a child process on a socket in its own temporary directory.
class Daemon {
 public:
  explicit Daemon(const std::string& capacity = "64MiB", const std::string& chunk = "2MiB",
                  const std::string& geometry = "tiny")
      : socket_(dir_.file("s")) {
    const std::string ready = dir_.file("r");
    child_ = std::make_unique<Child>(
        kCli,
        std::vector<std::string>{"serve", "--device", "host", "--geometry", geometry, "--capacity",
                                 capacity, "--chunk", chunk, "--socket", socket_, "--http", "off",
                                 "--ready-file", ready},
        dir_.file("daemon.log"));
    const bool up = wait_until([&] { return std::filesystem::exists(ready); }, 20s);
    if (!up) ADD_FAILURE() << "daemon did not become ready: " << read_file(dir_.file("daemon.log"));
    ready_ = json::parse(read_file(ready), nullptr, false);
  }
  ~Daemon() { stop(); }

  const std::string& socket() const { return socket_; }
  const TempDir& dir() const { return dir_; }
  const json& ready() const { return ready_; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  std::string log() const { return read_file(dir_.file("daemon.log")); }

  // SIGTERM and wait: the daemon's clean shutdown. Returns its exit code.
  int stop() {
    if (!child_ || stopped_) return -1;
    stopped_ = true;
    kill(child_->pid(), SIGTERM);
    return child_->wait(15s);
  }
  void kill_hard() {
    if (!child_ || stopped_) return;
    stopped_ = true;
    child_->kill_now(SIGKILL);
  }

 private:
  TempDir dir_;
  std::string socket_;
  std::unique_ptr<Child> child_;
  json ready_;
  bool stopped_ = false;
};

// --- C ABI helpers ------------------------------------------------------------------------

inline pf_client* connect_or_fail(const std::string& socket, std::uint32_t flags = 0) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = socket.c_str();
  cfg.flags = flags;
  pf_client* c = nullptr;
  const pf_result r = pf_connect(&cfg, &c);
  EXPECT_EQ(r, PF_OK) << pf_last_error_message(nullptr);
  return c;
}

struct ClientDeleter {
  void operator()(pf_client* c) const { pf_disconnect(c); }
};
using ClientPtr = std::unique_ptr<pf_client, ClientDeleter>;

inline pf_pool_info pool_info(pf_client* c) {
  pf_pool_info info{};
  info.struct_size = sizeof info;
  EXPECT_EQ(pf_pool_info_get(c, &info), PF_OK);
  return info;
}

inline pf_pool_stats pool_stats(pf_client* c) {
  pf_pool_stats s{};
  s.struct_size = sizeof s;
  EXPECT_EQ(pf_pool_stats_get(c, &s), PF_OK) << pf_last_error_message(c);
  return s;
}

inline json pool_json(pf_client* c) {
  std::size_t need = 0;
  EXPECT_EQ(pf_pool_json(c, nullptr, 0, &need), PF_OK);
  std::string buf(need, '\0');
  EXPECT_EQ(pf_pool_json(c, buf.data(), buf.size(), &need), PF_OK);
  buf.resize(need - 1);
  return json::parse(buf, nullptr, false);
}

inline std::vector<std::uint32_t> view_pages(pf_client* c, pf_branch_id b,
                                             pf_branch_info* info_out = nullptr) {
  pf_branch_info info{};
  EXPECT_EQ(pf_branch_view(c, b, &info, nullptr, 0, nullptr, 0), PF_OK) << pf_last_error_message(c);
  std::vector<std::uint32_t> pages(info.n_pages);
  EXPECT_EQ(pf_branch_view(c, b, &info, pages.data(), pages.size(), nullptr, 0), PF_OK);
  if (info_out != nullptr) *info_out = info;
  return pages;
}

}  // namespace pf::shimtest
