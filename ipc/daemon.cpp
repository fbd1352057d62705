// serve_main: configuration, start-up, the signal wait and the clean shutdown.
//
// DESIGN: SIGTERM and SIGINT are blocked in every thread (the mask is set before the first
// thread starts, and threads inherit it) and read from a signalfd by the main thread, so no
// work ever runs in a signal handler. SIGPIPE is ignored: a client that vanishes makes a
// send fail with EPIPE, which ends only its own connection. Shutdown order: HTTP (no new
// requests, in-flight ones finish), then the Unix socket (listener closed, path unlinked,
// every connection shut down so clients see EOF, each lease ends and frees its branches),
// then the ready file, the runtime (every page unmapped) and the backend.
#include "ipc/daemon.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/page_format.h"
#include "base/replace_file.h"
#include "base/socket_path.h"
#include "ipc/boot_epoch.h"
#include "ipc/http_server.h"
#include "ipc/http_token.h"
#include "ipc/service.h"
#include "ipc/uds_server.h"
#include "runtime/runtime.h"
#include "vmm/registry.h"

#ifndef PF_VERSION
#define PF_VERSION "0.0.0"
#endif

namespace pf::ipc {

namespace {

constexpr const char* kUsage =
    "usage: processfork serve [--device auto|host|cuda:N] [--capacity 4GiB] [--chunk 64MiB]\n"
    "                         [--geometry NAME[:PAGE_TOKENS]|layers=..,kv_heads=..,head_dim=..,"
    "dtype=..,page_tokens=..]\n"
    "                         [--socket PATH] [--http HOST:PORT|off] [--token T]\n"
    "                         [--http-auth on|off] [--http-request-timeout-ms MS]\n"
    "                         [--http-max-connections N] [--http-max-connections-per-peer N]\n"
    "                         [--ready-file PATH] [--max-clients N] [--frame-timeout-ms MS]\n"
    "                         [--spin-us US]\n"
    "                         [--store DIR] [--store-prefix-capacity SIZE] [--verify]\n"
    "Each flag may also come from PROCESSFORK_<FLAG> (e.g. PROCESSFORK_CAPACITY=8GiB);\n"
    "flags win over the environment. See docs/daemon.md.\n";

Status invalid(std::string message) {
  return Status(Code::kInvalidArgument, std::move(message));
}

// One configurable setting: its flag, its environment variable, and how to apply a value.
struct Setting {
  const char* flag;  // without "--"
  const char* env;
  bool is_switch;  // --verify: no value
};

constexpr Setting kSettings[] = {
    {"device", "PROCESSFORK_DEVICE", false},
    {"capacity", "PROCESSFORK_CAPACITY", false},
    {"chunk", "PROCESSFORK_CHUNK", false},
    {"geometry", "PROCESSFORK_GEOMETRY", false},
    {"socket", "PROCESSFORK_SOCKET", false},
    {"http", "PROCESSFORK_HTTP", false},
    {"token", "PROCESSFORK_TOKEN", false},
    {"http-auth", "PROCESSFORK_HTTP_AUTH", false},
    {"http-request-timeout-ms", "PROCESSFORK_HTTP_REQUEST_TIMEOUT_MS", false},
    {"http-max-connections", "PROCESSFORK_HTTP_MAX_CONNECTIONS", false},
    {"http-max-connections-per-peer", "PROCESSFORK_HTTP_MAX_CONNECTIONS_PER_PEER", false},
    {"ready-file", "PROCESSFORK_READY_FILE", false},
    {"max-clients", "PROCESSFORK_MAX_CLIENTS", false},
    {"frame-timeout-ms", "PROCESSFORK_FRAME_TIMEOUT_MS", false},
    {"spin-us", "PROCESSFORK_SPIN_US", false},
    {"store", "PROCESSFORK_STORE", false},
    {"store-prefix-capacity", "PROCESSFORK_STORE_PREFIX_CAPACITY", false},
    {"verify", "PROCESSFORK_VERIFY", true},
};

// A decimal integer in lo..hi; kInvalidArgument naming `what` and the range otherwise.
Result<std::uint32_t> bounded(const std::string& value, std::uint32_t lo, std::uint32_t hi,
                              const char* what, const std::string& source) {
  std::uint32_t n = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc() || ptr != value.data() + value.size() || n < lo ||
      n > hi) {
    return invalid(source + ": '" + value + "' is not " + what + " in " + std::to_string(lo) +
                   ".." + std::to_string(hi));
  }
  return n;
}

// A boolean setting: 1/true/yes/on or 0/false/no/off ("" = off).
Result<bool> boolean(const std::string& value, const std::string& source) {
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off" || value.empty()) {
    return false;
  }
  return invalid(source + ": '" + value + "' is not a boolean (on/off, 1/0, true/false)");
}

