#include "ipc/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <memory>
#include <thread>

#include "base/log.h"
#include "ipc/api_json.h"

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

  // Serves one row of ipc/ops.def: builds its JSON request from the body (POST, PUT), the
  // path and the query, parses it into the request message, runs it and renders the reply.
  template <Op op>
  void serve(const RouteSpec& spec, const httplib::Request& req, httplib::Response& res) {
    using Traits = OpTraits<op>;
    Json body = Json::object();
    if constexpr (Traits::method == HttpMethod::kPOST || Traits::method == HttpMethod::kPUT) {
      Result<Json> parsed = api::parse_body(req.body);
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

  // Registers one route pattern for op.
  template <Op op>
  void add_route(const std::string& route) {
    auto spec = std::make_shared<RouteSpec>(route_spec(route));
    auto handler = [this, spec](const httplib::Request& req, httplib::Response& res) {
      serve<op>(*spec, req, res);
    };
    switch (OpTraits<op>::method) {
      case HttpMethod::kGET:
        server.Get(spec->pattern, handler);
        break;
      case HttpMethod::kPOST:
        server.Post(spec->pattern, handler);
        break;
      case HttpMethod::kPUT:
        server.Put(spec->pattern, handler);
        break;
      case HttpMethod::kDELETE:
        server.Delete(spec->pattern, handler);
        break;
      case HttpMethod::kNONE:
        break;
    }
  }

  void routes();
};

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
