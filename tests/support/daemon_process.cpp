#include "tests/support/daemon_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace pf::testing {

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// This process's environment with `env` set on top, as "KEY=VALUE" strings.
std::vector<std::string> environment_with(
    const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    bool replaced = false;
    for (const auto& [k, v] : env) replaced = replaced || entry.rfind(k + "=", 0) == 0;
    if (!replaced) out.push_back(entry);
  }
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string field_of(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + " ", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

TempDir::TempDir(const std::string& prefix, const std::string& parent) {
  std::string tmpl = parent + "/" + prefix + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    tmpl = parent;
  }
  path = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

int exit_code(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return kNoChild;
}

int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return exit_code(status);
    if (r < 0 && errno != EINTR) return kNoChild;
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return kTimedOut;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Child::Child(ChildSpec spec) {
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  const bool pipe_out = spec.out == ChildSpec::Stdout::kPipe;
  if (pipe2(in, O_CLOEXEC) != 0 || (pipe_out && pipe2(out, O_CLOEXEC) != 0)) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    for (int fd : {in[0], in[1]}) {
      if (fd >= 0) close(fd);
    }
    return;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  if (!spec.log.empty()) {
    posix_spawn_file_actions_addopen(&fa, 2, spec.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  if (pipe_out) posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  if (spec.out == ChildSpec::Stdout::kLog) posix_spawn_file_actions_adddup2(&fa, 2, 1);
  for (const auto& [here, there] : spec.fds) posix_spawn_file_actions_adddup2(&fa, here, there);

  std::vector<std::string> args = {spec.program};
  args.insert(args.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> env = environment_with(spec.env);
  std::vector<char*> argv = pointers(args), envp = pointers(env);
  const int rc = posix_spawn(&pid_, spec.program.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << spec.program << ": " << std::strerror(rc);
    pid_ = -1;
  }
  close(in[0]);
  stdin_ = in[1];
  if (pipe_out) {
    close(out[1]);
    stdout_ = out[0];
  }
}

Child::Child(const std::string& program, const std::vector<std::string>& args,
             const std::string& log)
    : Child(ChildSpec(program, args, log)) {}

Child::~Child() {
  close_stdin();
  if (running()) {
    kill(pid_, SIGKILL);
    reap(true);
  }
  if (stdout_ >= 0) close(stdout_);
}

void Child::close_stdin() {
  if (stdin_ >= 0) close(stdin_);
  stdin_ = -1;
}

bool Child::read_some(int timeout_ms) {
  if (stdout_ < 0 || eof_) return false;
  pollfd p{stdout_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  char buf[65536];
  const ssize_t n = read(stdout_, buf, sizeof buf);
  if (n <= 0) {
    eof_ = n == 0;
    return false;
  }
  out_.append(buf, static_cast<std::size_t>(n));
  return true;
}

// Reaps the child if it exited (or, with `block`, once it does); true when reaped.
bool Child::reap(bool block) {
  if (!running()) return reaped_;
  int status = 0;
  pid_t r;
  while ((r = waitpid(pid_, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
  }
  if (r == 0) return false;
  reaped_ = true;
  code_ = r == pid_ ? exit_code(status) : kNoChild;
  return true;
}

bool Child::wait_line(const std::string& line, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::size_t start = 0;
    for (std::size_t nl; (nl = out_.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (out_.compare(start, nl - start, line) == 0) return true;
    }
    const int left = ms_left(deadline);
    if (left <= 0 || !read_some(left)) return false;
  }
}

std::string Child::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const std::size_t nl = out_.find('\n', next_line_);
    if (nl != std::string::npos) {
      std::string line = out_.substr(next_line_, nl - next_line_);
      next_line_ = nl + 1;
      return line;
    }
    const int left = ms_left(deadline);
    if (left <= 0 || !read_some(left)) return "";
  }
}

bool Child::wait_for_path(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (std::filesystem::exists(path)) return true;
    if (reap(false)) return std::filesystem::exists(path);
    if (Clock::now() > deadline) return false;
    if (!read_some(5)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int Child::wait(std::chrono::milliseconds timeout) {
  if (!running()) return code_;
  const auto deadline = Clock::now() + timeout;
  while (!reap(false)) {
    if (Clock::now() > deadline) {
      kill(pid_, SIGKILL);
      reap(true);
      code_ = kTimedOut;
      break;
    }
    if (!read_some(10)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  while (read_some(0)) {
  }
  return code_;
}

int Child::stop(int sig, std::chrono::milliseconds timeout) {
  if (!running()) return kNoChild;
  kill(pid_, sig);
  return wait(timeout);
}

int Child::kill_now(int sig) {
  if (!running() || kill(pid_, sig) != 0) return kNoChild;
  reap(true);
  return code_;
}

RunResult run(ChildSpec spec, std::chrono::milliseconds timeout) {
  const std::string log = spec.log;
  Child child(std::move(spec));
  child.close_stdin();
  RunResult r;
  r.code = child.wait(timeout);
  r.out = child.output();
  if (!log.empty()) r.err = read_file(log);
  return r;
}

RunResult run(const std::string& program, const std::vector<std::string>& args,
              const TempDir& dir) {
  static int counter = 0;
  return run(ChildSpec(program, args, dir.file("run-" + std::to_string(counter++) + ".err")));
}

bool DaemonProcess::start(const std::string& program, const std::vector<std::string>& args,
                          const std::string& ready_file, std::chrono::milliseconds timeout) {
  child_ = std::make_unique<Child>(ChildSpec(program, args, log_path(), ChildSpec::Stdout::kLog));
  if (!child_->wait_for_path(ready_file, timeout)) {
    const int code = child_->running() ? kTimedOut : child_->result();
    ADD_FAILURE() << "the daemon did not become ready ("
                  << (code == kTimedOut ? "timed out" : "exit code " + std::to_string(code))
                  << "); its log:\n"
                  << log();
    return false;
  }
  ready_ = nlohmann::json::parse(read_file(ready_file), nullptr, false);
  if (ready_.is_discarded()) {
    ADD_FAILURE() << "the ready file " << ready_file << " is not JSON: " << read_file(ready_file);
    ready_ = nlohmann::json();
    return false;
  }
  return true;
}

}  // namespace pf::testing
