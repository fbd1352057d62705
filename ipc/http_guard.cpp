#include "ipc/http_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>
#include <thread>

#include "ipc/api_json.h"

namespace pf::ipc {

namespace {

using Clock = std::chrono::steady_clock;

thread_local ConnectionContext* t_current = nullptr;
thread_local bool t_refusing = false;

// The address and port of either end of a connected socket ("" and 0 when unknown).
void endpoint_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  ip.clear();
  port = 0;
  if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) != 0) return;
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&addr);
    if (inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text) != nullptr) ip = text;
    port = ntohs(v4->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    if (inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text) != nullptr) ip = text;
    port = ntohs(v6->sin6_port);
  }
}

// The 503 for a connection beyond the caps: best effort, never blocks (MSG_DONTWAIT).
void send_refusal(int fd) {
  const std::string body =
      api::error_body("unavailable", "too many HTTP connections (all busy); retry later");
  const std::string answer =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  (void)!send(fd, answer.data(), answer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

// Ends a connection whose last request may have left bytes unread (an answer sent before its
// body was read): closing with unread data would make the kernel send RST, which can destroy
// the answer before the client reads it. So: FIN first, then read and drop what still comes,
// until EOF, for at most kLingerTime or kLingerBytes; the caller closes.
void linger(int fd) {
  constexpr auto kLingerTime = std::chrono::seconds(1);
  constexpr std::size_t kLingerBytes = 4u << 20;
  ::shutdown(fd, SHUT_WR);
  const Clock::time_point deadline = Clock::now() + kLingerTime;
  std::size_t drained = 0;
  char sink[16384];
  while (drained < kLingerBytes) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return;
    pollfd p{fd, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    const ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return;
    drained += static_cast<std::size_t>(n);
  }
}

}  // namespace

bool announces_body(const httplib::Request& req) {
  if (req.has_header("Transfer-Encoding")) return true;
  auto [first, last] = req.headers.equal_range("Content-Length");
  return std::any_of(first, last, [](const auto& h) { return h.second != "0"; });
}

ConnectionContext* current_connection() {
  return t_current;
}

// --- GuardedStream ----------------------------------------------------------------------

bool GuardedStream::wait(short events, Clock::time_point deadline) {
  for (;;) {
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      timed_out_ = true;
      return false;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    pollfd p{fd_, events, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || (p.revents & POLLNVAL)) return false;
    if (r > 0) return true;  // ready, or hung up / in error: the next call says which
  }
}

bool GuardedStream::wait_for_request() {
  timed_out_ = false;
  if (buf_off_ < buf_len_) return true;
  if (!wait(POLLIN, Clock::now() + timeout_)) return false;
  return true;
}

void GuardedStream::begin_request(std::size_t budget) {
  read_deadline_ = Clock::now() + timeout_;
  budget_ = budget;
  writing_ = false;
  timed_out_ = false;
  over_budget_ = false;
}

bool GuardedStream::is_readable() const {
  if (buf_off_ < buf_len_) return true;
  pollfd p{fd_, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

bool GuardedStream::is_writable() const {
  pollfd p{fd_, POLLOUT, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & POLLOUT);
}

ssize_t GuardedStream::read(char* ptr, size_t size) {
  if (buf_off_ == buf_len_) {
    if (budget_ == 0) {
      over_budget_ = true;
      return -1;
    }
    ssize_t n = -1;
    for (;;) {
      if (!wait(POLLIN, read_deadline_)) return -1;
      n = recv(fd_, buf_, std::min(sizeof buf_, budget_), MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      break;
    }
    if (n <= 0) return n;
    budget_ -= static_cast<std::size_t>(n);
    buf_off_ = 0;
    buf_len_ = static_cast<std::size_t>(n);
  }
  const std::size_t n = std::min(size, buf_len_ - buf_off_);
  std::memcpy(ptr, buf_ + buf_off_, n);
  buf_off_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t GuardedStream::write(const char* ptr, size_t size) {
  if (!writing_) {
    writing_ = true;
    write_deadline_ = Clock::now() + timeout_;
  }
  for (;;) {
    if (!wait(POLLOUT, write_deadline_)) return -1;
    const ssize_t n = send(fd_, ptr, size, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    return n;
  }
}

void GuardedStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  endpoint_of(fd_, true, ip, port);
}

void GuardedStream::get_local_ip_and_port(std::string& ip, int& port) const {
  endpoint_of(fd_, false, ip, port);
}

// --- HttpGuard --------------------------------------------------------------------------

HttpGuard::Conn* HttpGuard::oldest_waiting(const std::string& peer) {
  Conn* oldest = nullptr;
  for (Conn* c : conns_) {
    if (c->busy || (!peer.empty() && c->peer != peer)) continue;
    if (oldest == nullptr || c->waiting_since < oldest->waiting_since) oldest = c;
  }
  return oldest;
}

void HttpGuard::evict(Conn* c) {
  // Registered, so its thread has not closed the fd yet (release() needs mu_): no reuse race.
  ::shutdown(c->fd, SHUT_RDWR);
  c->registered = false;
  conns_.remove(c);
}

bool HttpGuard::admit(Conn* c) {
  std::lock_guard<std::mutex> lock(mu_);
  auto refuse = [&] {
    ++counters_.refused;
    return false;
  };
  if (stopping_) return refuse();
  const std::size_t same_peer = static_cast<std::size_t>(std::count_if(
      conns_.begin(), conns_.end(), [&](const Conn* o) { return o->peer == c->peer; }));
  if (same_peer >= options_.max_connections_per_peer) {
    Conn* victim = oldest_waiting(c->peer);
    if (victim == nullptr) return refuse();
    evict(victim);
    ++counters_.evicted;
  }
  if (conns_.size() >= options_.max_connections) {
    Conn* victim = oldest_waiting("");
    if (victim == nullptr) return refuse();
    evict(victim);
    ++counters_.evicted;
  }
  c->waiting_since = Clock::now();
  c->registered = true;
  conns_.push_back(c);
  return true;
}

void HttpGuard::set_busy(Conn* c, bool busy) {
  std::lock_guard<std::mutex> lock(mu_);
  c->busy = busy;
  if (!busy) c->waiting_since = Clock::now();
}

void HttpGuard::release(Conn* c) {
  std::lock_guard<std::mutex> lock(mu_);
  if (c->registered) conns_.remove(c);
  c->registered = false;
}

void HttpGuard::serve(int fd, const RequestRunner& run, bool refuse_now) {
  Conn conn;
  conn.fd = fd;
  int port = 0;
  endpoint_of(fd, true, conn.peer, port);
  if (refuse_now) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.refused;
  }
  if (refuse_now || !admit(&conn)) {
    send_refusal(fd);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    return;
  }
  GuardedStream strm(fd, options_.request_timeout);
  ConnectionContext ctx;
  ctx.stream = &strm;
  ctx.mark_busy = [&] { set_busy(&conn, true); };
  t_current = &ctx;
  const std::function<void(httplib::Request&)> setup = [&](httplib::Request& req) {
    // The head is parsed: the body may follow; a request without one is whole now.
    strm.allow(options_.max_framed_body_bytes);
    if (!announces_body(req)) set_busy(&conn, true);
  };
  bool timed_out = false;
  for (std::size_t served = 1;; ++served) {
    if (!strm.wait_for_request()) break;  // idle past the timeout, closed, or evicted
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping = stopping_;
    }
    if (stopping) break;
    strm.begin_request(options_.max_head_bytes);
    ctx.close_after = false;
    bool closed = false;
    const bool last = served >= options_.max_requests_per_connection;
    const bool ok = run(strm, /*close_connection=*/last, closed, setup);
    timed_out = strm.timed_out();
    {
      // Waiting again, unless stop() came meanwhile (it shuts down only waiting ones).
      std::lock_guard<std::mutex> lock(mu_);
      conn.busy = false;
      conn.waiting_since = Clock::now();
      stopping = stopping_;
    }
    if (!ok || last || closed || ctx.close_after || timed_out || strm.over_budget() || stopping) {
      break;
    }
  }
  t_current = nullptr;
  release(&conn);
  if (timed_out) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.timed_out;
  }
  if (ctx.close_after && !timed_out) linger(fd);
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

void HttpGuard::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  for (auto it = conns_.begin(); it != conns_.end();) {
    Conn* c = *it++;
    if (!c->busy) evict(c);
  }
}

HttpGuard::Counters HttpGuard::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  Counters out = counters_;
  out.open = conns_.size();
  return out;
}

std::string HttpGuard::metrics_text() const {
  const Counters c = counters();
  std::string out =
      "# HELP processfork_http_connections HTTP connections open now (waiting for a request "
      "or being served).\n"
      "# TYPE processfork_http_connections gauge\n"
      "processfork_http_connections " +
      std::to_string(c.open) +
      "\n"
      "# HELP processfork_http_connections_closed_total HTTP connections the daemon ended "
      "early: a request not whole by its deadline (timeout), a waiting connection evicted "
      "for a new one over a cap (evicted), a new one refused with 503 (refused).\n"
      "# TYPE processfork_http_connections_closed_total counter\n";
  const std::pair<const char*, std::uint64_t> rows[] = {
      {"timeout", c.timed_out}, {"evicted", c.evicted}, {"refused", c.refused}};
  for (const auto& [reason, n] : rows) {
    out += std::string("processfork_http_connections_closed_total{reason=\"") + reason + "\"} " +
           std::to_string(n) + "\n";
  }
  return out;
}

// --- ThreadPerConnection ----------------------------------------------------------------

bool ThreadPerConnection::refusing() {
  return t_refusing;
}

void ThreadPerConnection::enqueue(std::function<void()> fn) {
  // Held by a shared_ptr so that it survives a failed thread creation and still runs (the
  // task closes the socket).
  auto task = std::make_shared<std::function<void()>>(std::move(fn));
  bool threaded = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_ < max_threads_) {
      ++live_;
      threaded = true;
    }
  }
  if (threaded) {
    try {
      std::thread([this, task]() mutable {
        (*task)();
        task.reset();
        std::lock_guard<std::mutex> lock(mu_);
        --live_;
        done_.notify_all();
      }).detach();
      return;
    } catch (const std::system_error&) {
      std::lock_guard<std::mutex> lock(mu_);
      --live_;
    }
  }
  t_refusing = true;
  (*task)();
  t_refusing = false;
}

void ThreadPerConnection::shutdown() {
  guard_.stop();
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return live_ == 0; });
}

}  // namespace pf::ipc
