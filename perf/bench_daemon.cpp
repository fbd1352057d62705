// bench_daemon: the daemon as engines and operators see it (DESIGN §7, issue 4).
//
// Starts `processfork serve` (fork/exec, --ready-file), prefills a context through
// libprocessfork (KV bytes written through the client's own mapping, as an engine does),
// and measures, side by side in one run:
//  - attach cost (connect + HELLO + attach + map every chunk) against pool size, taken
//    while the context grows through 64 MiB, 1 GiB and 4 GiB of mapped chunks (plus the
//    same 4 GiB in 2 MiB chunks from a second daemon: 2048 fds over 9 attach round trips);
//  - Unix-socket round trips of fork(n) from the T-token snapshot and of checkout (p50/p99;
//    what each op made is freed between timed calls, untimed);
//  - the same two over HTTP (cpp-httplib client, keep-alive);
//  - throughput with 1, 8 and 64 client threads, each with its own connection.
// Prints a table; --json writes perf/results/bench_daemon-<machine>-<date>.json (or --out).
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "perf/bench_common.h"
#include "shims/include/processfork.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

using pf::bench::cpu_model;
using pf::bench::die;
using pf::bench::meminfo_kib;
using pf::bench::us_since;
using Stats = pf::bench::Summary;
constexpr auto stats = pf::bench::summarize;

void must(pf_result r, const char* what) {
  if (r != PF_OK) {
    die(std::string(what) + ": " + pf_result_string(r) + ": " + pf_last_error_message(nullptr));
  }
}

Json to_json(const Stats& s) {
  return Json{{"p50_us", s.p50},
              {"p99_us", s.p99},
              {"mean_us", s.mean},
              {"min_us", s.min},
              {"samples", s.n}};
}

struct Options {
  std::string cli;  // the processfork binary (daemon)
  std::string geometry;
  std::uint64_t tokens = 32768;
  std::uint32_t n = 12;
  std::size_t iterations = 2000;
  std::size_t http_iterations = 1000;
  double throughput_seconds = 1.0;
  bool second_daemon = true;
  bool json = false;
  std::string out;
};