Status apply(DaemonConfig* c, std::string_view flag, const std::string& value,
             const std::string& source) {
  auto fail = [&](const std::string& why) { return invalid(source + ": " + why); };
  if (flag == "device") {
    if (value.empty()) return fail("empty device (auto, host, cuda or cuda:N)");
    c->device = value;
  } else if (flag == "capacity" || flag == "chunk") {
    Result<std::size_t> size = parse_size(value);
    if (!size.is_ok()) return fail(size.status().message());
    (flag == "capacity" ? c->capacity_bytes : c->chunk_bytes) = *size;
  } else if (flag == "geometry") {
    if (Result<rt::Geometry> g = rt::parse_geometry(value); !g.is_ok()) {
      return fail(g.status().message());
    }
    c->geometry = value;
  } else if (flag == "socket") {
    if (value.empty() || value.size() >= sizeof(sockaddr_un::sun_path)) {
      return fail("socket path must be 1.." + std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                  " bytes long");
    }
    c->socket_path = value;
  } else if (flag == "http") {
    if (value != "off") {
      if (Result<HostPort> hp = parse_host_port(value); !hp.is_ok()) {
        return fail(hp.status().message());
      }
    }
    c->http = value;
  } else if (flag == "token") {
    for (char ch : value) {
      if (!std::isgraph(static_cast<unsigned char>(ch))) {
        return fail("the token must be printable ASCII without spaces");
      }
    }
    c->token = value;
  } else if (flag == "ready-file") {
    if (value.empty()) return fail("empty path");
    c->ready_file = value;
  } else if (flag == "max-clients") {
    PF_ASSIGN_OR_RETURN(c->max_clients, bounded(value, 1, 65536, "a client count", source));
  } else if (flag == "frame-timeout-ms") {
    PF_ASSIGN_OR_RETURN(c->frame_timeout_ms,
                        bounded(value, 10, 600000, "a frame timeout in ms", source));
  } else if (flag == "spin-us") {
    PF_ASSIGN_OR_RETURN(c->spin_us, bounded(value, 0, 10000, "a spin time in µs", source));
  } else if (flag == "http-auth") {
    if (value.empty()) return fail("empty value (on or off)");
    PF_ASSIGN_OR_RETURN(c->http_auth, boolean(value, source));
  } else if (flag == "http-request-timeout-ms") {
    PF_ASSIGN_OR_RETURN(c->http_request_timeout_ms,
                        bounded(value, 10, 600000, "a request timeout in ms", source));
  } else if (flag == "http-max-connections") {
    PF_ASSIGN_OR_RETURN(c->http_max_connections,
                        bounded(value, 1, 4096, "a connection count", source));
  } else if (flag == "http-max-connections-per-peer") {
    PF_ASSIGN_OR_RETURN(c->http_max_connections_per_peer,
                        bounded(value, 1, 4096, "a connection count", source));
  } else if (flag == "store") {
    if (value.empty()) return fail("empty store directory");
    c->store_dir = value;
  } else if (flag == "store-prefix-capacity") {
    Result<std::size_t> size = parse_size(value);
    if (!size.is_ok()) return fail(size.status().message());
    c->store_prefix_capacity = *size;
  } else if (flag == "verify") {
    PF_ASSIGN_OR_RETURN(c->verify, boolean(value, source));
  }
  return Status::ok();
}

const Setting* find_setting(std::string_view flag) {
  for (const Setting& s : kSettings) {
    if (flag == s.flag) return &s;
  }
  return nullptr;
}

Status write_ready_file(const std::string& path, const nlohmann::json& content) {
  return replace_file(path, content.dump() + "\n", /*owner_only=*/false);
}

