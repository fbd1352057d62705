#include "ipc/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <functional>
#include <iterator>
#include <memory>
#include <thread>

#include "base/log.h"
#include "ipc/api_json.h"
#include "ipc/http_guard.h"

namespace pf::ipc {

using api::Json;

Result<HostPort> parse_host_port(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return PF_ERROR(Code::kInvalidArgument,
                    "'" + std::string(text) + "' is not HOST:PORT (" + why + ")");
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return bad("write an IPv6 address in brackets: [::1]:8642");
  }
  if (host.empty()) return bad("empty host");
  int port = -1;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      port < 0 || port > 65535) {
    return bad("port must be 0..65535");
  }
  return HostPort{std::string(host), port};
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  const std::string h(host);
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

std::string format_host_port(const HostPort& hp) {
  const bool v6 = hp.host.find(':') != std::string::npos;
  return (v6 ? "[" + hp.host + "]" : hp.host) + ":" + std::to_string(hp.port);
}

namespace {

constexpr const char* kJson = "application/json";

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// Why the request is not authorized by `token`, or "" when it is. The whole value of the one
// Authorization header counts: httplib url-decodes header values, so a value may hold NUL
// bytes that a C-string comparison would stop at.
std::string auth_failure(const httplib::Request& req, const std::string& token) {
  const auto [first, last] = req.headers.equal_range("Authorization");
  const auto n = std::distance(first, last);
  if (n == 0) return "missing bearer token (Authorization: Bearer <token>)";
  if (n > 1) return "more than one Authorization header";
  if (!constant_time_equal(first->second, "Bearer " + token)) return "wrong bearer token";
  return "";
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Why the request's framing is refused (400), or "": a body must have one unambiguous length.
std::string framing_failure(const httplib::Request& req) {
  static constexpr std::string_view kMethods[] = {"GET",    "HEAD",  "POST",   "PUT",
                                                  "DELETE", "PATCH", "OPTIONS"};
  if (std::find(std::begin(kMethods), std::end(kMethods), req.method) == std::end(kMethods)) {
    return "unsupported method " + req.method;
  }
  const auto lengths = req.headers.count("Content-Length");
  const auto encodings = req.headers.count("Transfer-Encoding");
  if (lengths > 1) return "more than one Content-Length header";
  if (lengths == 1) {
    const std::string& v = req.headers.find("Content-Length")->second;
    if (!all_digits(v) || v.size() > 18) {
      return "Content-Length must be a decimal byte count, got '" + v.substr(0, 40) + "'";
    }
  }
  if (encodings > 1) return "more than one Transfer-Encoding header";
  if (encodings == 1) {
    if (lengths == 1) return "Content-Length together with Transfer-Encoding";
    const std::string& v = req.headers.find("Transfer-Encoding")->second;
    if (!iequals(v, "chunked")) {
      return "Transfer-Encoding '" + v.substr(0, 40) + "' is not supported (only chunked)";
    }
  }
  // No route takes a body on these; httplib would not read a chunked DELETE body at all
  // (it would be parsed as the next request).
  if ((req.method == "GET" || req.method == "HEAD" || req.method == "OPTIONS" ||
       req.method == "DELETE") &&
      announces_body(req)) {
    return "a " + req.method + " request carries no body";
  }
  if (req.get_header_value("Content-Type").rfind("multipart/form-data", 0) == 0) {
    return "multipart bodies are not accepted; send JSON";
  }
  return "";
}

void send_error(httplib::Response& res, int status, std::string_view code,
                std::string_view message) {
  res.status = status;
  res.set_content(api::error_body(code, message), kJson);
}

void send_error(httplib::Response& res, const Status& s) {
  send_error(res, api::http_status(s.code()), api::error_code_name(s.code()), s.message());
}

// A route of ipc/ops.def as httplib sees it: "{branch}" matches one path segment, "{cid}"
// and "{name}" the rest of the path (CIDs and ref names may hold '/'); "?a&b" lists the
// required query parameters.
struct RouteSpec {
  std::string pattern;                   // httplib regex
  std::vector<std::string> path_params;  // JSON field per capture group
  std::vector<std::string> query_params;
};

RouteSpec route_spec(std::string_view route) {
  RouteSpec spec;
  std::string_view path = route;
  if (const std::size_t q = route.find('?'); q != std::string_view::npos) {
    path = route.substr(0, q);
    std::string_view rest = route.substr(q + 1);
    while (!rest.empty()) {
      const std::size_t amp = rest.find('&');
      spec.query_params.emplace_back(rest.substr(0, amp));
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    }
  }
  while (!path.empty()) {
    const std::size_t open = path.find('{');
    if (open == std::string_view::npos) {
      spec.pattern.append(path);
      break;
    }
    const std::size_t close = path.find('}', open);
    spec.pattern.append(path.substr(0, open));
    std::string param(path.substr(open + 1, close - open - 1));
    spec.pattern.append(param == "branch" ? "([^/]+)" : "(.+)");
    spec.path_params.push_back(std::move(param));
    path = path.substr(close + 1);
  }
  return spec;
}

// httplib's server with each accepted socket served by the guard (ipc/http_guard.h):
// process_and_close_socket is httplib's per-connection entry point, virtual for this.
class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(HttpGuard& guard) : guard_(guard) {}

  // httplib listens with a backlog of 5: under a burst of connections the kernel drops SYNs
  // and clients wait seconds to retry. Calling listen() again on the bound socket widens it.
  void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

 private:
  bool process_and_close_socket(int sock) override {
    guard_.serve(
        sock,
        [this](httplib::Stream& strm, bool close_connection, bool& closed,
               const std::function<void(httplib::Request&)>& setup) {
          return process_request(strm, close_connection, closed, setup);
        },
        ThreadPerConnection::refusing());
    return true;
  }

  HttpGuard& guard_;
};

// Marks the answer as the connection's last (its request's body, if any, is left unread).
void close_after(httplib::Response& res) {
  if (ConnectionContext* conn = current_connection()) conn->close_after = true;
  res.set_header("Connection", "close");
}

}  // namespace

