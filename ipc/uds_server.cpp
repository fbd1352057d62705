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

#include "ipc/fd_passing.h"
#include "ipc/frame_io.h"
#include "ipc/log.h"
#include "ipc/payload.h"
#include "ipc/wire.h"

namespace pf::ipc {
namespace {

using wire::MsgType;
using wire::PayloadReader;
using wire::PayloadWriter;

constexpr std::size_t kMaxErrorMessage = 4096;
static_assert(sizeof(rt::Sha256) == wire::kKeyBytes);

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

template <typename T>
void copy_cstr(T& dst, std::string_view src) {
  static_assert(sizeof(T) > 1);
  const std::size_t n = std::min(src.size(), sizeof(T) - 1);
  std::memcpy(dst, src.data(), n);
  std::memset(dst + n, 0, sizeof(T) - n);
}

wire::GeometryWire geometry_wire(const rt::Geometry& g) {
  wire::GeometryWire w;
  w.layers = g.layers;
  w.kv_heads = g.kv_heads;
  w.head_dim = g.head_dim;
  w.page_tokens = g.page_tokens;
  w.dtype = static_cast<std::uint8_t>(g.dtype);
  return w;
}

// The JSON ops of wire.h and the Op each one runs.
bool json_op_of(MsgType type, Op* op) {
  switch (type) {
    case MsgType::kMerge:
      *op = Op::kMerge;
      return true;
    case MsgType::kDiff:
      *op = Op::kDiff;
      return true;
    case MsgType::kLog:
      *op = Op::kLog;
      return true;
    case MsgType::kManifest:
      *op = Op::kManifest;
      return true;
    case MsgType::kSnapshots:
      *op = Op::kSnapshots;
      return true;
    case MsgType::kUnpin:
      *op = Op::kUnpin;
      return true;
    case MsgType::kRefSet:
      *op = Op::kRefSet;
      return true;
    case MsgType::kRefGet:
      *op = Op::kRefGet;
      return true;
    case MsgType::kRefDelete:
      *op = Op::kRefDelete;
      return true;
    case MsgType::kRefs:
      *op = Op::kRefs;
      return true;
    case MsgType::kPool:
      *op = Op::kPool;
      return true;
    case MsgType::kGc:
      *op = Op::kGc;
      return true;
    case MsgType::kHealth:
      *op = Op::kHealth;
      return true;
    case MsgType::kBranches:
      *op = Op::kBranches;
      return true;
    case MsgType::kBranchInfo:
      *op = Op::kBranchInfo;
      return true;
    default:
      return false;
  }
}

// What a handler produces: a status, and on success the reply body (after the ReplyHeader)
// and any fds to attach.
struct Reply {
  Status status;
  PayloadWriter body;
  std::vector<UniqueFd> fds;
};

Reply fail(Status s) {
  Reply r;
  r.status = std::move(s);
  return r;
}

// Reads one text field (a name, CID or ref) of at most wire::kMaxNameBytes.
Status read_name(PayloadReader& in, std::uint32_t bytes, std::string* out, const char* what) {
  if (bytes > wire::kMaxNameBytes) {
    return PF_ERROR(Code::kInvalidArgument, std::string(what) + " of " + std::to_string(bytes) +
                                                " bytes exceeds " +
                                                std::to_string(wire::kMaxNameBytes));
  }
  return in.read_text(bytes, out, what);
}

// Keyed pages: the count of keys or page ids in one request.
Status check_keys(std::uint32_t n, const char* what) {
  if (n > wire::kMaxKeysPerRequest) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::to_string(n) + " " + what + " exceed the limit of " +
                        std::to_string(wire::kMaxKeysPerRequest) + " per request");
  }
  return Status::ok();
}

Status check_flag(std::uint8_t v, const char* what) {
  if (v > 1) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::string(what) + " must be 0 or 1, got " + std::to_string(v));
  }
  return Status::ok();
}

// Page ids after a PagesReply header.
void put_pages(PayloadWriter& w, const std::vector<rt::PageId>& pages) {
  wire::PagesReply out;
  out.n_pages = static_cast<std::uint32_t>(pages.size());
  w.put(out);
  w.put_array(std::span<const rt::PageId>(pages));
}

