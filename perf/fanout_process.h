// Process plumbing for the fan-out demo and the benchmark harness: exec'd child processes
// that die with their parent, a private work directory, and a `processfork serve` daemon
// started on a private socket and stopped for sure.
//
// DESIGN
//  - Every child (daemon or worker) is fork()+exec()'d with PR_SET_PDEATHSIG = SIGKILL
//    and its own process group left as ours, so if the demo dies — even by SIGKILL —
//    nothing it started keeps running. The pdeathsig is armed before exec and the parent's
//    pid is re-checked after arming (the parent may have died in between).
//  - Daemon::stop() sends SIGTERM, waits up to 10 s for exit 0 (the daemon then has
//    removed its socket and ready file), else SIGKILLs it, and then removes a socket file
//    left behind. The destructor calls stop(); stop() is idempotent.
//  - WorkDir is a mkdtemp directory removed with its contents (one level deep) on
//    destruction.
//  - Nothing here is thread-safe; one owner drives each object.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"

namespace pf::demo {

// Starts argv[0] (a path) with argv. stdout/stderr go to `log_path` when not empty
// (appended), else are inherited. The child gets PR_SET_PDEATHSIG = SIGKILL.
Result<pid_t> spawn_process(const std::vector<std::string>& argv, const std::string& log_path = "");

// Waits for `pid` up to `timeout`; returns its wait status, or kUnavailable on timeout (the
// process is left running). Retries EINTR.
Result<int> wait_process(pid_t pid, std::chrono::milliseconds timeout);
// SIGKILL + reap; a no-op for pid <= 0. Never fails.
void kill_process(pid_t pid);
// "exit 0", "exit 3", "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

// The directory holding this executable (from /proc/self/exe).
std::string self_dir();
std::string self_exe();

class WorkDir {
 public:
  WorkDir() = default;
  // mkdtemp under $TMPDIR (or /tmp) with prefix "pf-<tag>-".
  static Result<WorkDir> create(const std::string& tag);
  // An existing directory that the caller owns (removed on destruction when it was empty
  // before, i.e. everything in it is ours).
  static Result<WorkDir> adopt(const std::string& path);
  WorkDir(WorkDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  WorkDir& operator=(WorkDir&& o) noexcept;
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  ~WorkDir() { remove(); }

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Removes the directory and the files in it.
  void remove();

 private:
  std::string path_;
};

struct DaemonOptions {
  std::string exe;       // the `processfork` CLI
  std::string device;    // --device
  std::string geometry;  // --geometry
  std::string capacity;  // --capacity, e.g. "256MiB"
  std::string chunk;     // --chunk ("0" = automatic)
  std::string http = "off";
  std::string socket;      // --socket
  std::string ready_file;  // --ready-file
  std::string log_file;    // the daemon's stderr/stdout
  std::string token;       // --token for the HTTP port ("" = none)
  bool verify = false;     // --verify
};

class Daemon {
 public:
  Daemon() = default;
  // Starts the daemon and waits (up to `timeout`) for its ready file; kUnavailable with
  // the daemon's log tail when it exits early or never gets ready.
  static Result<Daemon> start(const DaemonOptions& options,
                              std::chrono::milliseconds timeout = std::chrono::seconds(30));
  Daemon(Daemon&& o) noexcept { *this = std::move(o); }
  Daemon& operator=(Daemon&& o) noexcept;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon() { stop().ignore(); }

  pid_t pid() const { return pid_; }
  const std::string& socket() const { return options_.socket; }
  const std::string& ready_json() const { return ready_json_; }
  // The ready file's "backend" and "device".
  const std::string& backend() const { return backend_; }
  const std::string& device() const { return device_; }
  // SIGTERM, wait, SIGKILL if needed; ok when it exited 0 and left no socket behind.
  Status stop();
  // The tail of the daemon's log file (for error messages).
  std::string log_tail(std::size_t bytes = 2000) const;

 private:
  DaemonOptions options_;
  pid_t pid_ = -1;
  std::string ready_json_;
  std::string backend_;
  std::string device_;
};

}  // namespace pf::demo