struct HttpServer::Impl {
  Service& service;
  HttpOptions options;
  HostPort bound;
  HttpGuard guard;  // outlives `server`: connection threads use both
  GuardedServer server{guard};
  std::thread thread;
  std::atomic<bool> stopped{false};
  std::atomic<bool> exited{false};  // the listen thread returned

  Impl(Service& s, HttpOptions o)
      : service(s), options(std::move(o)), guard(guard_options(options)) {}

  static HttpGuardOptions guard_options(const HttpOptions& o) {
    HttpGuardOptions g;
    g.request_timeout = o.request_timeout;
    g.max_connections = o.max_connections;
    g.max_connections_per_peer = o.max_connections_per_peer;
    // Chunk-size lines and CRLFs around a body of the largest size, with room to spare.
    g.max_framed_body_bytes = 2 * o.max_body_bytes + (64u << 10);
    return g;
  }

  // Reads the request's body into `body` through `reader`, stopping at max_body_bytes + 1
  // bytes (however the body is framed or encoded). False, with the error answered and the
  // connection marked to close, when it is too large (413), late (408) or malformed (400).
  bool read_body(const httplib::Request& req, httplib::Response& res,
                 const httplib::ContentReader& reader, std::string* body) {
    ConnectionContext* conn = current_connection();
    if (announces_body(req)) {
      bool too_large = false;
      const bool ok = reader([&](const char* data, std::size_t n) {
        if (n > options.max_body_bytes - body->size()) {
          too_large = true;
          return false;
        }
        body->append(data, n);
        return true;
      });
      if (!ok) {
        close_after(res);
        if (too_large) {
          send_error(res, 413, "payload_too_large",
                     "request body over " + std::to_string(options.max_body_bytes) + " bytes");
        } else if (conn != nullptr && conn->stream->timed_out()) {
          send_error(res, 408, "request_timeout", timeout_message());
        } else {
          send_error(res, 400, "invalid_argument",
                     "the request body could not be read (truncated, or malformed chunked "
                     "encoding)");
        }
        return false;
      }
    }
    if (conn != nullptr) conn->mark_busy();
    return true;
  }

  std::string timeout_message() const {
    return "the request did not arrive whole within " +
           std::to_string(options.request_timeout.count()) + " ms";
  }