Status check_tokens(std::uint32_t n) {
  if (n > wire::kMaxTokensPerRequest) {
    return PF_ERROR(Code::kInvalidArgument, std::to_string(n) + " tokens exceed the limit of " +
                                                std::to_string(wire::kMaxTokensPerRequest) +
                                                " per request");
  }
  return Status::ok();
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

  Impl(Service& s, UdsOptions o) : service(s), options(std::move(o)) {}

  void accept_loop();
  void reap_locked(std::vector<std::thread>* finished);
  void serve(Connection& c);
  void finish(Connection& c);

  // One connection's session; returns when the connection must end.
  void session(int fd, pid_t pid);
  // Reads one frame. Returns false when the connection must end (after answering a framing
  // error when that is still possible).
  bool read_frame(int fd, Frame* frame);
  bool send_reply(int fd, std::uint16_t type, std::uint32_t request_id, Reply reply);
  Reply handle(rt::LeaseId lease, const Frame& frame);
  Reply attach(PayloadReader& in);
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
  session(fd, c.pid);
  service.client_disconnected();
  finish(c);
}

void UdsServer::Impl::session(int fd, pid_t pid) {
  Frame hello;
  if (!read_frame(fd, &hello)) return;
  const std::uint16_t hello_type = hello.header.type;
  if (hello_type != static_cast<std::uint16_t>(MsgType::kHello)) {
    service.count_protocol_error();
    send_reply(fd, hello_type, hello.header.request_id,
               fail(PF_ERROR(Code::kProtocol, "the first frame must be HELLO (type 1), got type " +
                                                  std::to_string(hello_type))));
    return;
  }
  OpTimer timer(service.metrics(), Op::kHello);
  wire::HelloRequest req;
  PayloadReader in(hello.payload);
  // HELLO's layout never changes; a later minor may append fields, which this one ignores.
  if (Status s = in.read(&req, "HelloRequest"); !s.is_ok()) {
    service.count_protocol_error();
    send_reply(fd, hello_type, hello.header.request_id, fail(std::move(s)));
    return;
  }
  if (req.major != wire::kVersionMajor) {
    send_reply(fd, hello_type, hello.header.request_id,
               fail(PF_ERROR(Code::kUnsupported, "protocol version " + std::to_string(req.major) +
                                                     "." + std::to_string(req.minor) +
                                                     " is not supported; this daemon " + "speaks " +
                                                     std::to_string(wire::kVersionMajor) + "." +
                                                     std::to_string(wire::kVersionMinor))));
    return;
  }
  rt::Runtime& runtime = service.runtime();
  const rt::LeaseId lease = service.open_lease(pid);
  struct LeaseGuard {
    Service& service;
    rt::LeaseId lease;
    ~LeaseGuard() { service.end_lease(lease); }
  } guard{service, lease};

  const rt::PoolLayout layout = runtime.pool_layout();
  wire::HelloReply hr;
  hr.daemon_pid = static_cast<std::uint32_t>(getpid());
  hr.lease = lease;
  hr.geometry = geometry_wire(runtime.geometry());
  hr.page_bytes = layout.page_bytes;
  hr.chunk_bytes = layout.chunk_bytes;
  hr.capacity_bytes = layout.capacity_bytes;
  hr.capacity_pages = layout.capacity_pages;
  copy_cstr(hr.backend, service.identity().backend);
  copy_cstr(hr.device, service.identity().device);
  Reply reply;
  reply.body.put(hr);
  timer.finish(true);
  if (!send_reply(fd, hello_type, hello.header.request_id, std::move(reply))) return;

  for (;;) {
    Frame frame;
    if (!read_frame(fd, &frame)) return;
    Reply r;
    try {
      r = handle(lease, frame);
    } catch (const std::exception& e) {
      // Nothing in handle() is meant to throw (allocation failure is the one way); the
      // client gets an error instead of the daemon dying.
      r = fail(PF_ERROR(Code::kInternal, std::string("unexpected exception: ") + e.what()));
    }
    if (!send_reply(fd, frame.header.type, frame.header.request_id, std::move(r))) return;
  }
}

