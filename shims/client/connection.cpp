#include "shims/client/connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/socket_path.h"
#include "ipc/payload.h"
#include "shims/client/local_device.h"

namespace pf::client {
namespace {

using wire::MsgType;

std::string fixed_text(const char* text, std::size_t capacity) {
  return std::string(text, strnlen(text, capacity));
}

// A Unix stream socket connected to `path`, with send / receive timeouts of timeout_ms.
// kUnavailable when nothing listens there (absent, refused, backlog full).
Result<UniqueFd> open_socket(const std::string& path, std::uint32_t timeout_ms) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return PF_ERROR(Code::kInvalidArgument, "socket path '" + path + "' is longer than " +
                                                std::to_string(sizeof addr.sun_path - 1) +
                                                " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return PF_ERRNO("socket(AF_UNIX)");
  if (timeout_ms != 0) {
    timeval tv{};
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = static_cast<suseconds_t>(timeout_ms % 1000) * 1000;
    if (setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
      return PF_ERRNO("setting socket timeouts");
    }
  }
  int rc;
  do {
    rc = ::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == ENOENT || err == ECONNREFUSED || err == EAGAIN || err == ETIMEDOUT ||
        err == ENOTDIR) {
      return PF_ERROR(Code::kUnavailable,
                      "no ProcessFork daemon at " + path + " (" + std::strerror(err) + ")");
    }
    if (err == EACCES || err == EPERM) {
      return PF_ERROR(Code::kPermissionDenied,
                      "cannot connect to " + path + ": " + std::strerror(err));
    }
    return PF_ERRNO_OF("connect to " + path, err);
  }
  return sock;
}

// True when the peer closed its end (the daemon exited or was killed), as opposed to a
// timeout on a live peer.
bool peer_hung_up(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
}

// What must not change across a reconnect: the pool's description (engines keep views and
// layouts of it).
std::string pool_difference(const PoolInfo& was, const PoolInfo& now) {
  auto field = [](const char* name, auto a, auto b) {
    return a == b ? std::string()
                  : std::string(name) + " " + std::to_string(a) + " -> " + std::to_string(b) + "; ";
  };
  std::string d =
      field("layers", was.layers, now.layers) + field("kv_heads", was.kv_heads, now.kv_heads) +
      field("head_dim", was.head_dim, now.head_dim) +
      field("page_tokens", was.page_tokens, now.page_tokens) +
      field("dtype", was.dtype, now.dtype) + field("page_bytes", was.page_bytes, now.page_bytes) +
      field("chunk_bytes", was.chunk_bytes, now.chunk_bytes) +
      field("capacity_bytes", was.capacity_bytes, now.capacity_bytes) +
      field("capacity_pages", was.capacity_pages, now.capacity_pages);
  if (was.daemon_device != now.daemon_device || was.device_uuid != now.device_uuid) {
    d += "device " + was.daemon_device + " " + was.device_uuid + " -> " + now.daemon_device + " " +
         now.device_uuid + "; ";
  }
  if (was.backend != now.backend) d += "backend " + was.backend + " -> " + now.backend + "; ";
  return d;
}

std::string hex_id(std::uint64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(id));
  return buf;
}

}  // namespace

Connection::Connection(UniqueFd sock, std::string socket_path)
    : sock_(std::move(sock)), socket_path_(std::move(socket_path)) {}

Connection::~Connection() {
  // Close the session first: the daemon then drops this lease while we unmap.
  sock_.reset();
  std::lock_guard lock(map_mu_);
  mapping_.reset();
  retired_.reset();
}

