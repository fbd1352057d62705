#include "ipc/uds_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "base/log.h"
#include "ipc/uds_session.h"

namespace pf::ipc {
namespace {

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return PF_ERROR(Code::kInvalidArgument, "socket path '" + path + "' must be 1.." +
                                                std::to_string(sizeof addr.sun_path - 1) +
                                                " bytes long");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// Probes an existing path: refuses a live daemon or a non-socket, removes a stale socket.
Status prepare_path(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::ok();
    return PF_ERRNO("stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return PF_ERROR(Code::kAlreadyExists,
                    path + " exists and is not a socket; refusing to replace it");
  }
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return PF_ERRNO("socket");
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ||
      errno == EAGAIN || errno == EINPROGRESS) {
    // EAGAIN: a listener with a full backlog is still a live daemon.
    return PF_ERROR(Code::kAlreadyExists,
                    "another daemon is already serving on " + path + " (stop it first)");
  }
  const int err = errno;
  if (err == ECONNREFUSED) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return PF_ERRNO("unlink stale " + path);
    log_line("removed stale socket " + path + " (no daemon answered)");
    return Status::ok();
  }
  if (err == EACCES || err == EPERM) {
    return PF_ERROR(Code::kPermissionDenied, "cannot probe " + path + ": " + std::strerror(err));
  }
  return PF_ERRNO_OF("probe " + path, err);
}

void set_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

struct UdsServer::Impl {
  struct Connection {
    UniqueFd fd;  // closed by its own thread when done (under Impl::mu)
    pid_t pid = 0;
    uid_t uid = 0;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  Service& service;
  UdsOptions options;
  UniqueFd listener;
  UniqueFd wake;  // eventfd: stop() wakes the accept loop
  dev_t dev = 0;
  ino_t ino = 0;
  std::thread acceptor;
  std::atomic<bool> stopping{false};
  bool stopped = false;

  std::mutex mu;  // guards connections and their fds
  std::list<std::unique_ptr<Connection>> connections;

  IdleSpin spin;  // shared by every session; declared after `options`, which it reads

  Impl(Service& s, UdsOptions o)
      : service(s), options(std::move(o)), spin(options.spin_us, options.max_spinners) {}

  void accept_loop();
  void reap_locked(std::vector<std::thread>* finished);
  void serve(Connection& c);
  void finish(Connection& c);
};

Result<std::unique_ptr<UdsServer>> UdsServer::start(Service& service, UdsOptions options) {
  PF_ASSIGN_OR_RETURN(sockaddr_un addr, socket_address(options.path));
  PF_TRY(prepare_path(options.path, addr));
  auto impl = std::make_unique<Impl>(service, options);
  impl->listener.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!impl->listener.valid()) return PF_ERRNO("socket");
  // 0600 from the first instant: umask covers the window between bind and chmod.
  const mode_t old_mask = umask(0177);
  const int bound =
      bind(impl->listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_err = errno;
  umask(old_mask);
  if (bound != 0) {
    if (bind_err == EADDRINUSE) {
      return PF_ERROR(Code::kAlreadyExists, "another daemon is already serving on " + options.path);
    }
    return PF_ERRNO_OF("bind " + options.path, bind_err);
  }
  auto unlink_on_error = [&] { unlink(options.path.c_str()); };
  struct stat st {};
  if (chmod(options.path.c_str(), 0600) != 0 || stat(options.path.c_str(), &st) != 0) {
    const int err = errno;
    unlink_on_error();
    return PF_ERRNO_OF("chmod " + options.path, err);
  }
  impl->dev = st.st_dev;
  impl->ino = st.st_ino;
  if (listen(impl->listener.get(), 128) != 0) {
    const int err = errno;
    unlink_on_error();
    return PF_ERRNO_OF("listen " + options.path, err);
  }
  impl->wake.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake.valid()) {
    const int err = errno;
    unlink_on_error();
    return PF_ERRNO_OF("eventfd", err);
  }
  Impl* raw = impl.get();
  impl->acceptor = std::thread([raw] { raw->accept_loop(); });
  return std::unique_ptr<UdsServer>(new UdsServer(std::move(impl)));
}