bool UdsServer::Impl::read_frame(int fd, Frame* frame) {
  // Idle between frames for as long as the client likes; stop() wakes this with shutdown().
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int n = poll(&p, 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (p.revents & POLLIN) break;
    return false;  // POLLHUP / POLLERR without data
  }
  std::vector<UniqueFd> fds;
  Status s = recv_with_fds(fd, std::as_writable_bytes(std::span(&frame->header, 1)),
                           kMaxFdsPerMessage, &fds);
  if (!s.is_ok()) {
    if (s.code() == Code::kProtocol) {
      // A control message the kernel truncated or that was not SCM_RIGHTS (its fds are
      // closed already): the header never arrived intact, so answer with request id 0.
      service.count_protocol_error();
      send_reply(fd, 0, 0, fail(std::move(s)));
    }
    return false;  // peer closed, timed out mid-header, or the framing broke
  }
  const wire::FrameHeader& h = frame->header;
  if (!fds.empty()) {
    const std::size_t n = fds.size();
    fds.clear();  // closes them: a client never hands the daemon a descriptor
    service.count_protocol_error();
    send_reply(fd, h.type, h.request_id,
               fail(PF_ERROR(Code::kProtocol, "clients must not send file descriptors (got " +
                                                  std::to_string(n) + ")")));
    return false;
  }
  if (h.magic != wire::kMagic) {
    service.count_protocol_error();
    send_reply(fd, h.type, h.request_id,
               fail(PF_ERROR(Code::kProtocol, "bad frame magic (not a ProcessFork client?)")));
    return false;
  }
  if (h.payload_bytes > wire::kMaxPayload) {
    service.count_protocol_error();
    send_reply(
        fd, h.type, h.request_id,
        fail(PF_ERROR(Code::kProtocol, "frame payload of " + std::to_string(h.payload_bytes) +
                                           " bytes exceeds the limit of " +
                                           std::to_string(wire::kMaxPayload))));
    return false;
  }
  frame->payload.resize(h.payload_bytes);
  if (!frame->payload.empty()) {
    std::vector<UniqueFd> late;
    Status p = recv_with_fds(fd, frame->payload, 0, &late);
    if (!p.is_ok()) {
      if (p.code() == Code::kProtocol) {
        service.count_protocol_error();
        send_reply(fd, h.type, h.request_id, fail(std::move(p)));
      }
      return false;
    }
  }
  return true;
}

bool UdsServer::Impl::send_reply(int fd, std::uint16_t type, std::uint32_t request_id,
                                 Reply reply) {
  // The epoch is read after the operation: page ids in the body lie inside its chunks.
  const rt::PoolLayout layout = service.runtime().pool_layout();
  wire::ReplyHeader rh;
  rh.code = static_cast<std::int32_t>(reply.status.code());
  rh.pool_epoch = layout.epoch;
  rh.pool_chunks = static_cast<std::uint32_t>(layout.chunk_serials.size());
  PayloadWriter out;
  std::vector<int> raw_fds;
  if (reply.status.is_ok()) {
    out.put(rh);
    out.put_array(reply.body.bytes());
    for (const UniqueFd& f : reply.fds) raw_fds.push_back(f.get());
  } else {
    std::string message = reply.status.message();
    if (message.size() > kMaxErrorMessage) message.resize(kMaxErrorMessage);
    rh.message_bytes = static_cast<std::uint32_t>(message.size());
    out.put(rh);
    out.put_text(message);
  }
  Status s = send_frame(fd, static_cast<MsgType>(type), wire::kFlagReply, request_id, out.bytes(),
                        raw_fds);
  // The daemon's copies of exported fds close here (reply.fds): the client owns its own.
  return s.is_ok();
}