Result<std::unique_ptr<Connection>> Connection::connect(const ConnectOptions& options) {
  std::string path = options.socket_path.empty() ? client_socket_path() : options.socket_path;
  PF_ASSIGN_OR_RETURN(UniqueFd sock, open_socket(path, options.timeout_ms));
  std::unique_ptr<Connection> conn(new Connection(std::move(sock), std::move(path)));
  conn->options_ = options;
  conn->spin_us_ = options.spin_us;
  {
    std::lock_guard lock(conn->mu_);
    PF_ASSIGN_OR_RETURN(conn->pool_, conn->hello_locked());
    conn->exclusive_ = ExclusivePages(conn->pool_.page_tokens);
  }
  if (options.attach) PF_TRY(conn->attach());
  return conn;
}

PoolInfo Connection::pool() const {
  std::lock_guard lock(map_mu_);
  return pool_;
}

Status Connection::broken(Status why) {
  if (broken_.is_ok()) broken_ = why;
  sock_.reset();
  // The daemon frees this lease's branches and holds: nothing here is ours to write or
  // release any more.
  for (const auto& [page, count] : held_) lost_held_[page] = pool_.boot_epoch;
  held_.clear();
  std::lock_guard lock(map_mu_);
  protect_locked(exclusive_.clear(), false);
  return why;
}

Status Connection::io_failed(Status why) {
  if (options_.reconnect && sock_.valid() && peer_hung_up(sock_.get())) lost_ = true;
  return broken(std::move(why));
}