// Restores the signal state serve_main changed, whatever path it returns by.
struct SignalScope {
  sigset_t old_mask{};
  struct sigaction old_pipe {};
  bool active = false;

  Status enter(sigset_t* handled) {
    sigemptyset(handled);
    sigaddset(handled, SIGTERM);
    sigaddset(handled, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, handled, &old_mask) != 0) {
      return PF_ERROR(Code::kSystem, "cannot block SIGTERM/SIGINT");
    }
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, &old_pipe);
    active = true;
    return Status::ok();
  }
  ~SignalScope() {
    if (!active) return;
    sigaction(SIGPIPE, &old_pipe, nullptr);
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  }
};

}  // namespace

Result<std::size_t> parse_size(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  if (digits == 0) {
    return invalid("'" + std::string(text) + "' is not a size (e.g. 4GiB, 64MiB, 1048576)");
  }
  std::uint64_t number = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, number);
  if (ec != std::errc()) return invalid("'" + std::string(text) + "' is too large");
  const std::string_view unit = text.substr(digits);
  struct Unit {
    std::string_view name;
    unsigned shift;
  };
  static constexpr Unit kUnits[] = {{"", 0},     {"B", 0},   {"K", 10},   {"Ki", 10}, {"KiB", 10},
                                    {"M", 20},   {"Mi", 20}, {"MiB", 20}, {"G", 30},  {"Gi", 30},
                                    {"GiB", 30}, {"T", 40},  {"Ti", 40},  {"TiB", 40}};
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    if (number > (std::numeric_limits<std::size_t>::max() >> u.shift)) {
      return invalid("'" + std::string(text) + "' is too large");
    }
    return static_cast<std::size_t>(number << u.shift);
  }
  return invalid("'" + std::string(text) + "' has an unknown unit '" + std::string(unit) +
                 "' (use B, KiB, MiB, GiB or TiB)");
}

Result<DaemonConfig> parse_serve_args(int argc, char** argv) {
  DaemonConfig config;
  // The environment first, then flags on top.
  for (const Setting& s : kSettings) {
    const char* value = std::getenv(s.env);
    if (value == nullptr) continue;
    PF_TRY(apply(&config, s.flag, value, s.env));
  }
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i] == nullptr ? "" : argv[i];
    if (arg.rfind("--", 0) != 0) return invalid("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const std::size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Setting* s = find_setting(name);
    if (s == nullptr) return invalid("unknown flag --" + name);
    if (s->is_switch) {
      PF_TRY(apply(&config, s->flag, value.value_or("1"), "--" + name));
      continue;
    }
    if (!value) {
      if (i + 1 >= argc || argv[i + 1] == nullptr) return invalid("--" + name + " needs a value");
      value = argv[++i];
    }
    PF_TRY(apply(&config, s->flag, *value, "--" + name));
  }
  if (config.capacity_bytes == 0) return invalid("--capacity must be more than 0 bytes");
  if (config.chunk_bytes > config.capacity_bytes) {
    return invalid("--chunk (" + std::to_string(config.chunk_bytes) +
                   " bytes) exceeds --capacity (" + std::to_string(config.capacity_bytes) +
                   " bytes)");
  }
  if (config.socket_path.empty()) config.socket_path = default_socket_path();
  if (config.http != "off") {
    PF_ASSIGN_OR_RETURN(HostPort hp, parse_host_port(config.http));
    if (!config.http_auth && !is_loopback_host(hp.host)) {
      return invalid("--http-auth=off is allowed only on a loopback --http (127.0.0.1, ::1), not " +
                     config.http);
    }
    if (!is_loopback_host(hp.host) && config.token.empty()) {
      return invalid("--http " + config.http +
                     " is not a loopback address: set --token (or PROCESSFORK_TOKEN) to serve "
                     "it, or bind 127.0.0.1");
    }
    if (!config.http_auth && !config.token.empty()) {
      return invalid("--http-auth=off and --token contradict each other; give one");
    }
  }
  return config;
}

