// bench_soak: the daemon under concurrent load for a bounded time (DESIGN §8: soak tests
// live in perf/).
//
// Starts `processfork serve` (host backend, an HTTP port with a bearer token of its own),
// then for --seconds runs:
//  - --clients worker processes (perf/soak_worker.h: this binary exec'd with --worker),
//    each a loop of attach, branch_create, append, pf_kv_copy store, snapshot, fork,
//    merge, checkout with its KV loaded back and compared, diff, free and unpin;
//  - of those, --killable are SIGKILLed mid-work every --kill-every-ms (round robin) and
//    started again: a crashed client must leak nothing;
//  - one HTTP prober: GET /v1/health, /v1/pool, /metrics with Authorization: Bearer;
//  - a probe of the daemon every second: VmRSS, threads, open fds (/proc).
// Then stops the workers (SIGTERM: each finishes its cycle), unpins every snapshot left by
// killed workers, runs gc (dropping cached prefixes) and waits for the pool to return to
// the pages used before the load. Reports baseline, the first and last --window seconds
// and the state after cleanup: daemon RSS, fds, threads, op p50/p99, ops/s, kills. Exit
// status 1 when pages leaked, fds grew, a worker failed or the daemon died.
// Prints a table; --json writes perf/results/soak_<machine>.json (or --out FILE).
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "perf/bench_common.h"
#include "perf/fanout_process.h"
#include "perf/soak_probe.h"
#include "perf/soak_worker.h"
#include "shims/include/processfork.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using pf::bench::die;
using pf::soak::ProcFigures;
using pf::soak::SoakOp;
using pf::soak::SoakSample;
namespace fs = std::filesystem;

struct Options {
  std::string cli;
  double seconds = 120;
  int clients = 4;
  int killable = 2;
  int kill_every_ms = 1500;
  double window = 10;
  std::string geometry = "tiny";
  std::string capacity = "256MiB";
  std::string chunk = "2MiB";
  bool json = false;
  std::string out;
};

const char* const kToken = "soak-bench-token";

std::int64_t now_ns() {
  return Clock::now().time_since_epoch().count();
}

double since_s(std::int64_t t0_ns) {
  return static_cast<double>(now_ns() - t0_ns) / 1e9;
}

// One worker slot: the process running it now, its generation, and its samples files.
struct Slot {
  int id = 0;
  bool killable = false;
  pid_t pid = -1;
  std::uint32_t generation = 0;
  std::vector<std::string> sample_files;
};

class Soak {
 public:
  Soak(pf::demo::Daemon& d, const pf::demo::WorkDir& dir, std::int64_t t0)
      : daemon_(d), dir_(dir), t0_(t0) {}

  void start(Slot& s) {
    const std::string samples =
        dir_.file("w" + std::to_string(s.id) + "-g" + std::to_string(s.generation) + ".samples");
    s.sample_files.push_back(samples);
    s.pid =
        pf::bench::must(pf::demo::spawn_process({pf::demo::self_exe(), "--worker",
                                                 std::to_string(s.id), std::to_string(s.generation),
                                                 daemon_.socket(), samples, std::to_string(t0_)},
                                                dir_.file("workers.log")),
                        "start a worker");
  }

  // SIGKILL mid-work, reap, start again.
  void kill_and_restart(Slot& s) {
    pf::demo::kill_process(s.pid);
    ++kills_;
    ++s.generation;
    start(s);
  }

  // SIGTERM; the worker ends its cycle and exits 0. Returns false when it failed.
  bool stop(Slot& s) {
    ::kill(s.pid, SIGTERM);
    pf::Result<int> st = pf::demo::wait_process(s.pid, std::chrono::seconds(60));
    if (!st.is_ok()) {
      pf::demo::kill_process(s.pid);
      std::fprintf(stderr, "bench_soak: worker %d did not stop\n", s.id);
      return false;
    }
    // A worker started just before the stop may get SIGTERM before its handler is set:
    // it dies like a killed one (its lease cleans up), which is no failure.
    if (*st != 0 && !(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGTERM)) {
      std::fprintf(stderr, "bench_soak: worker %d: %s\n", s.id,
                   pf::demo::describe_wait_status(*st).c_str());
      return false;
    }
    return true;
  }