  // Serves one row of ipc/ops.def: builds its JSON request from the body (POST, PUT), the
  // path and the query, parses it into the request message, runs it and renders the reply.
  template <Op op>
  void serve(const RouteSpec& spec, const httplib::Request& req, httplib::Response& res,
             std::string_view body_text) {
    using Traits = OpTraits<op>;
    Json body = Json::object();
    if constexpr (Traits::method == HttpMethod::kPOST || Traits::method == HttpMethod::kPUT) {
      Result<Json> parsed = api::parse_body(body_text);
      if (!parsed.is_ok()) {
        // Counted as a failed op, like the same mistake over the socket.
        service.count_failed(op);
        send_error(res, parsed.status());
        return;
      }
      body = std::move(*parsed);
    }
    for (std::size_t i = 0; i < spec.path_params.size(); ++i) {
      const std::string value = req.matches[i + 1].str();
      if (spec.path_params[i] == "branch") {
        Result<std::uint64_t> id = api::parse_id(value, "branch id");
        if (!id.is_ok()) {
          send_error(res, id.status());
          return;
        }
        body[spec.path_params[i]] = *id;
      } else {
        body[spec.path_params[i]] = value;
      }
    }
    for (const std::string& key : spec.query_params) {
      if (!req.has_param(key)) {
        service.count_failed(op);
        send_error(res, 400, "invalid_argument", "missing query parameter '" + key + "'");
        return;
      }
      body[key] = api::query_source(req.get_param_value(key));
    }
    RequestOf<op> request;
    if (Status s = api::from_json<op>(body, &request); !s.is_ok()) {
      service.count_failed(op);
      send_error(res, s);
      return;
    }
    Result<ReplyOf<op>> reply = service.call<op>(kHttpLease, request);
    if (!reply.is_ok()) {
      send_error(res, reply.status());
      return;
    }
    std::string answer = api::answer_body(*reply);
    if (answer.empty()) {
      res.status = 204;
      return;
    }
    res.status = Traits::ok_status;
    res.set_content(std::move(answer), kJson);
  }

  // Registers one route pattern for op. Routes of methods that may carry a body (POST, PUT,
  // DELETE) read it themselves through a bounded receiver (read_body): httplib's own
  // buffering would not bound a chunked body.
  template <Op op>
  void add_route(const std::string& route) {
    auto spec = std::make_shared<RouteSpec>(route_spec(route));
    auto handler = [this, spec](const httplib::Request& req, httplib::Response& res) {
      serve<op>(*spec, req, res, "");
    };
    auto with_body = [this, spec](const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
      std::string body;
      if (read_body(req, res, reader, &body)) serve<op>(*spec, req, res, body);
    };
    switch (OpTraits<op>::method) {
      case HttpMethod::kGET:
        server.Get(spec->pattern, handler);
        break;
      case HttpMethod::kPOST:
        server.Post(spec->pattern, with_body);
        break;
      case HttpMethod::kPUT:
        server.Put(spec->pattern, with_body);
        break;
      case HttpMethod::kDELETE:
        server.Delete(spec->pattern, with_body);
        break;
      case HttpMethod::kNONE:
        break;
    }
  }

  // Whether the request may skip the token: the probes, when open_probes.
  bool is_open_probe(const httplib::Request& req) const {
    return options.open_probes && (req.method == "GET" || req.method == "HEAD") &&
           (req.path == "/v1/health" || req.path == "/metrics");
  }

  // Before routing (and before any body is read): Range dropped, framing, auth and the
  // declared size checked. Handled = answered (the connection then closes: a body may be
  // left unread).
  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res);

  void routes();
};

httplib::Server::HandlerResponse HttpServer::Impl::pre_route(const httplib::Request& req,
                                                             httplib::Response& res) {
  using HR = httplib::Server::HandlerResponse;
  // httplib parsed Range into req.ranges and would answer 206 with a slice of the JSON.
  // Ignoring Range is allowed (RFC 9110 §14.2): serve answers whole. httplib passes its own
  // non-const Request object (a local of process_request), so this const_cast is well defined.
  const_cast<httplib::Request&>(req).ranges.clear();
  res.set_header("Accept-Ranges", "none");  // (httplib would claim "bytes" on HEAD)
  if (const std::string why = framing_failure(req); !why.empty()) {
    close_after(res);
    send_error(res, 400, "invalid_argument", why);
    return HR::Handled;
  }
  if (!options.token.empty() && !is_open_probe(req)) {
    if (const std::string why = auth_failure(req, options.token); !why.empty()) {
      close_after(res);
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "unauthorized", why);
      return HR::Handled;
    }
  }
  if (req.has_header("Content-Length")) {
    const std::string& v = req.headers.find("Content-Length")->second;  // digits (framing)
    if (std::stoull(v) > options.max_body_bytes) {
      close_after(res);
      send_error(res, 413, "payload_too_large",
                 "request body over " + std::to_string(options.max_body_bytes) + " bytes");
      return HR::Handled;
    }
  }
  return HR::Unhandled;
}

