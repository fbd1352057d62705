// The HTTP control port (DESIGN §6): cpp-httplib + nlohmann/json, every route of the table,
// the processfork/* routes also without the /v1 prefix (the SGLang spelling). docs/http.md
// lists each route with an example.
//
// DESIGN
//  - Every route calls Service::call with a JSON request built from the body, the path and
//    the query, as lease 0: what HTTP creates is unowned and lives until deleted, and a
//    branch held by a Unix-socket lease is 409 for HTTP.
//  - Errors are {"error":{"code","message"}} with the status of api::http_status (400, 401,
//    404, 409, 413, 507, ...), including httplib's own 404 (no route), and 408 (a request not
//    whole by its deadline) and 503 (over the connection caps) from ipc/http_guard.h.
//  - Bodies: however framed (Content-Length, chunked, compressed), a body is read through a
//    receiver that stops at max_body_bytes + 1 (413, connection closed) before more is
//    buffered; a Content-Length over the limit is 413 before anything is read. Framing that
//    could be read two ways is 400 and closes the connection: a Content-Length that is not
//    one decimal number, two of them, Content-Length with Transfer-Encoding, a
//    Transfer-Encoding other than chunked, a body on GET/HEAD/OPTIONS/DELETE.
//  - Answers are never sliced by a Range header (it is ignored: RFC 9110 §14.2).
//  - Auth: with a token set, routes need "Authorization: Bearer <token>": exactly one such
//    header whose whole value matches (compared in constant time), checked before the body
//    is read. open_probes leaves GET /v1/health and GET /metrics open. Without a token (only
//    on loopback with --http-auth=off; daemon.cpp checks) every route is open.
//  - Threads: a thread per connection, capped, each request under a deadline
//    (ipc/http_guard.h); the Service is thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "ipc/service.h"

namespace pf::ipc {

struct HostPort {
  std::string host;  // without brackets ("::1")
  int port = 0;      // 0 = any free port
};

// "HOST:PORT" or "[IPV6]:PORT", port 0..65535. kInvalidArgument otherwise.
Result<HostPort> parse_host_port(std::string_view text);
// 127.0.0.0/8, ::1, ::ffff:127.x.y.z and "localhost".
bool is_loopback_host(std::string_view host);
// "host:port", with brackets around an IPv6 host.
std::string format_host_port(const HostPort& hp);

struct HttpOptions {
  HostPort bind;
  std::string token;                      // "" = no auth (loopback only; daemon.cpp checks)
  bool open_probes = false;               // GET /v1/health and GET /metrics need no token
  std::size_t max_body_bytes = 1u << 20;  // at most api::kMaxBodyBytes
  // ipc/http_guard.h: a whole request within request_timeout of its first byte; connections
  // capped per peer address and overall (the longest-waiting one evicted, else 503).
  std::chrono::milliseconds request_timeout{10000};
  std::size_t max_connections = 256;
  std::size_t max_connections_per_peer = 64;
};

class HttpServer {
 public:
  // Binds (port 0: an ephemeral one) and starts serving on a thread. kUnavailable when the
  // address cannot be bound (in use, not local).
  static Result<std::unique_ptr<HttpServer>> start(Service& service, HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound address (the real port when 0 was asked for).
  const HostPort& address() const;
  // Stops accepting, finishes in-flight requests and joins. Idempotent.
  void stop();

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::ipc