Reply UdsServer::Impl::attach(PayloadReader& in) {
  OpTimer timer(service.metrics(), Op::kAttach);
  wire::AttachRequest req;
  if (Status s = in.read(&req, "AttachRequest"); !s.is_ok()) return fail(std::move(s));
  if (Status s = in.finish("AttachRequest"); !s.is_ok()) return fail(std::move(s));
  rt::Runtime& runtime = service.runtime();
  // The pool may grow or shrink while chunks are exported: retry until the epoch read
  // before and after the exports agree, so fds, serials and epoch describe one pool.
  for (int attempt = 0; attempt < 8; ++attempt) {
    const rt::PoolLayout before = runtime.pool_layout();
    const auto total = static_cast<std::uint32_t>(before.chunk_serials.size());
    if (req.first_chunk > total) {
      return fail(PF_ERROR(Code::kInvalidArgument,
                           "first_chunk " + std::to_string(req.first_chunk) +
                               " is past the pool's " + std::to_string(total) + " chunks"));
    }
    const std::uint32_t n = std::min<std::uint32_t>(
        {req.max_chunks, wire::kMaxChunksPerAttachReply, total - req.first_chunk});
    Reply reply;
    std::vector<std::uint64_t> serials;
    bool raced = false;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::uint64_t serial = 0;
      Result<UniqueFd> fd = runtime.export_chunk(req.first_chunk + i, &serial);
      if (!fd.is_ok()) {
        raced = runtime.pool_layout().epoch != before.epoch;
        if (!raced) return fail(fd.take_status());
        break;
      }
      reply.fds.push_back(std::move(*fd));
      serials.push_back(serial);
    }
    if (raced || runtime.pool_layout().epoch != before.epoch) continue;
    wire::AttachReply ar;
    ar.pool_epoch = before.epoch;
    ar.total_chunks = total;
    ar.first_chunk = req.first_chunk;
    ar.n_fds = n;
    reply.body.put(ar);
    reply.body.put_array(std::span<const std::uint64_t>(serials));
    timer.finish(true);
    return reply;
  }
  return fail(PF_ERROR(Code::kUnavailable, "the pool kept changing during attach; retry"));
}

