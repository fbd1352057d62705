#include "ipc/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <thread>

#include "ipc/log.h"

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

void send_error(httplib::Response& res, int status, std::string_view code,
                std::string_view message) {
  res.status = status;
  res.set_content(api::error_body(code, message), kJson);
}

void send_error(httplib::Response& res, const Status& s) {
  send_error(res, api::http_status(s.code()), api::error_code_name(s.code()), s.message());
}

// A query value or path segment naming a source: all digits = a branch id, else CID/ref.
Json source_value(const std::string& text) {
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
  if (digits) {
    if (Result<std::uint64_t> id = api::parse_id(text, "branch id"); id.is_ok()) return *id;
  }
  return text;
}

}  // namespace

struct HttpServer::Impl {
  Service& service;
  HttpOptions options;
  HostPort bound;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> stopped{false};
  std::atomic<bool> exited{false};  // the listen thread returned

  Impl(Service& s, HttpOptions o) : service(s), options(std::move(o)) {}

  // Runs op with `request` and answers ok_status (204 when the answer is empty).
  void answer(httplib::Response& res, Op op, const Json& request, int ok_status) {
    Result<std::string> r = service.call(op, kHttpLease, request);
    if (!r.is_ok()) {
      send_error(res, r.status());
      return;
    }
    if (r->empty()) {
      res.status = 204;
      return;
    }
    res.status = ok_status;
    res.set_content(*r, kJson);
  }

  // POST/PUT body → op.
  void answer_body(const httplib::Request& req, httplib::Response& res, Op op, int ok_status,
                   Json extra = Json::object()) {
    Result<Json> body = api::parse_body(req.body);
    if (!body.is_ok()) {
      // Counted as a failed op, like the same mistake over the socket.
      OpTimer t(service.metrics(), op);
      send_error(res, body.status());
      return;
    }
    for (auto& [k, v] : extra.items()) (*body)[k] = v;
    answer(res, op, *body, ok_status);
  }

  // A branch id from the path: 400 when it is not a decimal integer.
  bool path_branch(const httplib::Request& req, httplib::Response& res, Json* out) {
    Result<std::uint64_t> id = api::parse_id(req.matches[1].str(), "branch id");
    if (!id.is_ok()) {
      send_error(res, id.status());
      return false;
    }
    *out = Json{{"branch", *id}};
    return true;
  }

  void routes();
};

void HttpServer::Impl::routes() {
  using httplib::Request;
  using httplib::Response;
  httplib::Server& s = server;

  s.Get("/v1/health",
        [this](const Request&, Response& res) { answer(res, Op::kHealth, Json::object(), 200); });
  s.Get("/v1/pool",
        [this](const Request&, Response& res) { answer(res, Op::kPool, Json::object(), 200); });
  s.Post("/v1/branches", [this](const Request& req, Response& res) {
    answer_body(req, res, Op::kBranchCreate, 201);
  });
  s.Get("/v1/branches",
        [this](const Request&, Response& res) { answer(res, Op::kBranches, Json::object(), 200); });
  s.Get(R"(/v1/branches/([^/]+))", [this](const Request& req, Response& res) {
    Json body;
    if (path_branch(req, res, &body)) answer(res, Op::kBranchInfo, body, 200);
  });
  s.Delete(R"(/v1/branches/([^/]+))", [this](const Request& req, Response& res) {
    Json body;
    if (path_branch(req, res, &body)) answer(res, Op::kBranchFree, body, 204);
  });

  for (const std::string prefix : {"/v1/processfork", "/processfork"}) {
    s.Post(prefix + "/snapshot", [this](const Request& req, Response& res) {
      answer_body(req, res, Op::kSnapshot, 201);
    });
    s.Post(prefix + "/fork",
           [this](const Request& req, Response& res) { answer_body(req, res, Op::kFork, 201); });
    s.Post(prefix + "/checkout", [this](const Request& req, Response& res) {
      answer_body(req, res, Op::kCheckout, 201);
    });
    s.Post(prefix + "/merge",
           [this](const Request& req, Response& res) { answer_body(req, res, Op::kMerge, 201); });
    s.Get(prefix + R"(/log/(.+))", [this](const Request& req, Response& res) {
      answer(res, Op::kLog, Json{{"cid", req.matches[1].str()}}, 200);
    });
    s.Get(prefix + "/diff", [this](const Request& req, Response& res) {
      for (const char* key : {"a", "b"}) {
        if (!req.has_param(key)) {
          OpTimer t(service.metrics(), Op::kDiff);
          send_error(res, 400, "invalid_argument",
                     std::string("missing query parameter '") + key + "'");
          return;
        }
      }
      answer(res, Op::kDiff,
             Json{{"a", source_value(req.get_param_value("a"))},
                  {"b", source_value(req.get_param_value("b"))}},
             200);
    });
  }

  s.Get("/v1/snapshots", [this](const Request&, Response& res) {
    answer(res, Op::kSnapshots, Json::object(), 200);
  });
  s.Get(R"(/v1/snapshots/(.+))", [this](const Request& req, Response& res) {
    answer(res, Op::kManifest, Json{{"cid", req.matches[1].str()}}, 200);
  });
  s.Delete(R"(/v1/snapshots/(.+))", [this](const Request& req, Response& res) {
    answer(res, Op::kUnpin, Json{{"cid", req.matches[1].str()}}, 204);
  });

  s.Get("/v1/refs",
        [this](const Request&, Response& res) { answer(res, Op::kRefs, Json::object(), 200); });
  s.Get(R"(/v1/refs/(.+))", [this](const Request& req, Response& res) {
    answer(res, Op::kRefGet, Json{{"name", req.matches[1].str()}}, 200);
  });
  s.Put(R"(/v1/refs/(.+))", [this](const Request& req, Response& res) {
    answer_body(req, res, Op::kRefSet, 200, Json{{"name", req.matches[1].str()}});
  });
  s.Delete(R"(/v1/refs/(.+))", [this](const Request& req, Response& res) {
    answer(res, Op::kRefDelete, Json{{"name", req.matches[1].str()}}, 204);
  });

  s.Post("/v1/gc",
         [this](const Request& req, Response& res) { answer_body(req, res, Op::kGc, 200); });

  s.Get("/metrics", [this](const Request&, Response& res) {
    res.status = 200;
    res.set_content(service.metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(Service& service, HttpOptions options) {
  auto impl = std::make_unique<Impl>(service, std::move(options));
  Impl* self = impl.get();
  httplib::Server& s = impl->server;
  s.set_payload_max_length(self->options.max_body_bytes);
  s.set_tcp_nodelay(true);
  if (!self->options.token.empty()) {
    s.set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
      const std::string auth = req.get_header_value("Authorization");
      constexpr std::string_view kBearer = "Bearer ";
      const bool ok =
          auth.size() > kBearer.size() && auth.compare(0, kBearer.size(), kBearer) == 0 &&
          constant_time_equal(std::string_view(auth).substr(kBearer.size()), self->options.token);
      if (ok) return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "unauthorized",
                 auth.empty() ? "missing bearer token (Authorization: Bearer <token>)"
                              : "wrong bearer token");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  // httplib's own errors (no route, body too large, unreadable request) get the JSON error
  // shape too; answers that already carry a body keep it.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
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