UdsServer::UdsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UdsServer::~UdsServer() {
  stop();
}

const std::string& UdsServer::path() const {
  return impl_->options.path;
}

void UdsServer::stop() {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  s.stopping.store(true);
  const std::uint64_t one = 1;
  if (write(s.wake.get(), &one, sizeof one) < 0) {
    // The eventfd cannot be full (one write); nothing else can fail here.
  }
  if (s.acceptor.joinable()) s.acceptor.join();
  s.listener.reset();
  // Unlink only the socket this server bound: another daemon may own the path by now.
  struct stat st {};
  if (stat(s.options.path.c_str(), &st) == 0 && st.st_dev == s.dev && st.st_ino == s.ino) {
    unlink(s.options.path.c_str());
  }
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(s.mu);
    for (auto& c : s.connections) {
      // Wakes the connection's blocking poll/recv; it ends its lease and closes the fd.
      if (c->fd.valid()) shutdown(c->fd.get(), SHUT_RDWR);
      threads.push_back(std::move(c->thread));
    }
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  std::lock_guard lock(s.mu);
  s.connections.clear();
}

void UdsServer::Impl::reap_locked(std::vector<std::thread>* finished) {
  for (auto it = connections.begin(); it != connections.end();) {
    if ((*it)->done.load()) {
      finished->push_back(std::move((*it)->thread));
      it = connections.erase(it);
    } else {
      ++it;
    }
  }
}

void UdsServer::Impl::accept_loop() {
  const uid_t self = geteuid();
  while (!stopping.load()) {
    pollfd fds[2] = {{listener.get(), POLLIN, 0}, {wake.get(), POLLIN, 0}};
    const int ready = poll(fds, 2, 1000);
    std::vector<std::thread> finished;
    {
      std::lock_guard lock(mu);
      reap_locked(&finished);
    }
    for (std::thread& t : finished) t.join();
    if (ready < 0) {
      if (errno == EINTR) continue;
      log_line(std::string("accept loop: poll failed: ") + std::strerror(errno));
      return;
    }
    if (stopping.load() || (fds[1].revents & POLLIN)) return;
    if (!(fds[0].revents & POLLIN)) continue;
    UniqueFd fd(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd.valid()) {
      // ECONNABORTED, EMFILE, ...: nothing to serve; EMFILE eases as clients leave.
      if (errno == EMFILE || errno == ENFILE) {
        log_line("accept: out of file descriptors; refusing connections for now");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
      service.count_refused(true);
      continue;  // closes it
    }
    if (cred.uid != self && cred.uid != 0) {
      service.count_refused(true);
      log_line("refused a connection from uid " + std::to_string(cred.uid) + " (pid " +
               std::to_string(cred.pid) + "): only uid " + std::to_string(self) + " may connect");
      continue;
    }
    std::lock_guard lock(mu);
    if (connections.size() >= options.max_clients) {
      service.count_refused(false);
      log_line("refused a connection from pid " + std::to_string(cred.pid) + ": " +
               std::to_string(options.max_clients) + " clients already connected");
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->fd = std::move(fd);
    c->pid = cred.pid;
    c->uid = cred.uid;
    Connection* raw = c.get();
    connections.push_back(std::move(c));
    try {
      raw->thread = std::thread([this, raw] { serve(*raw); });
    } catch (const std::system_error& e) {
      // Out of threads: refuse this client (its fd closes with the entry), keep serving.
      connections.pop_back();
      service.count_refused(false);
      log_line(std::string("refused a connection: cannot start its thread: ") + e.what());
    }
  }
}

void UdsServer::Impl::finish(Connection& c) {
  std::lock_guard lock(mu);
  c.fd.reset();
  c.done.store(true);
}

void UdsServer::Impl::serve(Connection& c) {
  service.client_connected();
  int fd = -1;
  {
    std::lock_guard lock(mu);
    fd = c.fd.get();
  }
  set_timeouts(fd, options.frame_timeout);
  run_session(service, fd, c.pid, options.frame_timeout, spin);
  service.client_disconnected();
  finish(c);
}

}  // namespace pf::ipc