void HttpServer::Impl::routes() {
  // Every row of ipc/ops.def with an HTTP route; /v1/processfork/* also without /v1 (the
  // SGLang spelling, DESIGN §6).
  for_each_op([this]<Op op>() {
    if constexpr (OpTraits<op>::method != HttpMethod::kNONE) {
      const std::string route(OpTraits<op>::route);
      add_route<op>(route);
      constexpr std::string_view kV1 = "/v1/processfork/";
      if (route.starts_with(kV1)) add_route<op>(route.substr(3));
    }
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(service.metrics_text() + guard.metrics_text(),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  // Any other path of a method with a body: 404 without reading the body (httplib would
  // buffer it unbounded), and the connection closes.
  auto no_route = [](const httplib::Request& req, httplib::Response& res,
                     const httplib::ContentReader&) {
    if (announces_body(req)) close_after(res);
    send_error(res, 404, "not_found", "no route for " + req.method + " " + req.path);
  };
  server.Post(".*", no_route);
  server.Put(".*", no_route);
  server.Delete(".*", no_route);
  server.Patch(".*", no_route);
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(Service& service, HttpOptions options) {
  auto impl = std::make_unique<Impl>(service, std::move(options));
  Impl* self = impl.get();
  GuardedServer& s = impl->server;
  s.set_payload_max_length(self->options.max_body_bytes);
  s.set_tcp_nodelay(true);
  const auto timeout_s = std::chrono::ceil<std::chrono::seconds>(self->options.request_timeout);
  // What the Keep-Alive header of answers says; the guard enforces both.
  s.set_keep_alive_timeout(static_cast<time_t>(timeout_s.count()));
  s.set_keep_alive_max_count(self->guard.options().max_requests_per_connection);
  const std::size_t max_threads = 2 * self->options.max_connections + 16;
  s.new_task_queue = [self, max_threads] {
    return new ThreadPerConnection(self->guard, max_threads);
  };
  s.set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
    return self->pre_route(req, res);
  });
  // httplib answers "Expect: 100-continue" before routing: run the same checks first, so a
  // client waiting for "100 Continue" gets the 400/401/413 instead and never sends the body.
  s.set_expect_100_continue_handler([self](const httplib::Request& req, httplib::Response& res) {
    using HR = httplib::Server::HandlerResponse;
    return self->pre_route(req, res) == HR::Handled ? res.status : 100;
  });
  // httplib's own errors (no route, unreadable request) get the JSON error shape too;
  // answers that already carry a body keep it.
  s.set_error_handler([self](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const ConnectionContext* conn = current_connection();
    if (conn != nullptr && conn->stream->timed_out()) {
      res.status = 408;
      send_error(res, 408, "request_timeout", self->timeout_message());
    } else if (conn != nullptr && conn->stream->over_budget()) {
      res.status = 431;
      send_error(
          res, 431, "payload_too_large",
          "request head over " + std::to_string(self->guard.options().max_head_bytes) + " bytes");
    } else if (res.status == 404) {
      send_error(res, 404, "not_found", "no route for " + req.method + " " + req.path);
    } else if (res.status == 413) {
      send_error(res, 413, "payload_too_large", "request body over the size limit");
    } else {
      send_error(res, res.status, res.status == 400 ? "invalid_argument" : "http_error",
                 "the request could not be served (HTTP " + std::to_string(res.status) + ")");
    }
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        close_after(res);  // a body may be left unread
        std::string what = "unexpected exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, 500, "internal", what);
      });
  s.set_logger([self](const httplib::Request&, const httplib::Response& res) {
    self->service.count_http(res.status);
  });
  self->routes();

  self->bound = self->options.bind;
  if (self->bound.port == 0) {
    const int port = s.bind_to_any_port(self->bound.host);
    if (port <= 0) {
      return PF_ERROR(Code::kUnavailable,
                      "cannot bind the HTTP port on " + self->bound.host + " (any port)");
    }
    self->bound.port = port;
  } else if (!s.bind_to_port(self->bound.host, self->bound.port)) {
    return PF_ERROR(Code::kUnavailable, "cannot bind the HTTP port on " +
                                            format_host_port(self->bound) +
                                            " (in use, or not a local address)");
  }
  s.widen_backlog();
  self->thread = std::thread([self] {
    if (!self->server.listen_after_bind() && !self->stopped) {
      log_line("the HTTP server stopped unexpectedly");
    }
    self->exited = true;
  });
  // httplib's stop() is a no-op until its loop runs (is_running): return only once it
  // does, so the port is really served when the ready file says so, and stop() works.
  while (!self->server.is_running() && !self->exited) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!self->server.is_running()) {
    self->thread.join();
    return PF_ERROR(Code::kUnavailable,
                    "the HTTP server on " + format_host_port(self->bound) + " did not start");
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  stop();
}

const HostPort& HttpServer::address() const {
  return impl_->bound;
}

void HttpServer::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace pf::ipc