Reply UdsServer::Impl::handle(rt::LeaseId lease, const Frame& frame) {
  const auto type = static_cast<MsgType>(frame.header.type);
  PayloadReader in(frame.payload);
  Reply reply;
  auto protocol = [&](Status s) {
    if (s.code() == Code::kProtocol) service.count_protocol_error();
    return fail(std::move(s));
  };
#define PF_IPC_READ(expr)                              \
  do {                                                 \
    if (Status pf_ipc_s = (expr); !pf_ipc_s.is_ok()) { \
      return protocol(std::move(pf_ipc_s));            \
    }                                                  \
  } while (0)

  switch (type) {
    case MsgType::kHello:
      service.count_protocol_error();
      return fail(PF_ERROR(Code::kProtocol, "HELLO was already received on this connection"));

    case MsgType::kAttach:
      return attach(in);

    case MsgType::kBranchCreate: {
      wire::BranchCreateRequest req;
      std::vector<rt::Token> tokens;
      PF_IPC_READ(in.read(&req, "BranchCreateRequest"));
      PF_IPC_READ(check_tokens(req.n_tokens));
      PF_IPC_READ(in.read_array(req.n_tokens, &tokens, "BranchCreateRequest tokens"));
      PF_IPC_READ(in.finish("BranchCreateRequest"));
      Result<rt::NewBranch> b = service.create_branch(lease, tokens);
      if (!b.is_ok()) return fail(b.take_status());
      wire::BranchCreateReply out;
      out.branch = b->id.value;
      out.n_tokens = b->n_tokens;
      out.reused_tokens = b->reused_tokens;
      reply.body.put(out);
      return reply;
    }

    case MsgType::kAppend: {
      wire::AppendRequest req;
      std::vector<rt::Token> tokens;
      PF_IPC_READ(in.read(&req, "AppendRequest"));
      PF_IPC_READ(check_tokens(req.n_tokens));
      PF_IPC_READ(in.read_array(req.n_tokens, &tokens, "AppendRequest tokens"));
      PF_IPC_READ(in.finish("AppendRequest"));
      Result<rt::AppendResult> a = service.append(lease, rt::BranchId{req.branch}, tokens);
      if (!a.is_ok()) return fail(a.take_status());
      wire::AppendReply out;
      out.first_token = a->first_token;
      out.pages_added = a->pages_added;
      out.copied_page = a->copied_page ? 1 : 0;
      out.n_runs = static_cast<std::uint32_t>(a->runs.size());
      reply.body.put(out);
      for (const rt::WriteRun& run : a->runs) {
        wire::WriteRunWire w;
        w.page = run.page;
        w.first_slot = run.first_slot;
        w.count = run.count;
        w.first_token = run.first_token;
        reply.body.put(w);
      }
      return reply;
    }

    case MsgType::kCommit:
    case MsgType::kBranchFree:
    case MsgType::kDetach: {
      wire::BranchRequest req;
      PF_IPC_READ(in.read(&req, "BranchRequest"));
      PF_IPC_READ(in.finish("BranchRequest"));
      const rt::BranchId b{req.branch};
      Status s = type == MsgType::kCommit       ? service.commit(lease, b)
                 : type == MsgType::kBranchFree ? service.free_branch(lease, b)
                                                : service.detach(lease, b);
      if (!s.is_ok()) return fail(std::move(s));
      return reply;
    }

    case MsgType::kTruncate: {
      wire::TruncateRequest req;
      PF_IPC_READ(in.read(&req, "TruncateRequest"));
      PF_IPC_READ(in.finish("TruncateRequest"));
      if (Status s = service.truncate(lease, rt::BranchId{req.branch}, req.n_tokens); !s.is_ok()) {
        return fail(std::move(s));
      }
      return reply;
    }

    case MsgType::kBranchView: {
      wire::BranchViewRequest req;
      PF_IPC_READ(in.read(&req, "BranchViewRequest"));
      PF_IPC_READ(in.finish("BranchViewRequest"));
      const rt::BranchId b{req.branch};
      Result<rt::BranchInfo> info = service.runtime().branch_info(b);
      if (!info.is_ok()) return fail(info.take_status());
      Result<rt::BranchView> view = service.branch_view(b);
      if (!view.is_ok()) return fail(view.take_status());
      wire::BranchViewReply out;
      out.branch = req.branch;
      out.owner = info->owner;
      // Tokens and pages come from the one view, so they agree even under a racing append.
      out.n_tokens = view->tokens.size();
      out.n_pages = static_cast<std::uint32_t>(view->pages.size());
      out.fill_in_last_page = view->fill_in_last_page;
      out.with_tokens = req.with_tokens != 0 ? 1 : 0;
      reply.body.put(out);
      reply.body.put_array(std::span<const rt::PageId>(view->pages));
      if (out.with_tokens) reply.body.put_array(std::span<const rt::Token>(view->tokens));
      return reply;
    }

    case MsgType::kSnapshot: {
      wire::SnapshotRequest req;
      std::string name;
      PF_IPC_READ(in.read(&req, "SnapshotRequest"));
      PF_IPC_READ(read_name(in, req.name_bytes, &name, "snapshot name"));
      PF_IPC_READ(in.finish("SnapshotRequest"));
      Result<rt::SnapshotInfo> s = service.snapshot(lease, rt::BranchId{req.branch}, name);
      if (!s.is_ok()) return fail(s.take_status());
      wire::SnapshotReply out;
      copy_cstr(out.cid, s->cid);
      out.n_tokens = s->n_tokens;
      out.n_pages = s->n_pages;
      out.created = s->created ? 1 : 0;
      reply.body.put(out);
      return reply;
    }

    case MsgType::kFork: {
      wire::ForkRequest req;
      wire::SourceWire src;
      std::string name;
      PF_IPC_READ(in.read(&req, "ForkRequest"));
      PF_IPC_READ(in.read(&src, "ForkRequest source"));
      if (src.kind == 1) PF_IPC_READ(read_name(in, src.name_bytes, &name, "fork source name"));
      PF_IPC_READ(in.finish("ForkRequest"));
      if (src.kind > 1) {
        return fail(
            PF_ERROR(Code::kInvalidArgument, "source kind " + std::to_string(src.kind) +
                                                 " is neither 0 (branch) nor 1 (CID or ref)"));
      }
      if (req.n < 1 || req.n > rt::kMaxForkChildren) {
        return fail(PF_ERROR(Code::kInvalidArgument, "n must be in 1.." +
                                                         std::to_string(rt::kMaxForkChildren) +
                                                         ", got " + std::to_string(req.n)));
      }
      const rt::Source source =
          src.kind == 0 ? rt::Source(rt::BranchId{src.branch}) : rt::Source(std::move(name));
      Result<rt::ForkResult> f = service.fork(lease, source, req.n);
      if (!f.is_ok()) return fail(f.take_status());
      wire::ForkReply out;
      copy_cstr(out.source, f->source);
      out.n = static_cast<std::uint32_t>(f->branches.size());
      reply.body.put(out);
      for (rt::BranchId b : f->branches) reply.body.put(b.value);
      return reply;
    }

    case MsgType::kCheckout: {
      wire::CheckoutRequest req;
      std::string name;
      PF_IPC_READ(in.read(&req, "CheckoutRequest"));
      PF_IPC_READ(read_name(in, req.name_bytes, &name, "checkout name"));
      PF_IPC_READ(in.finish("CheckoutRequest"));
      Result<CheckoutAnswer> c = service.checkout(lease, name);
      if (!c.is_ok()) return fail(c.take_status());
      wire::CheckoutReply out;
      out.branch = c->branch.value;
      copy_cstr(out.cid, c->cid);
      reply.body.put(out);
      return reply;
    }

    case MsgType::kPagesLookupKeys: {
      wire::PagesLookupKeysRequest req;
      std::vector<rt::Sha256> keys;
      PF_IPC_READ(in.read(&req, "PagesLookupKeysRequest"));
      PF_IPC_READ(check_keys(req.n_keys, "keys"));
      PF_IPC_READ(in.read_array(req.n_keys, &keys, "PagesLookupKeysRequest keys"));
      PF_IPC_READ(in.finish("PagesLookupKeysRequest"));
      PF_IPC_READ(check_flag(req.hold, "hold"));
      Result<std::vector<rt::PageId>> pages = service.lookup_keys(lease, keys, req.hold != 0);
      if (!pages.is_ok()) return fail(pages.take_status());
      put_pages(reply.body, *pages);
      return reply;
    }

    case MsgType::kPagesAlloc: {
      wire::PagesAllocRequest req;
      PF_IPC_READ(in.read(&req, "PagesAllocRequest"));
      PF_IPC_READ(in.finish("PagesAllocRequest"));
      PF_IPC_READ(check_keys(req.n_pages, "pages"));
      Result<std::vector<rt::PageId>> pages = service.alloc_pages(lease, req.n_pages);
      if (!pages.is_ok()) return fail(pages.take_status());
      put_pages(reply.body, *pages);
      return reply;
    }

    case MsgType::kPagesPublish: {
      wire::PagesPublishRequest req;
      std::vector<rt::Sha256> keys;
      std::vector<rt::PageId> pages;
      PF_IPC_READ(in.read(&req, "PagesPublishRequest"));
      PF_IPC_READ(check_keys(req.n, "keys"));
      PF_IPC_READ(in.read_array(req.n, &keys, "PagesPublishRequest keys"));
      PF_IPC_READ(in.read_array(req.n, &pages, "PagesPublishRequest pages"));
      PF_IPC_READ(in.finish("PagesPublishRequest"));
      PF_IPC_READ(check_flag(req.has_parent, "has_parent"));
      rt::Sha256 parent{};
      std::memcpy(parent.data(), req.parent_key, parent.size());
      Result<std::size_t> added =
          service.publish_pages(lease, keys, pages, req.has_parent != 0 ? &parent : nullptr);
      if (!added.is_ok()) return fail(added.take_status());
      wire::PagesPublishReply out;
      out.new_keys = static_cast<std::uint32_t>(*added);
      reply.body.put(out);
      return reply;
    }

    case MsgType::kPagesRelease: {
      wire::PagesReleaseRequest req;
      std::vector<rt::PageId> pages;
      PF_IPC_READ(in.read(&req, "PagesReleaseRequest"));
      PF_IPC_READ(check_keys(req.n_pages, "pages"));
      PF_IPC_READ(in.read_array(req.n_pages, &pages, "PagesReleaseRequest pages"));
      PF_IPC_READ(in.finish("PagesReleaseRequest"));
      if (Status s = service.release_pages(lease, pages); !s.is_ok()) return fail(std::move(s));
      return reply;
    }

    default:
      break;
  }
#undef PF_IPC_READ

  Op op;
  if (json_op_of(type, &op)) {
    const std::string_view text(reinterpret_cast<const char*>(frame.payload.data()),
                                frame.payload.size());
    Result<std::string> answer = service.call_text(op, lease, text);
    if (!answer.is_ok()) return fail(answer.take_status());
    reply.body.put_text(*answer);
    return reply;
  }
  service.count_protocol_error();
  return fail(PF_ERROR(Code::kUnsupported,
                       "unknown message type " + std::to_string(frame.header.type) +
                           " (this daemon speaks protocol " + std::to_string(wire::kVersionMajor) +
                           "." + std::to_string(wire::kVersionMinor) + ")"));
}

}  // namespace pf::ipc