Status Connection::revive_locked(bool wait) {
  if (broken_.is_ok()) return Status::ok();
  if (!lost_) {
    return PF_ERROR(Code::kUnavailable,
                    "connection to the daemon is no longer usable: " + broken_.message());
  }
  const std::string why = broken_.message();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::milliseconds(wait ? options_.reconnect_timeout_ms : 0);
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    bool worth_waiting = false;
    Status s = reconnect_once(&worth_waiting);
    if (s.is_ok()) return s;
    // Only an absent, refusing or vanishing daemon is worth waiting for; anything else
    // (another user's socket, a different pool) is the answer.
    if (!worth_waiting || std::chrono::steady_clock::now() >= deadline) {
      broken_ = s;
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      return Status(s.code(), "the daemon at " + socket_path_ + " went away (" + why +
                                  ") and reconnecting failed after " +
                                  std::to_string(waited.count()) + " ms: " + s.message());
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    std::this_thread::sleep_for(std::min(backoff, std::max(left, std::chrono::milliseconds(1))));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

Status Connection::reconnect_once(bool* worth_waiting) {
  Result<UniqueFd> sock = open_socket(socket_path_, options_.timeout_ms);
  if (!sock.is_ok()) {
    *worth_waiting = sock.status().code() == Code::kUnavailable;
    return sock.take_status();
  }
  sock_ = std::move(*sock);
  broken_ = Status::ok();
  lost_ = false;
  next_id_ = 1;
  Result<PoolInfo> hello = hello_locked();
  if (!hello.is_ok()) {
    // The new daemon went away too (lost_ again), or answered what this client cannot use.
    const Status s = hello.take_status();
    *worth_waiting = lost_;
    lost_ = true;
    return broken(s);
  }
  if (const std::string d = pool_difference(pool_, *hello); !d.empty()) {
    // Unavailable to this client (engines hold views and layouts of the old pool): a new
    // client may connect to it.
    lost_ = true;
    return broken(PF_ERROR(Code::kUnavailable,
                           "the daemon at " + socket_path_ + " restarted with a different pool (" +
                               d + "); this client keeps refusing it: close it and connect anew"));
  }
  const bool was_attached = mapping_ != nullptr;
  {
    std::lock_guard lock(map_mu_);
    if (pool_.boot_epoch != hello->boot_epoch) past_epochs_.insert(pool_.boot_epoch);
    past_epochs_.erase(hello->boot_epoch);
    pool_.lease = hello->lease;
    pool_.daemon_pid = hello->daemon_pid;
    pool_.protocol_minor = hello->protocol_minor;
    pool_.boot_epoch = hello->boot_epoch;
    // Pointers into the previous mapping stay valid memory for one more generation.
    retired_ = std::move(mapping_);
    mapped_epoch_ = 0;
    latest_epoch_ = 0;
    stale_ = false;
    exclusive_ = ExclusivePages(pool_.page_tokens);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  if (was_attached) {
    // A failure here does not fail the call: page_ptr() retries the attach and reports it.
    const Status s = attach_locked();
    if (!s.is_ok() && !broken_.is_ok()) return broken_;
  }
  return Status::ok();
}

Status Connection::restarted_during(std::string_view op) const {
  return PF_ERROR(Code::kUnavailable,
                  "the daemon went away during " + std::string(op) +
                      " and this client reconnected (generation " + std::to_string(generation()) +
                      ", daemon boot epoch " + std::to_string(pool_.boot_epoch) + "): whether " +
                      std::string(op) +
                      " took effect in the old daemon is unknown, and whatever that daemon held "
                      "for this client (branches, page holds) is gone; it was not sent again");
}

Status Connection::check_id(std::uint64_t id, std::string_view what) const {
  const std::uint32_t epoch = wire::id_epoch(id);
  if (epoch == pool_.boot_epoch || !past_epochs_.contains(epoch)) return Status::ok();
  return PF_ERROR(Code::kStale, std::string(what) + ": branch " + hex_id(id) +
                                    " belongs to daemon boot epoch " + std::to_string(epoch) +
                                    "; the daemon restarted (epoch " +
                                    std::to_string(pool_.boot_epoch) + ")");
}

Status Connection::check_pages(std::span<const std::uint32_t> pages, std::string_view what) const {
  for (std::uint32_t page : pages) {
    if (held_.contains(page)) continue;
    const auto it = lost_held_.find(page);
    if (it == lost_held_.end()) continue;
    return PF_ERROR(Code::kStale, std::string(what) + ": page " + std::to_string(page) +
                                      " was held by this client's session with daemon boot epoch " +
                                      std::to_string(it->second) +
                                      ", whose holds ended when the daemon restarted (epoch " +
                                      std::to_string(pool_.boot_epoch) + ")");
  }
  return Status::ok();
}

void Connection::hold_pages(std::span<const std::uint32_t> pages) {
  for (std::uint32_t page : pages) {
    ++held_[page];
    lost_held_.erase(page);
  }
}

void Connection::unhold_pages(std::span<const std::uint32_t> pages, bool all) {
  for (std::uint32_t page : pages) {
    const auto it = held_.find(page);
    if (it != held_.end() && (all || --it->second == 0)) held_.erase(it);
  }
}

Result<Connection::Reply> Connection::call_locked(MsgType type, std::span<const std::byte> payload,
                                                  std::size_t max_fds, bool* sent) {
  if (sent != nullptr) *sent = false;
  if (!broken_.is_ok()) {
    return PF_ERROR(Code::kUnavailable,
                    "connection to the daemon is no longer usable: " + broken_.message());
  }
  const std::uint32_t id = next_id_++;
  if (Status s = ipc::send_frame(sock_.get(), type, 0, id, payload); !s.is_ok()) {
    if (s.code() == Code::kInvalidArgument) return s;  // over-long request; nothing was sent
    return io_failed(PF_ERROR(Code::kUnavailable, "sending to the daemon: " + s.message()));
  }
  if (sent != nullptr) *sent = true;
  if (spin_us_ != 0) wait_for_reply();
  ipc::Frame frame;
  if (Status s = ipc::recv_frame(sock_.get(), &frame, wire::kMaxPayload, max_fds); !s.is_ok()) {
    if (s.code() == Code::kProtocol) {
      return broken(PF_ERROR(Code::kProtocol, "reading the daemon's reply: " + s.message()));
    }
    return io_failed(PF_ERROR(Code::kUnavailable, "reading the daemon's reply: " + s.message()));
  }
  if ((frame.header.flags & wire::kFlagReply) == 0 || frame.header.request_id != id ||
      frame.header.type != static_cast<std::uint16_t>(type)) {
    return broken(PF_ERROR(Code::kProtocol, "daemon's reply does not match request " +
                                                std::to_string(id) + " (type " +
                                                std::to_string(frame.header.type) + ", id " +
                                                std::to_string(frame.header.request_id) + ")"));
  }
  Reply reply;
  wire::PayloadReader reader(frame.payload);
  if (Status s = reader.read(&reply.header, "reply header"); !s.is_ok()) return broken(s);
  {
    std::lock_guard lock(map_mu_);
    latest_epoch_ = reply.header.pool_epoch;
  }
  if (type != MsgType::kAttach && type != MsgType::kHello && mapping_ != nullptr) {
    // Every reply, refusals included, says how many chunks the pool has: chunks the daemon
    // released are unmapped before the caller sees the reply, without a round trip, so this
    // process stops pinning their memory. A failure leaves them mapped until the next one.
    drop_released_locked(reply.header.pool_chunks).ignore();
  }
  if (reply.header.code != 0) {
    std::string message;
    if (Status s = reader.read_text(reply.header.message_bytes, &message, "error message");
        !s.is_ok()) {
      return broken(s);
    }
    if (reply.header.code < 0 || reply.header.code > static_cast<int>(kLastWireCode)) {
      return broken(PF_ERROR(Code::kProtocol, "daemon answered with unknown status code " +
                                                  std::to_string(reply.header.code) + ": " +
                                                  message));
    }
    if (!frame.fds.empty()) return broken(PF_ERROR(Code::kProtocol, "error reply carried fds"));
    return PF_ERROR(static_cast<Code>(reply.header.code), message);
  }
  reply.payload.assign(frame.payload.begin() + sizeof(wire::ReplyHeader), frame.payload.end());
  reply.fds = std::move(frame.fds);
  if (type != MsgType::kAttach && type != MsgType::kHello && mapping_ != nullptr &&
      reply.header.pool_epoch != mapped_epoch_) {
    // Bring the mapping up to date before the caller sees page ids from this reply. A
    // failure does not fail the op (it happened): page_ptr() reports it.
    const Status s = attach_locked();
    if (!s.is_ok() && !broken_.is_ok()) return broken_;
  }
  return reply;
}

void Connection::wait_for_reply() const {
  // Busy-wait briefly for the reply so that a quick answer finds this thread running
  // instead of waking it (one scheduler wake-up less per round trip). Bounded; the
  // blocking receive that follows handles everything else.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
  char byte;
  do {
    if (::recv(sock_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) != -1 || errno != EAGAIN) return;
  } while (std::chrono::steady_clock::now() < deadline);
}

Result<PoolInfo> Connection::hello_locked() {
  msg::Hello req;
  req.head.client_pid = static_cast<std::uint32_t>(getpid());
  PF_ASSIGN_OR_RETURN(Reply reply, call_locked(MsgType::kHello, wire::encode(req)));
  // HELLO's reply only ever grows: read the fields this library knows.
  wire::PayloadReader reader(reply.payload);
  wire::HelloReply hr;
  PF_TRY(reader.read(&hr, "HelloReply"));
  if (hr.major != wire::kVersionMajor) {
    return broken(PF_ERROR(Code::kUnsupported, "daemon speaks protocol " +
                                                   std::to_string(hr.major) + "." +
                                                   std::to_string(hr.minor) + ", this library " +
                                                   std::to_string(wire::kVersionMajor) + "." +
                                                   std::to_string(wire::kVersionMinor)));
  }
  if (hr.page_bytes == 0 || hr.chunk_bytes == 0 || hr.geometry.page_tokens == 0) {
    return broken(PF_ERROR(Code::kProtocol, "daemon's HELLO describes an empty pool geometry"));
  }
  PoolInfo info;
  info.protocol_major = hr.major;
  info.protocol_minor = std::min(hr.minor, wire::kVersionMinor);
  info.daemon_pid = hr.daemon_pid;
  info.lease = hr.lease;
  // 3.2 names the boot epoch; before, it is the lease id's (runtime/ids.h).
  info.boot_epoch = wire::id_epoch(hr.lease);
  wire::HelloSession session;
  if (hr.minor >= wire::kBootEpochMinor && reader.remaining() >= sizeof session) {
    PF_TRY(reader.read(&session, "HelloSession"));
    info.boot_epoch = session.boot_epoch;
  }
  info.layers = hr.geometry.layers;
  info.kv_heads = hr.geometry.kv_heads;
  info.head_dim = hr.geometry.head_dim;
  info.page_tokens = hr.geometry.page_tokens;
  info.dtype = hr.geometry.dtype;
  info.page_bytes = hr.page_bytes;
  info.chunk_bytes = hr.chunk_bytes;
  info.capacity_bytes = hr.capacity_bytes;
  info.capacity_pages = hr.capacity_pages;
  info.backend = fixed_text(hr.backend, sizeof hr.backend);
  info.daemon_device = fixed_text(hr.device, sizeof hr.device);
  // 3.3: the device's machine-wide names; the ordinal above is the daemon's own.
  wire::HelloDevice device;
  if (hr.minor >= wire::kDeviceIdentityMinor && reader.remaining() >= sizeof device) {
    PF_TRY(reader.read(&device, "HelloDevice"));
    info.device_uuid = fixed_text(device.uuid, sizeof device.uuid);
    info.device_pci_bus_id = fixed_text(device.pci_bus_id, sizeof device.pci_bus_id);
  }
  LocalDevice local =
      resolve_local_device(info.daemon_device, info.device_uuid, info.device_pci_bus_id);
  info.device = std::move(local.name);
  info.device_status = std::move(local.status);
  return info;
}

Status Connection::attach() {
  std::lock_guard lock(mu_);
  PF_TRY(revive_locked(false));
  return attach_locked();
}

Status Connection::attach_locked() {
  if (mapping_ == nullptr) {
    PF_TRY(pool_.device_status);  // the daemon's GPU is not usable in this process
    PF_ASSIGN_OR_RETURN(auto mapping, PoolMapping::create(pool_.device, pool_.capacity_bytes,
                                                          pool_.chunk_bytes, pool_.page_bytes));
    std::lock_guard lock(map_mu_);
    mapping_ = std::move(mapping);
    stale_ = true;
  }
  // Windows of at most 253 chunks; if the pool changes between windows, start over.
  constexpr int kAttempts = 16;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::uint32_t first = 0;
    std::uint32_t total = 0;
    std::uint64_t epoch = 0;
    bool restart = false;
    do {
      msg::Attach req;
      req.head.first_chunk = first;
      req.head.max_chunks = wire::kMaxChunksPerAttachReply;
      auto reply = call_locked(MsgType::kAttach, wire::encode(req), wire::kMaxChunksPerAttachReply);
      if (!reply.is_ok()) {
        if (first > 0) {  // earlier windows of this attach were applied
          std::lock_guard lock(map_mu_);
          stale_ = true;
        }
        return reply.take_status();
      }
      msg::AttachAnswer answer;
      Status s = wire::decode(reply->payload, &answer, "AttachReply");
      const wire::AttachReply& ar = answer.head;
      const std::vector<std::uint64_t>& serials = answer.serials;
      if (s.is_ok() && (ar.first_chunk != first || ar.n_fds != reply->fds.size() ||
                        std::size_t{ar.first_chunk} + ar.n_fds > ar.total_chunks ||
                        (ar.n_fds == 0 && first < ar.total_chunks))) {
        s = PF_ERROR(Code::kProtocol, "inconsistent attach reply (asked from chunk " +
                                          std::to_string(first) + ", got first " +
                                          std::to_string(ar.first_chunk) + ", " +
                                          std::to_string(ar.n_fds) + " announced, " +
                                          std::to_string(reply->fds.size()) + " fds, total " +
                                          std::to_string(ar.total_chunks) + ")");
      }
      if (!s.is_ok()) return broken(s);
      if (first == 0) {
        epoch = ar.pool_epoch;
      } else if (ar.pool_epoch != epoch) {
        restart = true;
        break;
      }
      total = ar.total_chunks;
      {
        std::lock_guard lock(map_mu_);
        s = mapping_->apply(first, reply->fds, serials, exclusive_.pages());
        if (!s.is_ok()) {
          stale_ = true;
          return s;
        }
      }
      first += ar.n_fds;
    } while (first < total);
    if (restart) continue;
    std::lock_guard lock(map_mu_);
    if (Status s = mapping_->truncate_to(total); !s.is_ok()) {
      stale_ = true;
      return s;
    }
    mapped_epoch_ = epoch;
    stale_ = false;
    return Status::ok();
  }
  // Every window applied was consistent in itself but the set may mix epochs.
  const Status s =
      PF_ERROR(Code::kUnavailable, "the pool kept changing while attaching; try again");
  std::lock_guard lock(map_mu_);
  stale_ = true;
  return s;
}

Status Connection::drop_released_locked(std::uint32_t pool_chunks) {
  std::lock_guard lock(map_mu_);
  if (mapping_ == nullptr || mapping_->chunk_span() <= pool_chunks) return Status::ok();
  // One past the last chunk that page `p` touches (a page may straddle two chunks).
  auto chunks_through = [this](std::uint32_t p) {
    return ((std::size_t{p} + 1) * pool_.page_bytes + pool_.chunk_bytes - 1) / pool_.chunk_bytes;
  };
  std::size_t keep = pool_chunks;
  for (const std::uint32_t page : exclusive_.pages()) keep = std::max(keep, chunks_through(page));
  for (const auto& [page, holds] : held_) keep = std::max(keep, chunks_through(page));
  return mapping_->truncate_to(static_cast<std::uint32_t>(keep));
}

MappingInfo Connection::mapping_info() const {
  std::lock_guard lock(map_mu_);
  MappingInfo info;
  info.attached = mapping_ != nullptr;
  info.epoch = mapped_epoch_;
  info.latest_epoch = latest_epoch_;
  if (mapping_ != nullptr) {
    info.mapped_chunks = mapping_->mapped_chunks();
    info.mapped_bytes = mapping_->mapped_chunks() * mapping_->chunk_bytes();
    info.base = mapping_->base();
  }
  return info;
}

Result<std::byte*> Connection::page_ptr(std::uint32_t page) {
  if (page >= pool_.capacity_pages) {
    return PF_ERROR(Code::kInvalidArgument, "page " + std::to_string(page) +
                                                " is beyond the pool's capacity of " +
                                                std::to_string(pool_.capacity_pages) + " pages");
  }
  const std::size_t offset = std::size_t{page} * pool_.page_bytes;
  {
    std::lock_guard lock(map_mu_);
    if (mapping_ != nullptr && !stale_ && mapping_->covers(offset, pool_.page_bytes)) {
      return mapping_->base() + offset;
    }
  }
  // Not mapped (yet): catch up with the daemon's pool and look again.
  std::lock_guard lock(mu_);
  PF_TRY(attach_locked());
  std::lock_guard map_lock(map_mu_);
  if (!mapping_->covers(offset, pool_.page_bytes)) {
    return PF_ERROR(Code::kNotFound, "page " + std::to_string(page) +
                                         " is not in any chunk of the daemon's pool (epoch " +
                                         std::to_string(mapped_epoch_) + ", " +
                                         std::to_string(mapping_->mapped_chunks()) + " chunks)");
  }
  return mapping_->base() + offset;
}

std::size_t Connection::max_runs(std::size_t n_tokens) const {
  // The tokens start somewhere in the last page and cover consecutive slots: at most one
  // run for the partial page, one per whole page, one for the remainder.
  return n_tokens == 0 ? 0 : n_tokens / pool_.page_tokens + 2;
}

}  // namespace pf::client