  // A worker that exited by itself failed (they only stop when told).
  int reap_failed(std::vector<Slot>& slots) {
    int failed = 0;
    for (Slot& s : slots) {
      int status = 0;
      if (::waitpid(s.pid, &status, WNOHANG) == s.pid) {
        std::fprintf(stderr, "bench_soak: worker %d %s\n", s.id,
                     pf::demo::describe_wait_status(status).c_str());
        ++failed;
        ++s.generation;
        start(s);
      }
    }
    return failed;
  }

  int kills() const { return kills_; }

 private:
  pf::demo::Daemon& daemon_;
  const pf::demo::WorkDir& dir_;
  std::int64_t t0_;
  int kills_ = 0;
};

std::vector<SoakSample> read_samples(const std::vector<Slot>& slots) {
  std::vector<SoakSample> all;
  for (const Slot& s : slots) {
    for (const std::string& path : s.sample_files) {
      std::ifstream in(path, std::ios::binary);
      SoakSample x;
      while (in.read(reinterpret_cast<char*>(&x), sizeof x)) all.push_back(x);  // torn tail dropped
    }
  }
  return all;
}

// Latencies and rates of the samples in [from_s, to_s).
struct Window {
  double from_s = 0, to_s = 0;
  std::size_t ops = 0, errors = 0, http = 0;  // ops: the workers' (socket round trips and
                                              // the local pf_kv_copy calls)
  pf::bench::Summary uds, http_get;
  std::map<std::string, pf::bench::Summary> by_op;
  ProcFigures proc;  // the daemon at the window's end
};

Window window(const std::vector<SoakSample>& samples, double from_s, double to_s) {
  Window w;
  w.from_s = from_s;
  w.to_s = to_s;
  std::vector<double> uds, http;
  std::map<std::string, std::vector<double>> by_op;
  for (const SoakSample& s : samples) {
    const double t = s.t_ms / 1000.0;
    if (t < from_s || t >= to_s) continue;
    if (!s.ok) ++w.errors;
    const auto op = static_cast<SoakOp>(s.op);
    (op == SoakOp::kHttpGet ? http : uds).push_back(s.us);
    by_op[pf::soak::op_name(op)].push_back(s.us);
  }
  w.ops = uds.size();
  w.http = http.size();
  w.uds = pf::bench::summarize(std::move(uds));
  w.http_get = pf::bench::summarize(std::move(http));
  for (auto& [name, v] : by_op) w.by_op[name] = pf::bench::summarize(std::move(v));
  return w;
}

Json proc_json(const ProcFigures& p) {
  return Json{{"rss_kib", p.rss_kib},
              {"rss_anon_kib", p.rss_anon_kib},
              {"rss_shmem_kib", p.rss_shmem_kib},
              {"threads", p.threads},
              {"fds", p.fds}};
}

Json window_json(const Window& w) {
  const double secs = w.to_s - w.from_s;
  Json by_op = Json::object();
  for (const auto& [name, s] : w.by_op) {
    by_op[name] = {{"n", s.n}, {"p50_us", s.p50}, {"p99_us", s.p99}};
  }
  return Json{{"from_s", w.from_s},
              {"to_s", w.to_s},
              {"ops", w.ops},
              {"ops_per_s", static_cast<double>(w.ops) / secs},
              {"op_p50_us", w.uds.p50},
              {"op_p99_us", w.uds.p99},
              {"errors", w.errors},
              {"http_gets", w.http},
              {"http_p50_us", w.http_get.p50},
              {"http_p99_us", w.http_get.p99},
              {"by_op", by_op},
              {"daemon", proc_json(w.proc)}};
}