// One `processfork serve` child.
class Daemon {
 public:
  Daemon(const Options& o, const std::string& geometry, const std::string& capacity,
         const std::string& chunk) {
    char tmpl[] = "/tmp/pf-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) die("mkdtemp");
    dir_ = tmpl;
    socket_ = dir_ + "/s";
    const std::string ready = dir_ + "/ready";
    std::vector<std::string> args = {o.cli,        "serve",       "--device",     "host",
                                     "--geometry", geometry,      "--capacity",   capacity,
                                     "--chunk",    chunk,         "--socket",     socket_,
                                     "--http",     "127.0.0.1:0", "--ready-file", ready};
    pid_ = fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
      const int log = open((dir_ + "/daemon.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (log >= 0) {
        dup2(log, 1);
        dup2(log, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (!fs::exists(ready)) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) die("daemon exited: " + log());
      if (Clock::now() > deadline) die("daemon not ready: " + log());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::ifstream in(ready);
    const Json r = Json::parse(in);
    const std::string http = r.value("http", "");
    const std::size_t colon = http.rfind(':');
    if (colon == std::string::npos) die("daemon's ready file names no HTTP port");
    http_host_ = http.substr(0, colon);
    http_port_ = std::stoi(http.substr(colon + 1));
    // The bearer token the daemon wrote for local clients (HTTP auth is on by default).
    if (r.contains("token_file") && r["token_file"].is_string()) {
      std::ifstream token_in(r["token_file"].get<std::string>());
      std::getline(token_in, token_);
    }
  }
  ~Daemon() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string log() const {
    std::ifstream in(dir_ + "/daemon.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  const std::string& socket() const { return socket_; }
  const std::string& http_host() const { return http_host_; }
  int http_port() const { return http_port_; }
  const std::string& token() const { return token_; }

 private:
  std::string dir_, socket_, http_host_, token_;
  int http_port_ = 0;
  pid_t pid_ = -1;
};

pf_client* connect(const std::string& socket, std::uint32_t flags) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = socket.c_str();
  cfg.flags = flags;
  pf_client* c = nullptr;
  must(pf_connect(&cfg, &c), "connect");
  return c;
}

// Appends tokens [from, to) to branch b; with `write`, fills every new token's K and V rows
// through this process's mapping (one memset per run and layer half).
void extend(pf_client* c, pf_branch_id b, std::uint64_t from, std::uint64_t to, bool write,
            const pf_pool_info& info) {
  const std::size_t token_bytes = std::size_t{info.kv_heads} * info.head_dim *
                                  (info.dtype == PF_DTYPE_FP32 ? 4
                                   : info.dtype >= 3           ? 1
                                                               : 2);
  constexpr std::uint64_t kStep = 4096;
  for (std::uint64_t at = from; at < to; at += kStep) {
    const std::uint64_t n = std::min(kStep, to - at);
    std::vector<std::uint32_t> tokens(n);
    for (std::uint64_t i = 0; i < n; ++i) tokens[i] = static_cast<std::uint32_t>(1000 + at + i);
    std::vector<pf_write_run> runs(pf_append_max_runs(c, n));
    pf_append_result res{};
    must(pf_append(c, b, tokens.data(), n, runs.data(), runs.size(), &res), "append");
    if (!write) continue;
    for (std::size_t r = 0; r < res.n_runs; ++r) {
      void* p = nullptr;
      must(pf_page_ptr(c, runs[r].page, &p), "page_ptr");
      for (std::uint32_t layer = 0; layer < info.layers; ++layer) {
        for (std::uint32_t half = 0; half < 2; ++half) {
          const std::size_t off =
              ((std::size_t{layer} * 2 + half) * info.page_tokens + runs[r].first_slot) *
              token_bytes;
          std::memset(static_cast<char*>(p) + off,
                      static_cast<int>((runs[r].first_token + layer) & 0xff),
                      std::size_t{runs[r].count} * token_bytes);
        }
      }
    }
  }
}

struct AttachRow {
  std::string label;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t mapped_chunks = 0;
  std::uint64_t mapped_bytes = 0;
  Stats connect_hello;  // connect + HELLO only
  Stats attach;         // connect + HELLO + attach + map
};

AttachRow measure_attach(const std::string& socket, const std::string& label, int reps) {
  AttachRow row;
  row.label = label;
  std::vector<double> hello_us, attach_us;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    pf_client* c = connect(socket, PF_CONNECT_NO_ATTACH);
    hello_us.push_back(us_since(t0));
    pf_disconnect(c);
    t0 = Clock::now();
    c = connect(socket, 0);
    attach_us.push_back(us_since(t0));
    pf_mapping_info m{};
    must(pf_mapping_info_get(c, &m), "mapping info");
    pf_pool_info info{};
    info.struct_size = sizeof info;
    must(pf_pool_info_get(c, &info), "pool info");
    row.mapped_chunks = m.mapped_chunks;
    row.mapped_bytes = m.mapped_bytes;
    row.chunk_bytes = info.chunk_bytes;
    pf_disconnect(c);
  }
  row.connect_hello = stats(hello_us);
  row.attach = stats(attach_us);
  return row;
}

struct ThroughputRow {
  std::string op;
  int threads = 0;
  double seconds = 0;
  std::uint64_t ops = 0;       // fork(n) or checkout calls
  std::uint64_t requests = 0;  // every round trip, frees included
  Stats latency;               // of the op itself, all threads
};

ThroughputRow measure_throughput(const std::string& socket, const std::string& cid, bool do_fork,
                                 std::uint32_t n, int threads, double seconds) {
  std::vector<pf_client*> clients;
  for (int t = 0; t < threads; ++t) clients.push_back(connect(socket, PF_CONNECT_NO_ATTACH));
  std::atomic<bool> go{false}, stop{false};
  std::atomic<std::uint64_t> ops{0}, requests{0};
  std::vector<std::vector<double>> lat(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      pf_client* c = clients[static_cast<std::size_t>(t)];
      const pf_source src = pf_source_named(cid.c_str());
      std::vector<pf_branch_id> kids(n);
      while (!go.load()) std::this_thread::yield();
      std::uint64_t my_ops = 0, my_requests = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const auto t0 = Clock::now();
        if (do_fork) {
          must(pf_fork(c, &src, n, kids.data(), kids.size(), nullptr, 0), "fork");
          lat[static_cast<std::size_t>(t)].push_back(us_since(t0));
          for (pf_branch_id k : kids) must(pf_branch_free(c, k), "free");
          my_requests += 1 + n;
        } else {
          pf_branch_id b = 0;
          must(pf_checkout(c, cid.c_str(), &b, nullptr, 0), "checkout");
          lat[static_cast<std::size_t>(t)].push_back(us_since(t0));
          must(pf_branch_free(c, b), "free");
          my_requests += 2;
        }
        ++my_ops;
      }
      ops += my_ops;
      requests += my_requests;
    });
  }
  const auto t0 = Clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  const double elapsed = us_since(t0) / 1e6;
  for (pf_client* c : clients) pf_disconnect(c);
  ThroughputRow row;
  row.op = do_fork ? "fork(" + std::to_string(n) + ")+free" : "checkout+free";
  row.threads = threads;
  row.seconds = elapsed;
  row.ops = ops;
  row.requests = requests;
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  row.latency = stats(std::move(all));
  return row;
}