namespace {

// Every attached client's chunk export costs the daemon an fd while it is sent, and a pool
// has up to thousands of chunks: run with the soft open-file limit raised to the hard one,
// and say so. Best effort: a failure is logged and the daemon runs with what it has.
void raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    log_line("could not raise the open-file limit from " + std::to_string(before) + ": " +
             std::strerror(errno));
    return;
  }
  log_line("raised the open-file limit from " + std::to_string(before) + " to " +
           std::to_string(limit.rlim_cur));
}

}  // namespace

int serve_main(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    if (argv[i] != nullptr &&
        (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0)) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  Result<DaemonConfig> parsed = parse_serve_args(argc, argv);
  if (!parsed.is_ok()) {
    std::fprintf(stderr, "processfork serve: %s\n%s", parsed.status().message().c_str(), kUsage);
    return 2;
  }
  const DaemonConfig& config = *parsed;
  auto start_failure = [](const std::string& what, const Status& s) {
    log_line("cannot start: " + what + ": " + s.message());
    return 1;
  };

  raise_open_file_limit();

  sigset_t handled;
  SignalScope signals;
  if (Status s = signals.enter(&handled); !s.is_ok()) return start_failure("signals", s);
  UniqueFd sigfd(signalfd(-1, &handled, SFD_CLOEXEC));
  if (!sigfd.valid()) return start_failure("signals", PF_ERRNO("signalfd"));

  Result<vmm::BackendChoice> choice = vmm::open_backend(config.device);
  if (!choice.is_ok()) return start_failure("device '" + config.device + "'", choice.status());
  std::unique_ptr<vmm::Backend> backend = std::move(choice->backend);
  log_line("backend " + choice->reason);

  Result<rt::Geometry> geometry = rt::parse_geometry(config.geometry);
  if (!geometry.is_ok()) return start_failure("geometry", geometry.status());
  // The store first (it owns the boot epoch when there is one), then the runtime: every
  // branch and lease id carries the epoch (runtime/ids.h).
  std::unique_ptr<kernels::PageKernels> store_kernels;
  std::unique_ptr<rt::Store> store;
  BootEpoch epoch;
  if (!config.store_dir.empty()) {
    store_kernels = kernels::make_host_kernels();
    rt::StoreOptions so;
    so.dir = config.store_dir;
    so.geometry = *geometry;
    so.prefix_capacity_bytes = config.store_prefix_capacity;
    Result<std::unique_ptr<rt::Store>> opened = rt::Store::open(so, *store_kernels);
    if (!opened.is_ok()) return start_failure("store " + config.store_dir, opened.status());
    store = std::move(*opened);
    Result<std::uint32_t> e = store->next_boot_epoch();
    if (!e.is_ok()) return start_failure("store " + config.store_dir, e.status());
    epoch = BootEpoch{*e, "store " + config.store_dir};
  } else {
    epoch = choose_boot_epoch(config.socket_path);
  }
  log_line("boot epoch " + std::to_string(epoch.epoch) + " from " + epoch.source);
  rt::RuntimeOptions options;
  options.id_epoch = epoch.epoch;
  options.geometry = *geometry;
  options.pool.capacity_bytes = config.capacity_bytes;
  options.pool.chunk_bytes = config.chunk_bytes;
  options.verify_each_op = config.verify || rt::kVerifyByDefault;
  Result<std::unique_ptr<rt::Runtime>> runtime = rt::Runtime::create(*backend, options);
  if (!runtime.is_ok()) return start_failure("pool", runtime.status());
  if (store) {
    if (Status s = (*runtime)->attach_store(*store); !s.is_ok()) {
      return start_failure("store " + config.store_dir, s);
    }
    const rt::StoreStatus st = (*runtime)->store_status();
    log_line("store " + config.store_dir + ": " + std::to_string(st.snapshots_durable) +
             " snapshots, " + std::to_string(st.store.refs) + " refs, " +
             std::to_string(st.store.prefix_entries) + " prefix pages, " +
             std::to_string(st.store.blobs) + " blobs (" + std::to_string(st.store.blob_bytes) +
             " bytes)" +
             (st.store.quarantined ? ", " + std::to_string(st.store.quarantined) + " quarantined"
                                   : std::string()));
  }

  {
    Service service(
        **runtime, PoolIdentity{std::string(backend->name()), backend->device(), PF_VERSION,
                                epoch.epoch, backend->device_uuid(), backend->device_pci_bus_id()});
    Result<std::unique_ptr<UdsServer>> uds = UdsServer::start(
        service, UdsOptions{.path = config.socket_path,
                            .max_clients = config.max_clients,
                            .frame_timeout = std::chrono::milliseconds(config.frame_timeout_ms),
                            .spin_us = config.spin_us});
    if (!uds.is_ok()) return start_failure("socket " + config.socket_path, uds.status());

    std::unique_ptr<HttpServer> http;
    // Written while the port is served with auth; removed on every way out (a stale one of
    // an earlier run too).
    TokenFile token_file(token_file_path(config.socket_path));
    if (config.http != "off") {
      Result<HostPort> hp = parse_host_port(config.http);  // validated by parse_serve_args
      if (!hp.is_ok()) return start_failure("--http", hp.status());
      HttpOptions options{
          .bind = *hp,
          .token = config.token,
          .open_probes = config.token.empty(),
          .request_timeout = std::chrono::milliseconds(config.http_request_timeout_ms),
          .max_connections = config.http_max_connections,
          .max_connections_per_peer = config.http_max_connections_per_peer};
      if (config.http_auth && options.token.empty()) {
        Result<std::string> token = random_token();
        if (!token.is_ok()) return start_failure("the HTTP token", token.status());
        options.token = std::move(*token);
      }
      if (config.http_auth) {
        if (Status s = token_file.publish(options.token); !s.is_ok()) {
          return start_failure("the HTTP token file", s);
        }
      }
      Result<std::unique_ptr<HttpServer>> started = HttpServer::start(service, options);
      if (!started.is_ok()) return start_failure("--http " + config.http, started.status());
      http = std::move(*started);
    }
    const std::string http_address = http ? format_host_port(http->address()) : "";

    if (!config.ready_file.empty()) {
      nlohmann::json ready{
          {"pid", getpid()},
          {"socket", config.socket_path},
          {"http", http ? nlohmann::json(http_address) : nlohmann::json()},
          {"token_file", token_file.published().empty() ? nlohmann::json()
                                                        : nlohmann::json(token_file.published())},
          {"backend", service.identity().backend},
          {"device", service.identity().device},
          {"device_uuid", service.identity().device_uuid},
          {"boot_epoch", epoch.epoch},
          {"store",
           config.store_dir.empty() ? nlohmann::json() : nlohmann::json(config.store_dir)}};
      if (Status s = write_ready_file(config.ready_file, ready); !s.is_ok()) {
        return start_failure("ready file", s);
      }
    }
    const rt::PoolLayout layout = (*runtime)->pool_layout();
    log_line(
        "serving " + geometry->to_string() + " pool of " + std::to_string(layout.capacity_pages) +
        " pages (" + std::to_string(layout.page_bytes) + "-byte pages, " +
        std::to_string(layout.chunk_bytes) + "-byte chunks) on unix:" + config.socket_path +
        (http ? " and http://" + http_address +
                    (config.http_auth ? " (token in " + token_file.published() + ")" : " (no auth)")
              : std::string(" (HTTP off)")) +
        ", pid " + std::to_string(getpid()));

    signalfd_siginfo info{};
    for (;;) {
      const ssize_t n = read(sigfd.get(), &info, sizeof info);
      if (n == static_cast<ssize_t>(sizeof info)) break;
      if (n < 0 && errno == EINTR) continue;
      log_line(std::string("signalfd read failed: ") + std::strerror(errno) + "; shutting down");
      break;
    }
    log_line(std::string("received ") +
             (info.ssi_signo == SIGINT    ? "SIGINT"
              : info.ssi_signo == SIGTERM ? "SIGTERM"
                                          : "?") +
             ", shutting down");
    if (http) http->stop();
    (*uds)->stop();
    if (!config.ready_file.empty()) std::remove(config.ready_file.c_str());
    const rt::PoolStats stats = (*runtime)->pool_stats();
    log_line("stopped: " + std::to_string(service.live_leases()) + " leases left, " +
             std::to_string(stats.branches) + " branches and " + std::to_string(stats.snapshots) +
             " snapshots released");
  }
  runtime->reset();  // finishes the write-behind: every snapshot taken is on disk
  store.reset();
  backend.reset();
  return 0;
}

}  // namespace pf::ipc