// GET /v1/health, /v1/pool, /metrics in turn until `stop`, each recorded as a sample.
void http_prober(const std::string& host, int port, std::int64_t t0, const std::atomic<bool>& stop,
                 std::vector<SoakSample>* out, std::size_t* failures) {
  httplib::Client http(host, port);
  http.set_keep_alive(true);
  http.set_bearer_token_auth(kToken);
  const char* const paths[] = {"/v1/health", "/v1/pool", "/metrics"};
  for (std::size_t i = 0; !stop.load(); ++i) {
    const auto a = Clock::now();
    auto r = http.Get(paths[i % 3]);
    const auto b = Clock::now();
    SoakSample s;
    s.t_ms = static_cast<std::uint32_t>((b.time_since_epoch().count() - t0) / 1000000);
    s.op = static_cast<std::uint8_t>(SoakOp::kHttpGet);
    s.ok = r && r->status == 200;
    s.us = std::chrono::duration<float, std::micro>(b - a).count();
    if (!s.ok) ++*failures;
    out->push_back(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

pf_client* connect_admin(const std::string& socket) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = socket.c_str();
  cfg.flags = PF_CONNECT_NO_ATTACH;
  pf_client* c = nullptr;
  if (pf_connect(&cfg, &c) != PF_OK) die("connect: " + std::string(pf_last_error_message(nullptr)));
  return c;
}

pf_pool_stats pool_stats(pf_client* c) {
  pf_pool_stats p{};
  p.struct_size = sizeof p;
  if (pf_pool_stats_get(c, &p) != PF_OK)
    die("pool stats: " + std::string(pf_last_error_message(c)));
  return p;
}

// GET /v1/pool's answer over the socket.
Json pool_json(pf_client* c) {
  std::vector<char> json(1 << 16);
  if (pf_pool_json(c, json.data(), json.size(), nullptr) != PF_OK) die("pool json");
  return Json::parse(json.data());
}

// Unpins every snapshot (killed workers leave theirs pinned) and drops cached prefixes.
// Refs go first: their snapshots' names are refs, and a ref blocks its snapshot's unpin.
std::size_t unpin_all(pf_client* c) {
  std::vector<char> json(16 << 20);
  if (pf_refs_list(c, json.data(), json.size(), nullptr) != PF_OK) die("refs");
  const Json refs = Json::parse(json.data());
  for (const Json& r : refs["refs"]) {
    if (pf_ref_delete(c, r["name"].get<std::string>().c_str()) != PF_OK) die("ref delete");
  }
  if (pf_snapshots(c, json.data(), json.size(), nullptr) != PF_OK) die("snapshots");
  std::size_t n = 0;
  const Json list = Json::parse(json.data());
  for (const Json& s : list["snapshots"]) {
    const std::string cid = s["cid"].get<std::string>();
    const pf_result r = pf_unpin(c, cid.c_str());
    if (r == PF_OK) {
      ++n;
    } else {
      std::fprintf(stderr, "bench_soak: unpin %s: %s: %s\n", cid.c_str(), pf_result_string(r),
                   pf_last_error_message(c));
    }
  }
  pf_gc_result gc{};
  if (pf_gc(c, PF_GC_DROP_CACHE, &gc) != PF_OK) die("gc");
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  o.cli = pf::demo::self_dir() + "/../shims/processfork";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--cli") {
      o.cli = val();
    } else if (a == "--seconds") {
      o.seconds = std::stod(val());
    } else if (a == "--clients") {
      o.clients = std::stoi(val());
    } else if (a == "--killable") {
      o.killable = std::stoi(val());
    } else if (a == "--kill-every-ms") {
      o.kill_every_ms = std::stoi(val());
    } else if (a == "--window") {
      o.window = std::stod(val());
    } else if (a == "--geometry") {
      o.geometry = val();
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--out") {
      o.json = true;
      o.out = val();
    } else if (a == "--help" || a == "-h") {
      std::puts(
          "bench_soak [--seconds S (120)] [--clients N (4)] [--killable K (2)]\n"
          "           [--kill-every-ms MS (1500)] [--window S (10)] [--geometry NAME (tiny)]\n"
          "           [--json | --out FILE] [--cli PATH/processfork]");
      std::exit(0);
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.clients < 1 || o.killable < 0 || o.killable > o.clients || o.seconds <= 0 ||
      o.kill_every_ms < 1) {
    die("need --clients >= 1, 0 <= --killable <= --clients, --seconds > 0, --kill-every-ms >= 1");
  }
  o.window = std::min(o.window, o.seconds / 3);
  return o;
}

void print_table(const ProcFigures& base, const Window& first, const Window& last,
                 const ProcFigures& after) {
  std::printf("%-22s %12s %14s %14s %14s\n", "", "baseline", "first window", "last window",
              "after cleanup");
  auto row = [](const char* what, double a, double b, double c, double d) {
    std::printf("%-22s %12.0f %14.0f %14.0f %14.0f\n", what, a, b, c, d);
  };
  row("daemon RSS (KiB)", base.rss_kib, first.proc.rss_kib, last.proc.rss_kib, after.rss_kib);
  row("  of which anon (KiB)", base.rss_anon_kib, first.proc.rss_anon_kib, last.proc.rss_anon_kib,
      after.rss_anon_kib);
  row("  of which pool (KiB)", base.rss_shmem_kib, first.proc.rss_shmem_kib,
      last.proc.rss_shmem_kib, after.rss_shmem_kib);
  row("daemon open fds", base.fds, first.proc.fds, last.proc.fds, after.fds);
  row("daemon threads", base.threads, first.proc.threads, last.proc.threads, after.threads);
  std::printf("%-22s %12s %14.0f %14.0f\n", "client ops/s", "",
              first.ops / (first.to_s - first.from_s), last.ops / (last.to_s - last.from_s));
  std::printf("%-22s %12s %14.1f %14.1f\n", "client op p50 (us)", "", first.uds.p50, last.uds.p50);
  std::printf("%-22s %12s %14.1f %14.1f\n", "client op p99 (us)", "", first.uds.p99, last.uds.p99);
  std::printf("%-22s %12s %14.1f %14.1f\n", "HTTP GET p50 (us)", "", first.http_get.p50,
              last.http_get.p50);
  std::printf("%-22s %12s %14.1f %14.1f\n", "HTTP GET p99 (us)", "", first.http_get.p99,
              last.http_get.p99);
}

int run(const Options& o) {
  std::string loadavg;
  std::getline(std::ifstream("/proc/loadavg") >> std::ws, loadavg);
  if (!fs::exists(o.cli)) die("no processfork binary at " + o.cli + " (use --cli)");
  pf::demo::WorkDir dir = pf::bench::must(pf::demo::WorkDir::create("soak"), "work directory");
  pf::demo::DaemonOptions dopt;
  dopt.exe = o.cli;
  dopt.device = "host";
  dopt.geometry = o.geometry;
  dopt.capacity = o.capacity;
  dopt.chunk = o.chunk;
  dopt.http = "127.0.0.1:0";
  dopt.token = kToken;
  dopt.socket = dir.file("s");
  dopt.ready_file = dir.file("ready");
  dopt.log_file = dir.file("daemon.log");
  pf::demo::Daemon daemon = pf::bench::must(pf::demo::Daemon::start(dopt), "start the daemon");
  const std::string http = Json::parse(daemon.ready_json()).value("http", "");
  const std::size_t colon = http.rfind(':');
  if (colon == std::string::npos) die("the daemon's ready file names no HTTP port");

  pf_client* admin = connect_admin(daemon.socket());
  const pf_pool_stats base_pool = pool_stats(admin);
  const ProcFigures base = pf::soak::probe(daemon.pid());
  std::fprintf(stderr, "bench_soak: %d clients (%d killed every %d ms) for %.0f s, geometry %s\n",
               o.clients, o.killable, o.kill_every_ms, o.seconds, o.geometry.c_str());

  const std::int64_t t0 = now_ns();
  Soak soak(daemon, dir, t0);
  std::vector<Slot> slots(static_cast<std::size_t>(o.clients));
  for (int i = 0; i < o.clients; ++i) {
    slots[i].id = i;
    slots[i].killable = i >= o.clients - o.killable;
    soak.start(slots[i]);
  }
  std::atomic<bool> stop_http{false};
  std::vector<SoakSample> http_samples;
  std::size_t http_failures = 0;
  std::thread prober(http_prober, http.substr(0, colon), std::stoi(http.substr(colon + 1)), t0,
                     std::cref(stop_http), &http_samples, &http_failures);

  // Kill round robin, probe the daemon once a second, until the time is up.
  std::vector<std::pair<double, ProcFigures>> probes;
  int failed = 0, next_victim = 0;
  double next_kill = o.kill_every_ms / 1000.0, next_probe = 1;
  bool daemon_died = false;
  while (since_s(t0) < o.seconds && !daemon_died) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const double t = since_s(t0);
    if (o.killable > 0 && t >= next_kill) {
      Slot& victim = slots[o.clients - o.killable + next_victim];
      next_victim = (next_victim + 1) % o.killable;
      soak.kill_and_restart(victim);
      next_kill += o.kill_every_ms / 1000.0;
    }
    if (t >= next_probe) {
      const ProcFigures p = pf::soak::probe(daemon.pid());
      daemon_died = !p.ok;
      probes.emplace_back(t, p);
      next_probe += 1;
    }
    failed += soak.reap_failed(slots);
  }
  const double load_end_s = since_s(t0);
  // Pages in use under load: live branches, and snapshots killed workers left pinned.
  const pf_pool_stats load_pool = daemon_died ? pf_pool_stats{} : pool_stats(admin);
  for (Slot& s : slots) failed += soak.stop(s) ? 0 : 1;
  stop_http = true;
  prober.join();

  // Cleanup: what killed workers left pinned, cached prefixes (again while the daemon
  // still ends leases of workers that just exited); then wait for the pool.
  std::size_t unpinned = 0;
  pf_pool_stats end_pool{};
  ProcFigures after;
  const auto settle_deadline = Clock::now() + std::chrono::seconds(15);
  while (!daemon_died) {
    unpinned += unpin_all(admin);
    end_pool = pool_stats(admin);
    after = pf::soak::probe(daemon.pid());
    if ((end_pool.used_pages == base_pool.used_pages && after.fds <= base.fds &&
         after.threads <= base.threads) ||
        Clock::now() > settle_deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const Json pool_after = daemon_died ? Json() : pool_json(admin);
  pf_disconnect(admin);

  std::vector<SoakSample> samples = read_samples(slots);
  samples.insert(samples.end(), http_samples.begin(), http_samples.end());
  auto at = [&](double t) {
    ProcFigures best;
    for (const auto& [pt, p] : probes) {
      if (pt <= t + 0.5) best = p;
    }
    return best;
  };
  Window first = window(samples, 0, o.window);
  first.proc = at(o.window);
  Window last = window(samples, load_end_s - o.window, load_end_s);
  last.proc = at(load_end_s);
  Window whole = window(samples, 0, load_end_s);
  std::uint64_t max_rss = 0;
  for (const auto& pr : probes) max_rss = std::max(max_rss, pr.second.rss_kib);

  // Baseline and after-cleanup figures both include the admin connection.
  const auto leaked_pages = static_cast<std::int64_t>(end_pool.used_pages) -
                            static_cast<std::int64_t>(base_pool.used_pages);
  const auto fd_growth = static_cast<std::int64_t>(after.fds) - static_cast<std::int64_t>(base.fds);
  const bool ok = !daemon_died && failed == 0 && leaked_pages == 0 && fd_growth <= 0;

  const pf::bench::Machine m = pf::bench::machine();
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  Json out = {
      {"benchmark", "bench_soak"},
      {"date", pf::bench::utc(now, "%Y-%m-%dT%H:%M:%SZ")},
      {"machine",
       {{"cpu", m.cpu},
        {"cores", m.cores},
        {"mem_total_gib", m.mem_total_gib},
        {"kernel", m.kernel},
        {"loadavg_at_start", loadavg}}},
      {"config",
       {{"seconds", o.seconds},
        {"clients", o.clients},
        {"killable", o.killable},
        {"kill_every_ms", o.kill_every_ms},
        {"window_s", o.window},
        {"geometry", o.geometry},
        {"capacity", o.capacity},
        {"chunk", o.chunk}}},
      {"baseline", {{"daemon", proc_json(base)}, {"used_pages", base_pool.used_pages}}},
      {"first_window", window_json(first)},
      {"last_window", window_json(last)},
      {"whole_run", window_json(whole)},
      {"max_rss_kib", max_rss},
      {"used_pages_at_load_end", load_pool.used_pages},
      {"kills", soak.kills()},
      {"worker_failures", failed},
      {"http_failures", http_failures},
      {"snapshots_unpinned_at_end", unpinned},
      {"after_cleanup",
       {{"daemon", proc_json(after)},
        {"used_pages", end_pool.used_pages},
        {"leaked_pages", leaked_pages},
        {"pool", pool_after},
        {"fd_growth", fd_growth}}},
      {"daemon_died", daemon_died},
      {"ok", ok},
  };

  std::printf(
      "bench_soak: %s, %u cores (load average %s); %d clients, %d of them SIGKILLed "
      "every %d ms; %.0f s; windows of %.0f s\n\n",
      m.cpu.c_str(), m.cores, loadavg.c_str(), o.clients, o.killable, o.kill_every_ms, load_end_s,
      o.window);
  print_table(base, first, last, after);
  std::printf(
      "\nwhole run: %zu client ops (%.0f/s, p50 %.1f us, p99 %.1f us), %zu HTTP GETs, %zu failed "
      "ops; max RSS %llu KiB\n",
      whole.ops, whole.ops / load_end_s, whole.uds.p50, whole.uds.p99, whole.http, whole.errors,
      static_cast<unsigned long long>(max_rss));
  std::printf("kills %d, worker failures %d, HTTP failures %zu, snapshots unpinned at end %zu\n",
              soak.kills(), failed, http_failures, unpinned);
  std::printf(
      "pool used pages: %llu before, %llu at the end of the load, %llu after cleanup (leaked "
      "%lld); fds %+lld: %s\n",
      static_cast<unsigned long long>(base_pool.used_pages),
      static_cast<unsigned long long>(load_pool.used_pages),
      static_cast<unsigned long long>(end_pool.used_pages), static_cast<long long>(leaked_pages),
      static_cast<long long>(fd_growth), ok ? "ok" : "FAILED");

  if (o.json) {
    std::string path = o.out;
    if (path.empty()) {
      path = std::string(PF_PERF_RESULTS_DIR) + "/soak_" + pf::bench::machine_slug() + ".json";
    }
    std::ofstream f(path);
    f << out.dump(2) << "\n";
    if (!f) die("cannot write " + path);
    std::fprintf(stderr, "bench_soak: wrote %s\n", path.c_str());
  }
  if (daemon_died) {
    std::fprintf(stderr, "bench_soak: the daemon died: %s\n", daemon.log_tail().c_str());
  }
  if (failed != 0) {
    std::ifstream log(dir.file("workers.log"));
    std::stringstream ss;
    ss << log.rdbuf();
    const std::string text = ss.str();
    std::fprintf(stderr, "bench_soak: workers' log (tail):\n%s\n",
                 text.substr(text.size() > 4000 ? text.size() - 4000 : 0).c_str());
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::strcmp(argv[1], "--worker") == 0) {
    pf::soak::WorkerOptions w;
    w.id = static_cast<std::uint32_t>(std::stoul(argv[2]));
    w.generation = static_cast<std::uint32_t>(std::stoul(argv[3]));
    w.socket = argv[4];
    w.samples_path = argv[5];
    w.t0_ns = std::stoll(argv[6]);
    return pf::soak::run_soak_worker(w);
  }
  pf::bench::set_program("bench_soak");
  signal(SIGPIPE, SIG_IGN);
  return run(parse(argc, argv));
}
