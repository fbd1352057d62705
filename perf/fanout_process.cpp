#include "perf/fanout_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace pf::demo {

Result<pid_t> spawn_process(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) return PF_ERROR(Code::kInvalidArgument, "spawn_process: empty argv");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) return PF_ERRNO("open " + log_path);
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    if (log_fd >= 0) ::close(log_fd);
    return PF_ERRNO_OF("fork", err);
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (log_fd >= 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (log_fd >= 0) ::close(log_fd);
  return pid;
}

Result<int> wait_process(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return PF_ERRNO("waitpid " + std::to_string(pid));
    if (std::chrono::steady_clock::now() >= deadline) {
      return PF_ERROR(Code::kUnavailable, "process " + std::to_string(pid) + " still running");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void kill_process(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           ::strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return buf;
}

std::string self_dir() {
  const std::string exe = self_exe();
  const std::size_t slash = exe.rfind('/');
  return slash == std::string::npos ? "." : exe.substr(0, slash);
}

// --- WorkDir ------------------------------------------------------------------------------

Result<WorkDir> WorkDir::create(const std::string& tag) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/pf-" + tag + "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) return PF_ERRNO("mkdtemp " + templ);
  WorkDir d;
  d.path_ = templ;
  return d;
}

Result<WorkDir> WorkDir::adopt(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return PF_ERRNO("mkdir " + path);
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return PF_ERRNO("opendir " + path);
  bool empty = true;
  while (const dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
  }
  ::closedir(dir);
  if (!empty) {
    return PF_ERROR(Code::kAlreadyExists, "work directory " + path + " is not empty");
  }
  WorkDir d;
  d.path_ = path;
  return d;
}

WorkDir& WorkDir::operator=(WorkDir&& o) noexcept {
  if (this != &o) {
    remove();
    path_ = std::move(o.path_);
    o.path_.clear();
  }
  return *this;
}

void WorkDir::remove() {
  if (path_.empty()) return;
  if (DIR* dir = ::opendir(path_.c_str())) {
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(dir)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        names.emplace_back(e->d_name);
      }
    }
    ::closedir(dir);
    for (const std::string& n : names) ::unlink((path_ + "/" + n).c_str());
  }
  ::rmdir(path_.c_str());
  path_.clear();
}

// --- Daemon -------------------------------------------------------------------------------

Daemon& Daemon::operator=(Daemon&& o) noexcept {
  if (this != &o) {
    stop().ignore();
    options_ = std::move(o.options_);
    pid_ = o.pid_;
    o.pid_ = -1;
    ready_json_ = std::move(o.ready_json_);
    backend_ = std::move(o.backend_);
    device_ = std::move(o.device_);
  }
  return *this;
}

Result<Daemon> Daemon::start(const DaemonOptions& options, std::chrono::milliseconds timeout) {
  if (options.socket.empty() || options.ready_file.empty()) {
    return PF_ERROR(Code::kInvalidArgument, "Daemon::start needs a socket and a ready file");
  }
  std::vector<std::string> argv = {
      options.exe,  "serve",          "--device",     options.device,
      "--geometry", options.geometry, "--capacity",   options.capacity,
      "--chunk",    options.chunk,    "--http",       options.http,
      "--socket",   options.socket,   "--ready-file", options.ready_file};
  if (options.verify) argv.push_back("--verify");
  if (!options.token.empty()) {
    argv.push_back("--token");
    argv.push_back(options.token);
  }
  ::unlink(options.ready_file.c_str());
  Daemon d;
  d.options_ = options;
  PF_ASSIGN_OR_RETURN(d.pid_, spawn_process(argv, options.log_file));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::ifstream in(options.ready_file);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      d.ready_json_ = ss.str();
      const nlohmann::json j = nlohmann::json::parse(d.ready_json_, nullptr, false);
      if (!j.is_discarded() && j.is_object()) {
        d.backend_ = j.value("backend", "");
        d.device_ = j.value("device", "");
        return d;
      }
    }
    int status = 0;
    if (::waitpid(d.pid_, &status, WNOHANG) == d.pid_) {
      d.pid_ = -1;
      return PF_ERROR(Code::kUnavailable, "the daemon (" + options.exe + " serve) " +
                                              describe_wait_status(status) +
                                              " before it was ready: " + d.log_tail());
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      const std::string tail = d.log_tail();
      kill_process(d.pid_);
      d.pid_ = -1;
      return PF_ERROR(Code::kUnavailable, "the daemon was not ready within " +
                                              std::to_string(timeout.count()) + " ms: " + tail);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status Daemon::stop() {
  if (pid_ <= 0) return Status::ok();
  const pid_t pid = std::exchange(pid_, -1);
  ::kill(pid, SIGTERM);
  Result<int> st = wait_process(pid, std::chrono::seconds(10));
  Status out;
  if (!st.is_ok()) {
    kill_process(pid);
    out = PF_ERROR(Code::kInternal, "the daemon did not stop within 10 s of SIGTERM: killed");
  } else if (!(WIFEXITED(*st) && WEXITSTATUS(*st) == 0)) {
    out = PF_ERROR(Code::kInternal,
                   "the daemon stopped with " + describe_wait_status(*st) + ": " + log_tail());
  }
  struct stat sb;
  if (::lstat(options_.socket.c_str(), &sb) == 0) {
    ::unlink(options_.socket.c_str());
    if (out.is_ok()) {
      out = PF_ERROR(Code::kInternal, "the daemon left its socket " + options_.socket + " behind");
    }
  }
  ::unlink(options_.ready_file.c_str());
  return out;
}

std::string Daemon::log_tail(std::size_t bytes) const {
  if (options_.log_file.empty()) return "";
  std::ifstream in(options_.log_file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

}  // namespace pf::demo