std::string human_bytes(std::uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.0f MiB", static_cast<double>(b) / (1ull << 20));
  }
  return buf;
}

Options parse(int argc, char** argv) {
  Options o;
  o.cli = (fs::path(fs::read_symlink("/proc/self/exe")).parent_path().parent_path() / "shims" /
           "processfork")
              .string();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--cli")
      o.cli = val();
    else if (a == "--geometry")
      o.geometry = val();
    else if (a == "--tokens")
      o.tokens = std::stoull(val());
    else if (a == "--n")
      o.n = static_cast<std::uint32_t>(std::stoul(val()));
    else if (a == "--iterations")
      o.iterations = std::stoull(val());
    else if (a == "--http-iterations")
      o.http_iterations = std::stoull(val());
    else if (a == "--seconds")
      o.throughput_seconds = std::stod(val());
    else if (a == "--no-second-daemon")
      o.second_daemon = false;
    else if (a == "--json")
      o.json = true;
    else if (a == "--out")
      o.out = val();
    else if (a == "--help" || a == "-h") {
      std::puts(
          "bench_daemon [--geometry NAME] [--tokens T] [--n N] [--iterations I]\n"
          "             [--http-iterations I] [--seconds S] [--no-second-daemon]\n"
          "             [--json [--out FILE]] [--cli PATH/processfork]");
      std::exit(0);
    } else {
      die("unknown argument " + a);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  pf::bench::set_program("bench_daemon");
  signal(SIGPIPE, SIG_IGN);
  Options o = parse(argc, argv);
  // Other work on the machine shows in the tails: record it with the results.
  std::string loadavg_at_start;
  std::getline(std::ifstream("/proc/loadavg") >> std::ws, loadavg_at_start);
  if (!fs::exists(o.cli)) die("no processfork binary at " + o.cli + " (use --cli)");

  // llama-3-8b (2 MiB pages) when its KV for T tokens fits comfortably, else tiny.
  const std::uint64_t avail = meminfo_kib("MemAvailable:") * 1024;
  const std::uint64_t kv_8b = o.tokens / 16 * (2ull << 20);
  std::string geometry_note;
  if (o.geometry.empty()) {
    if (kv_8b * 2 + (2ull << 30) < avail) {
      o.geometry = "llama-3-8b";
    } else {
      o.geometry = "tiny";
      geometry_note = "llama-3-8b KV does not fit in half of MemAvailable; using tiny";
    }
  }
  const bool big = o.geometry == "llama-3-8b";
  const std::string capacity = big ? std::to_string((kv_8b >> 20) + 512) + "MiB" : "256MiB";

  std::fprintf(stderr, "bench_daemon: starting %s with %s geometry, capacity %s\n", o.cli.c_str(),
               o.geometry.c_str(), capacity.c_str());
  Daemon daemon(o, o.geometry, capacity, "64MiB");
  pf_client* c = connect(daemon.socket(), 0);
  pf_pool_info info{};
  info.struct_size = sizeof info;
  must(pf_pool_info_get(c, &info), "pool info");

  // --- prefill through the library, measuring attach as the pool grows --------------------
  pf_new_branch ctx{};
  must(pf_branch_create(c, nullptr, 0, &ctx), "branch");
  std::vector<AttachRow> attach_rows;
  std::uint64_t have = 0;
  const auto prefill_t0 = Clock::now();
  double prefill_us = 0;
  for (std::uint64_t target_bytes : {64ull << 20, 1ull << 30, 4ull << 30}) {
    const std::uint64_t target_tokens =
        std::min<std::uint64_t>(o.tokens, target_bytes / info.page_bytes * info.page_tokens);
    const auto t0 = Clock::now();
    extend(c, ctx.branch, have, target_tokens, true, info);
    prefill_us += us_since(t0);
    have = target_tokens;
    if (target_tokens * info.page_bytes / info.page_tokens < target_bytes) break;
    attach_rows.push_back(measure_attach(daemon.socket(), human_bytes(target_bytes) + " pool", 30));
  }
  if (have < o.tokens) {
    const auto t0 = Clock::now();
    extend(c, ctx.branch, have, o.tokens, true, info);
    prefill_us += us_since(t0);
  }
  (void)prefill_t0;
  const auto snap_t0 = Clock::now();
  pf_snapshot_result snap{};
  must(pf_snapshot(c, ctx.branch, "bench-context", &snap), "snapshot");
  const double snapshot_us = us_since(snap_t0);
  const std::string cid = snap.cid;
  std::fprintf(stderr, "bench_daemon: context of %llu tokens (%llu pages) -> %s\n",
               static_cast<unsigned long long>(snap.n_tokens),
               static_cast<unsigned long long>(snap.n_pages), cid.c_str());

  // --- UDS round trips ---------------------------------------------------------------------
  // Once with the default blocking receive, once with the client busy-waiting up to 50 us
  // for each reply (pf_connect_config.spin_us).
  auto uds_round_trips = [&](std::uint32_t spin_us, Stats* fork_stats, Stats* checkout_stats) {
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    cfg.socket_path = daemon.socket().c_str();
    cfg.flags = PF_CONNECT_NO_ATTACH;
    cfg.spin_us = spin_us;
    pf_client* q = nullptr;
    must(pf_connect(&cfg, &q), "connect");
    std::vector<double> fork_us, checkout_us;
    const pf_source src = pf_source_named(cid.c_str());
    std::vector<pf_branch_id> kids(o.n);
    for (std::size_t i = 0; i < o.iterations + 100; ++i) {
      auto t0 = Clock::now();
      must(pf_fork(q, &src, o.n, kids.data(), kids.size(), nullptr, 0), "fork");
      const double f = us_since(t0);
      for (pf_branch_id k : kids) must(pf_branch_free(q, k), "free");
      pf_branch_id b = 0;
      t0 = Clock::now();
      must(pf_checkout(q, cid.c_str(), &b, nullptr, 0), "checkout");
      const double k = us_since(t0);
      must(pf_branch_free(q, b), "free");
      if (i >= 100) {  // warm-up
        fork_us.push_back(f);
        checkout_us.push_back(k);
      }
    }
    pf_disconnect(q);
    *fork_stats = stats(fork_us);
    *checkout_stats = stats(checkout_us);
  };
  Stats uds_fork, uds_checkout, spin_fork, spin_checkout;
  uds_round_trips(0, &uds_fork, &uds_checkout);
  uds_round_trips(50, &spin_fork, &spin_checkout);

  // --- HTTP round trips --------------------------------------------------------------------
  httplib::Client http(daemon.http_host(), daemon.http_port());
  http.set_keep_alive(true);
  http.set_tcp_nodelay(true);
  if (!daemon.token().empty()) http.set_bearer_token_auth(daemon.token().c_str());
  std::vector<double> http_fork_us, http_checkout_us;
  {
    const std::string fork_body = Json{{"cid", cid}, {"n", o.n}}.dump();
    const std::string checkout_body = Json{{"cid", cid}}.dump();
    for (std::size_t i = 0; i < o.http_iterations + 50; ++i) {
      auto t0 = Clock::now();
      auto r = http.Post("/v1/processfork/fork", fork_body, "application/json");
      const double f = us_since(t0);
      if (!r || r->status != 201) die("HTTP fork failed");
      for (const Json& id : Json::parse(r->body)["branches"]) {
        auto d = http.Delete("/v1/branches/" + std::to_string(id.get<std::uint64_t>()));
        if (!d || d->status != 204) die("HTTP delete failed");
      }
      t0 = Clock::now();
      r = http.Post("/v1/processfork/checkout", checkout_body, "application/json");
      const double k = us_since(t0);
      if (!r || r->status != 201) die("HTTP checkout failed");
      auto d = http.Delete("/v1/branches/" +
                           std::to_string(Json::parse(r->body)["branch"].get<std::uint64_t>()));
      if (!d || d->status != 204) die("HTTP delete failed");
      if (i >= 50) {
        http_fork_us.push_back(f);
        http_checkout_us.push_back(k);
      }
    }
  }
  const Stats http_fork = stats(http_fork_us);
  const Stats http_checkout = stats(http_checkout_us);

  // --- throughput --------------------------------------------------------------------------
  std::vector<ThroughputRow> tput;
  for (int threads : {1, 8, 64}) {
    tput.push_back(
        measure_throughput(daemon.socket(), cid, true, o.n, threads, o.throughput_seconds));
    tput.push_back(
        measure_throughput(daemon.socket(), cid, false, o.n, threads, o.throughput_seconds));
  }
  pf_disconnect(c);

  // --- attach of the same pool size in 2 MiB chunks ----------------------------------------
  if (o.second_daemon && big) {
    Daemon small_chunks(o, o.geometry, capacity, "2MiB");
    pf_client* w = connect(small_chunks.socket(), PF_CONNECT_NO_ATTACH);
    pf_new_branch b{};
    must(pf_branch_create(w, nullptr, 0, &b), "branch");
    // Pages are allocated (chunks created and mapped by the daemon) but not written:
    // mapping cost does not depend on page contents on the host backend.
    extend(w, b.branch, 0, o.tokens, false, info);
    attach_rows.push_back(measure_attach(small_chunks.socket(), "4.00 GiB pool, 2 MiB chunks", 30));
    pf_disconnect(w);
  }

  // --- report -------------------------------------------------------------------------------
  const pf::bench::Machine m = pf::bench::machine();
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  const std::string date = pf::bench::utc(now, "%Y-%m-%dT%H:%M:%SZ");
  const std::string day = pf::bench::utc(now, "%Y-%m-%d");
  Json out = {
      {"benchmark", "bench_daemon"},
      {"date", date},
      {"machine",
       {{"cpu", m.cpu},
        {"cores", m.cores},
        {"mem_total_gib", m.mem_total_gib},
        {"kernel", m.kernel},
        {"loadavg_at_start", loadavg_at_start},
        {"backend", info.backend},
        {"device", info.device},
        {"gpu", info.device_memory != 0}}},
      {"geometry", o.geometry},
      {"geometry_note", geometry_note},
      {"page_bytes", info.page_bytes},
      {"tokens", snap.n_tokens},
      {"pages", snap.n_pages},
      {"kv_bytes", snap.n_pages * info.page_bytes},
      {"n", o.n},
      {"prefill_through_library_s", prefill_us / 1e6},
      {"snapshot_s", snapshot_us / 1e6},
      {"uds",
       {{"iterations", o.iterations},
        // the daemon's idle spin between frames (serve --spin-us; its default unless the
        // environment set PROCESSFORK_SPIN_US for the daemon this benchmark started)
        {"daemon_spin_us",
         std::getenv("PROCESSFORK_SPIN_US") ? std::getenv("PROCESSFORK_SPIN_US") : "default"},
        {"fork", to_json(uds_fork)},
        {"checkout", to_json(uds_checkout)},
        {"client_spin_50us",
         {{"fork", to_json(spin_fork)}, {"checkout", to_json(spin_checkout)}}}}},
      {"http",
       {{"iterations", o.http_iterations},
        {"keep_alive", true},
        {"fork", to_json(http_fork)},
        {"checkout", to_json(http_checkout)}}},
  };
  Json att = Json::array();
  for (const AttachRow& r : attach_rows) {
    att.push_back({{"pool", r.label},
                   {"chunk_bytes", r.chunk_bytes},
                   {"mapped_chunks", r.mapped_chunks},
                   {"mapped_bytes", r.mapped_bytes},
                   {"connect_hello", to_json(r.connect_hello)},
                   {"connect_hello_attach_map", to_json(r.attach)}});
  }
  out["attach"] = att;
  Json tp = Json::array();
  for (const ThroughputRow& r : tput) {
    tp.push_back({{"op", r.op},
                  {"threads", r.threads},
                  {"seconds", r.seconds},
                  {"ops", r.ops},
                  {"ops_per_s", static_cast<double>(r.ops) / r.seconds},
                  {"requests_per_s", static_cast<double>(r.requests) / r.seconds},
                  {"latency", to_json(r.latency)}});
  }
  out["throughput"] = tp;
  out["goals"] = {{"fork_n12_uds_p99_under_50us", uds_fork.p99 < 50.0},
                  {"attach_4gib_under_20ms", !attach_rows.empty() && attach_rows.size() >= 3 &&
                                                 attach_rows[2].attach.p50 < 20000.0}};

  std::printf(
      "bench_daemon: %s, %u cores (load average %s), backend %s; geometry %s (%llu-byte pages)\n",
      cpu_model().c_str(), std::thread::hardware_concurrency(), loadavg_at_start.c_str(),
      info.backend, o.geometry.c_str(), static_cast<unsigned long long>(info.page_bytes));
  std::printf(
      "context: %llu tokens, %llu pages (%s of KV), prefill through the library %.2f s, "
      "snapshot %.2f s\n\n",
      static_cast<unsigned long long>(snap.n_tokens), static_cast<unsigned long long>(snap.n_pages),
      human_bytes(snap.n_pages * info.page_bytes).c_str(), prefill_us / 1e6, snapshot_us / 1e6);
  std::printf("%-28s %10s %10s %10s\n", "round trip", "p50 (us)", "p99 (us)", "mean (us)");
  auto line = [](const char* what, const Stats& s) {
    std::printf("%-28s %10.1f %10.1f %10.1f\n", what, s.p50, s.p99, s.mean);
  };
  const std::string fork_label = "UDS fork(" + std::to_string(o.n) + ")";
  const std::string http_fork_label = "HTTP fork(" + std::to_string(o.n) + ")";
  line(fork_label.c_str(), uds_fork);
  line("UDS checkout", uds_checkout);
  const std::string spin_label = fork_label + ", spin 50us";
  line(spin_label.c_str(), spin_fork);
  line("UDS checkout, spin 50us", spin_checkout);
  line(http_fork_label.c_str(), http_fork);
  line("HTTP checkout", http_checkout);
  std::printf("\n%-30s %8s %12s %14s %14s\n", "attach", "chunks", "mapped", "hello p50 (us)",
              "attach p50/p99 (ms)");
  for (const AttachRow& r : attach_rows) {
    std::printf("%-30s %8llu %12s %14.1f %8.2f / %.2f\n", r.label.c_str(),
                static_cast<unsigned long long>(r.mapped_chunks),
                human_bytes(r.mapped_bytes).c_str(), r.connect_hello.p50, r.attach.p50 / 1000,
                r.attach.p99 / 1000);
  }
  std::printf("\n%-18s %8s %12s %14s %12s %12s\n", "throughput", "threads", "ops/s", "requests/s",
              "op p50 (us)", "op p99 (us)");
  for (const ThroughputRow& r : tput) {
    std::printf("%-18s %8d %12.0f %14.0f %12.1f %12.1f\n", r.op.c_str(), r.threads,
                static_cast<double>(r.ops) / r.seconds, static_cast<double>(r.requests) / r.seconds,
                r.latency.p50, r.latency.p99);
  }
  std::printf(
      "\ngoals: fork(%u) over UDS p99 < 50 us: %s (%.1f us; with a spinning client %.1f us); "
      "attach of 4 GiB < 20 ms: %s\n",
      o.n, uds_fork.p99 < 50.0 ? "met" : "NOT met", uds_fork.p99, spin_fork.p99,
      out["goals"]["attach_4gib_under_20ms"].get<bool>() ? "met" : "NOT met / not measured");

  if (o.json) {
    std::string path = o.out;
    if (path.empty()) {
      const fs::path src = fs::path(__FILE__).parent_path() / "results";
      path = (src / ("bench_daemon-" + pf::bench::machine_slug() + "-" + day + ".json")).string();
    }
    std::ofstream f(path);
    f << out.dump(2) << "\n";
    if (!f) die("cannot write " + path);
    std::fprintf(stderr, "bench_daemon: wrote %s\n", path.c_str());
  }
  return 0;
}
