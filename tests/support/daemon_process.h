// Child processes for tests: a temporary directory, polling until something holds, programs
// spawned with argv, environment and captured output, a daemon waited for through its ready
// file and stopped (SIGTERM, then SIGKILL after a deadline), and exit statuses.
// Shared by tests/ipc (pf_test_daemon), tests/shims (`processfork serve`), tests/vmm and
// tests/perf; the harnesses there add only what is specific to them.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace pf::testing {

// Polls `pred` every 5 ms until it holds (true) or `timeout` passed (its last answer).
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

// The whole file; "" when it cannot be read.
std::string read_file(const std::string& path);

// The value after "key " on the first line of `text` that starts with it; "" if none.
std::string field_of(const std::string& text, const std::string& key);

// A fresh directory `parent`/`prefix`-XXXXXX, removed with all it holds on destruction.
// The default parent is /tmp, not $TMPDIR: Unix socket paths in it must fit in sun_path.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix = "pft", const std::string& parent = "/tmp");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// How a child ended, as wait(), stop(), kill_now() and run() return it: its exit status
// (0..255), 128 + N when signal N killed it, or one of these.
inline constexpr int kNoChild = -1;   // nothing to wait for: never started, already reaped
inline constexpr int kTimedOut = -2;  // still running at the deadline: SIGKILLed and reaped

// A waitpid() status as above.
int exit_code(int wait_status);

// Waits up to `timeout` for `pid`, a child of this process; past it, SIGKILLs and reaps it
// and returns kTimedOut. For children made with fork() that run code of this process.
int wait_exit(pid_t pid, std::chrono::milliseconds timeout);

// What to start. stdin is always a pipe from this process (EOF once closed).
struct ChildSpec {
  enum class Stdout {
    kPipe,     // read here: Child::wait_line, read_line, output
    kLog,      // into `log` together with stderr
    kInherit,  // this process's stdout
  };
  explicit ChildSpec(std::string program, std::vector<std::string> args = {}, std::string log = "",
                     Stdout out = Stdout::kPipe)
      : program(std::move(program)), args(std::move(args)), log(std::move(log)), out(out) {}

  std::string program;  // a path; argv[0] too
  std::vector<std::string> args;
  std::string log;  // stderr goes to this file (truncated first); "" keeps this process's
  Stdout out;
  std::vector<std::pair<std::string, std::string>> env;  // set on top of this environment
  std::vector<std::pair<int, int>> fds;  // {fd here, its number in the child}, e.g. {fd, 3}
};

// A running child process. The destructor SIGKILLs and reaps it unless it was reaped.
class Child {
 public:
  explicit Child(ChildSpec spec);
  // `program args` with stdout on a pipe and stderr into `log`.
  Child(const std::string& program, const std::vector<std::string>& args, const std::string& log);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !reaped_; }
  // How it ended, as wait() returns it, once reaped; kNoChild before.
  int result() const { return code_; }
  void close_stdin();

  // Reads stdout until a line equal to `line` arrived (true), or the timeout or EOF.
  bool wait_line(const std::string& line,
                 std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // The next line of stdout (without its '\n') not returned by read_line before; "" at the
  // timeout or EOF.
  std::string read_line(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits until `path` exists (a ready file, a socket): true; false when the child exited
  // first (it is reaped then) or the timeout passed.
  bool wait_for_path(const std::string& path,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Waits for the exit, reading stdout meanwhile; past `timeout` SIGKILL: kTimedOut.
  // result() when it was reaped already.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Sends `sig`, then wait(timeout): a clean shutdown, SIGKILL after the deadline.
  int stop(int sig = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // Sends `sig` (SIGKILL: no deadline needed) and reaps it; kNoChild if it was not running.
  int kill_now(int sig = SIGKILL);

  // All of stdout read so far (with Stdout::kPipe).
  const std::string& output() const { return out_; }
  // The value after "key " on the first line of output() starting with it; "" if none.
  std::string field(const std::string& key) const { return field_of(out_, key); }

 private:
  bool read_some(int timeout_ms);
  bool reap(bool block);

  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  bool eof_ = false;
  bool reaped_ = false;
  int code_ = kNoChild;
  std::string out_;
  std::size_t next_line_ = 0;  // read_line's position in out_
};

// A program run to completion.
struct RunResult {
  int code = kNoChild;  // as Child::wait
  std::string out;      // stdout (Stdout::kPipe)
  std::string err;      // the log file: stderr (and stdout with Stdout::kLog)
  std::string field(const std::string& key) const { return field_of(out, key); }
};

// Starts `spec` with stdin closed and waits for it (SIGKILL after `timeout`).
RunResult run(ChildSpec spec, std::chrono::milliseconds timeout = std::chrono::seconds(30));
// `program args`, stdout captured, stderr into a fresh file in `dir`.
RunResult run(const std::string& program, const std::vector<std::string>& args, const TempDir& dir);

// A daemon as a child process with its files in its own TempDir: stdout and stderr go to
// dir()/daemon.log, and it is up once it wrote its ready file. The destructor stops it.
class DaemonProcess {
 public:
  explicit DaemonProcess(const std::string& tmp_prefix = "pfd") : dir_(tmp_prefix) {}
  ~DaemonProcess() { stop(); }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Starts `program args` and waits for `ready_file`, then parses it into ready(). False,
  // with a test failure that shows the log, when the daemon exited or timed out first.
  bool start(const std::string& program, const std::vector<std::string>& args,
             const std::string& ready_file,
             std::chrono::milliseconds timeout = std::chrono::seconds(20));

  const TempDir& dir() const { return dir_; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  const nlohmann::json& ready() const { return ready_; }
  std::string log_path() const { return dir_.file("daemon.log"); }
  std::string log() const { return read_file(log_path()); }

  // `sig` (SIGTERM: the clean shutdown), SIGKILL after `timeout`; the exit code as
  // Child::wait, kNoChild when it is not running (any more).
  int stop(int sig = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
    return child_ ? child_->stop(sig, timeout) : kNoChild;
  }
  // SIGKILL and reap.
  void kill_hard() {
    if (child_) child_->kill_now(SIGKILL);
  }

 private:
  TempDir dir_;
  std::unique_ptr<Child> child_;
  nlohmann::json ready_;
};

}  // namespace pf::testing
