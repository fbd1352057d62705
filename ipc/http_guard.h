// The HTTP port's connection guard (DESIGN §8): every connection on its own thread, caps on
// connections per peer and overall, and a deadline for each whole request, so that slow or
// idle clients cannot starve /v1/health and /metrics (httplib's fixed pool and per-read
// timeouts let 8 trickling connections stall the port for tens of seconds).
//
// DESIGN
//  - Threads: HttpServer's httplib::Server hands each accepted socket to a ThreadPerConnection
//    queue (a thread each) which runs HttpGuard::serve: admission, then a keep-alive loop of
//    requests over a GuardedStream. No thread polls or sleeps: every wait is a poll() on the
//    connection's own socket with the time left to its deadline.
//  - Deadlines: once the first byte of a request arrived, the request line, the headers and the
//    body must all arrive within request_timeout (not per read). A connection waiting for its
//    next request waits at most request_timeout too. A response must be taken by the client
//    within request_timeout of its first byte. Past a deadline the stream's reads or writes
//    fail, and the connection is closed.
//  - States: a connection is *waiting* (no request yet, or one still arriving) until its
//    request is whole, then *busy* (a handler runs, the answer is written) until the answer is
//    sent. Only waiting connections are ever evicted.
//  - Caps and eviction policy: a new connection beyond max_connections_per_peer (same peer
//    address) evicts that peer's connection that has been waiting the longest; beyond
//    max_connections (all peers) it evicts the connection waiting the longest of any peer.
//    When every connection in the way is busy the new one is refused: 503 JSON, closed.
//    Evicting means shutdown(2) of its socket, so its thread's poll() returns at once.
//  - No fd-reuse race: the registry shuts a socket down only while the connection is
//    registered, under the registry's mutex, and a connection deregisters (under that mutex)
//    before its thread closes the fd.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>

namespace pf::ipc {

struct HttpGuardOptions {
  std::chrono::milliseconds request_timeout{10000};
  std::size_t max_connections = 256;
  std::size_t max_connections_per_peer = 64;
  // Requests served on one keep-alive connection; the last is answered "Connection: close".
  std::size_t max_requests_per_connection = 1000;
  // Wire bytes of a request's head (request line and headers) and of its body as framed
  // (chunk sizes included). Past them reads fail. The exact body limit (413) is HttpServer's.
  std::size_t max_head_bytes = 64u << 10;
  std::size_t max_framed_body_bytes = (2u << 20) + (64u << 10);
};

// A connection's socket as an httplib::Stream, with deadlines and byte budgets. Used only by
// the connection's own thread. Does not own the fd.
class GuardedStream : public httplib::Stream {
 public:
  GuardedStream(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}

  // Waits (poll) until the next request's first byte is readable or buffered, at most the
  // timeout: false on timeout, EOF, error or shutdown.
  bool wait_for_request();
  // Starts a request: reads must complete within the timeout from now, `budget` bytes at most.
  void begin_request(std::size_t budget);
  // Allows `more` bytes to be read for this request (the body, once the head was parsed).
  void allow(std::size_t more) { budget_ += more; }
  bool timed_out() const { return timed_out_; }
  bool over_budget() const { return over_budget_; }

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  int socket() const override { return fd_; }

 private:
  // poll() for `events` until `deadline`; false (timed_out_ set on a timeout) otherwise.
  bool wait(short events, std::chrono::steady_clock::time_point deadline);

  int fd_;
  std::chrono::milliseconds timeout_;
  std::chrono::steady_clock::time_point read_deadline_{};
  std::chrono::steady_clock::time_point write_deadline_{};
  bool writing_ = false;  // the current answer's write deadline is set
  std::size_t budget_ = 0;
  bool timed_out_ = false;
  bool over_budget_ = false;
  char buf_[4096];
  std::size_t buf_off_ = 0, buf_len_ = 0;
};

// Whether the request announces a body: a Transfer-Encoding, or a Content-Length but "0".
// Without either a request has no body (RFC 9112 §6.3).
bool announces_body(const httplib::Request& req);

// The per-request facts HttpServer's handlers need about the connection they run on.
struct ConnectionContext {
  GuardedStream* stream = nullptr;
  bool close_after = false;  // the answer ends the connection (e.g. a body left unread)
  // The request is whole (its body read, or it has none): not evictable any more.
  std::function<void()> mark_busy;
};

// The connection the calling thread serves, or nullptr on any other thread. Valid while the
// request is being served (handlers run on the connection's thread).
ConnectionContext* current_connection();

class HttpGuard {
 public:
  struct Counters {
    std::uint64_t open = 0, timed_out = 0, evicted = 0, refused = 0;
  };
  // Runs one request on the stream, as httplib::Server::process_request does: false ends
  // the connection; `closed` set when the request asked to close.
  using RequestRunner =
      std::function<bool(httplib::Stream& strm, bool close_connection, bool& closed,
                         const std::function<void(httplib::Request&)>& setup)>;

  explicit HttpGuard(HttpGuardOptions options) : options_(options) {}
  HttpGuard(const HttpGuard&) = delete;
  HttpGuard& operator=(const HttpGuard&) = delete;

  // Serves the accepted socket `fd` until the connection ends, then closes it (owns fd).
  // Blocks. `refuse_now`: answer 503 at once (no thread for it), without eviction.
  void serve(int fd, const RequestRunner& run, bool refuse_now);
  // Starts stopping: no new connection is admitted, waiting ones are shut down, busy ones
  // end after their answer. Does not block.
  void stop();
  Counters counters() const;
  // Prometheus text of the counters (# HELP and # TYPE for each metric).
  std::string metrics_text() const;
  const HttpGuardOptions& options() const { return options_; }

 private:
  struct Conn {
    int fd = -1;
    std::string peer;
    bool busy = false;
    std::chrono::steady_clock::time_point waiting_since;
    bool registered = false;
  };
  // Registers `c`, evicting as the policy says; false when refused (or stopping).
  bool admit(Conn* c);
  void set_busy(Conn* c, bool busy);
  void release(Conn* c);
  // The waiting connection waiting the longest, of `peer` ("" = any); nullptr if none.
  Conn* oldest_waiting(const std::string& peer);
  void evict(Conn* c);  // with mu_ held

  const HttpGuardOptions options_;
  mutable std::mutex mu_;
  std::list<Conn*> conns_;  // registered connections
  bool stopping_ = false;
  Counters counters_;
};

// httplib's task queue for the guard: a thread per accepted connection. Beyond
// `max_threads` live threads (or when a thread cannot be created) the task runs on the
// caller's thread (httplib's accept loop) with `refusing()` true, so that it answers 503 at
// once instead of being served.
class ThreadPerConnection : public httplib::TaskQueue {
 public:
  ThreadPerConnection(HttpGuard& guard, std::size_t max_threads)
      : guard_(guard), max_threads_(max_threads) {}
  void enqueue(std::function<void()> fn) override;
  // Stops the guard and waits for every connection thread to end.
  void shutdown() override;
  // True on a thread running a task inline because no thread was available.
  static bool refusing();

 private:
  HttpGuard& guard_;
  const std::size_t max_threads_;
  std::mutex mu_;
  std::condition_variable done_;
  std::size_t live_ = 0;
};

}  // namespace pf::ipc
