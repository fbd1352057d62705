// bench_fanout: giving n children a T-token context, four ways, side by side in one run, on
// the reference model's KV geometry (DESIGN §7; issue 5; perf/README.md):
//  - ours, in process: Runtime::fork(cid, n) (metadata only);
//  - ours, over the socket: fork(cid, n) through libprocessfork to `processfork serve`;
//  - copy: n memcpy's of the context's KV bytes (into one private buffer, reused);
//  - OS fork(): n fork()+_exit children of this process while it holds the KV in private
//    anonymous memory, then waitpid of all;
//  - re-prefill: the reference engine prefilling T tokens into private pages, measured
//    (reps) and multiplied by n (one re-prefill per child, one core).
// Plus memory against n: pool pages after the fork and after each child appends 32 tokens,
// against the same fan-out done by copying the context per child.
//
//   bench_fanout [--tokens 256,1024,4096] [--t-at-n 12] [--n 1,4,12,32] [--n-at-t 4096]
//                [--model demo] [--page-tokens 16] [--reps 200] [--copy-reps 20]
//                [--fork-reps 10] [--prefill-reps 3] [--max-prefill-tokens 16384]
//                [--processfork PATH] [--out FILE]
//
// "vs T" rows: every T of --tokens at n = --t-at-n; "vs n" rows: every n of --n at
// T = --n-at-t. Each figure: median, p99, min and max over its samples. Not a test.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "perf/bench_common.h"
#include "perf/engine/engine.h"
#include "perf/fanout_process.h"
#include "processfork.hpp"
#include "runtime/runtime.h"
#include "vmm/registry.h"

#ifndef PF_PROCESSFORK_PATH
#define PF_PROCESSFORK_PATH ""
#endif

namespace {

using namespace pf;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

using bench::die;
using bench::must;
using bench::parse_list;
using bench::us_since;

// The JSON of one figure's samples (null when there are none).
Json stats(std::vector<double> v) {
  if (v.empty()) return nullptr;
  const bench::Summary s = bench::summarize(std::move(v));
  return Json{{"p50_us", s.p50}, {"p99_us", s.p99},   {"min_us", s.min},
              {"max_us", s.max}, {"mean_us", s.mean}, {"samples", s.n}};
}

struct Options {
  std::vector<std::uint64_t> tokens = {256, 1024, 4096};
  std::uint64_t t_at_n = 12;
  std::vector<std::uint64_t> ns = {1, 4, 12, 32};
  std::uint64_t n_at_t = 4096;
  std::string model = "demo";
  std::uint32_t page_tokens = 16;
  std::uint32_t reps = 200;
  std::uint32_t copy_reps = 20;
  std::uint32_t fork_reps = 10;
  std::uint32_t prefill_reps = 3;
  std::uint64_t max_prefill_tokens = 16384;
  std::uint32_t child_tokens = 32;
  std::string processfork;
  std::string out;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    auto num = [&]() { return parse_list(val()).at(0); };
    if (a == "--tokens") {
      o.tokens = parse_list(val());
    } else if (a == "--t-at-n") {
      o.t_at_n = num();
    } else if (a == "--n") {
      o.ns = parse_list(val());
    } else if (a == "--n-at-t") {
      o.n_at_t = num();
    } else if (a == "--model") {
      o.model = val();
    } else if (a == "--page-tokens") {
      o.page_tokens = static_cast<std::uint32_t>(num());
    } else if (a == "--reps") {
      o.reps = static_cast<std::uint32_t>(num());
    } else if (a == "--copy-reps") {
      o.copy_reps = static_cast<std::uint32_t>(num());
    } else if (a == "--fork-reps") {
      o.fork_reps = static_cast<std::uint32_t>(num());
    } else if (a == "--prefill-reps") {
      o.prefill_reps = static_cast<std::uint32_t>(num());
    } else if (a == "--max-prefill-tokens") {
      o.max_prefill_tokens = num();
    } else if (a == "--processfork") {
      o.processfork = val();
    } else if (a == "--out") {
      o.out = val();
    } else if (a == "-h" || a == "--help") {
      std::puts(
          "bench_fanout [--tokens 256,1024,4096] [--t-at-n 12] [--n 1,4,12,32] [--n-at-t 4096]\n"
          "             [--model demo] [--page-tokens 16] [--reps 200] [--copy-reps 20]\n"
          "             [--fork-reps 10] [--prefill-reps 3] [--max-prefill-tokens 16384]\n"
          "             [--processfork PATH] [--out FILE]");
      std::exit(0);
    } else {
      die("unknown argument " + a);
    }
  }
  for (std::uint64_t n : o.ns) {
    if (n > rt::kMaxForkChildren) die("--n must be in 1..1024");
  }
  if (o.t_at_n > rt::kMaxForkChildren) die("--t-at-n must be in 1..1024");
  return o;
}

// One context of T tokens, ready to fork in process and over the socket.
struct Context {
  std::uint64_t T = 0;
  std::size_t ctx_pages = 0;
  std::size_t kv_bytes = 0;
  std::unique_ptr<rt::Runtime> runtime;
  std::string cid;      // in-process snapshot
  std::string uds_cid;  // the daemon's snapshot
};

}  // namespace

int main(int argc, char** argv) {
  pf::bench::set_program("bench_fanout");
  const Options o = parse(argc, argv);
  const engine::ModelConfig cfg = must(engine::parse_model_config(o.model), "--model");
  const rt::Geometry g = cfg.kv_geometry(o.page_tokens, rt::DType::kFP32);
  must(g.validate(), "geometry");
  const std::size_t page_bytes = g.page_bytes();
  const std::size_t P = g.page_tokens;

  std::set<std::uint64_t> all_t(o.tokens.begin(), o.tokens.end());
  all_t.insert(o.n_at_t);
  const std::uint64_t max_t = *all_t.rbegin();
  std::uint64_t max_n = o.t_at_n;
  for (std::uint64_t n : o.ns) max_n = std::max(max_n, n);
  const std::size_t child_pages = (P - 1 + o.child_tokens + P - 1) / P + 1;
  const std::size_t cap_pages = (max_t + P - 1) / P + max_n * child_pages + 64;

  // The in-process runtime's backend, the engine (re-prefill), the daemon.
  auto backend = must(vmm::open_backend("host"), "backend");
  std::unique_ptr<engine::Engine> eng = must(engine::make_engine(cfg, "auto"), "engine");
  std::fprintf(stderr, "bench_fanout: %s; engine %s; geometry %s (%zu-byte pages)\n",
               backend.reason.c_str(), eng->name().c_str(), g.to_string().c_str(), page_bytes);
  demo::WorkDir wd = must(demo::WorkDir::create("bench"), "workdir");
  demo::DaemonOptions dopt;
  dopt.exe = !o.processfork.empty()                     ? o.processfork
             : std::string(PF_PROCESSFORK_PATH).empty() ? demo::self_dir() + "/../shims/processfork"
                                                        : PF_PROCESSFORK_PATH;
  dopt.device = "auto";
  dopt.geometry = g.to_string();
  dopt.capacity = std::to_string(std::max<std::size_t>(64, (2 * cap_pages * page_bytes >> 20) + 1) *
                                 all_t.size()) +
                  "MiB";
  dopt.chunk = "0";
  dopt.socket = wd.file("processfork.sock");
  dopt.ready_file = wd.file("ready.json");
  dopt.log_file = wd.file("daemon.log");
  demo::Daemon daemon = must(demo::Daemon::start(dopt), "daemon");
  Json out;
  out["benchmark"] = "bench_fanout";
  out["model"] = cfg.to_string();
  out["geometry"] = g.to_string();
  out["page_bytes"] = page_bytes;
  out["engine"] = eng->name();
  out["daemon_backend"] = daemon.backend();
  out["daemon_device"] = daemon.device();
  out["child_tokens"] = o.child_tokens;
  out["method_notes"] = {
      {"ours_inproc",
       "Runtime::fork(cid, n) in this process; children freed between reps (untimed)"},
      {"ours_uds",
       "fork(cid, n) through libprocessfork over the Unix socket; children freed between reps "
       "(untimed)"},
      {"copy", "n memcpy's of the context KV bytes into one private buffer, timed together"},
      {"os_fork",
       "n fork()+_exit() children of this process holding the KV in private anonymous memory, then "
       "waitpid of all"},
      {"reprefill",
       "reference-engine prefill of T tokens into private pages, measured; x n (one re-prefill per "
       "child, serial)"}};

  processfork::ConnectOptions co;
  co.socket_path = daemon.socket();
  processfork::Client client(co);
  Json rows = Json::array();

  for (std::uint64_t T : all_t) {
    Context c;
    c.T = T;
    c.ctx_pages = (T + P - 1) / P;
    c.kv_bytes = c.ctx_pages * page_bytes;
    std::fprintf(stderr, "bench_fanout: T=%llu (%zu pages, %.1f MiB of KV)\n",
                 static_cast<unsigned long long>(T), c.ctx_pages, c.kv_bytes / 1048576.0);
    // In process: a runtime holding a T-token snapshot whose pages hold real bytes.
    rt::RuntimeOptions ro;
    ro.geometry = g;
    ro.verify_each_op = false;
    ro.pool.capacity_bytes = cap_pages * page_bytes;
    c.runtime = must(rt::Runtime::create(*backend.backend, ro), "runtime");
    const std::vector<rt::Token> tokens = engine::random_tokens(T, T, cfg.vocab);
    const rt::BranchId src = must(c.runtime->create_branch(), "branch").id;
    const rt::AppendResult ar = must(c.runtime->append(src, tokens), "append");
    for (const rt::WriteRun& r : ar.runs) {
      std::memset(c.runtime->base() + std::size_t{r.page} * page_bytes,
                  static_cast<int>(r.page & 0xff), page_bytes);
    }
    c.cid = must(c.runtime->snapshot(src), "snapshot").cid;
    // Over the socket: the daemon's own T-token snapshot (metadata is what fork touches).
    processfork::NewBranch nb = client.branch();
    nb.branch.append(tokens);
    c.uds_cid = nb.branch.snapshot().cid;
    nb.branch.free();

    // Private KV for the copy and OS-fork baselines (touched: resident).
    std::vector<std::byte> kv(c.kv_bytes), dst(c.kv_bytes);
    for (std::size_t i = 0; i < kv.size(); i += 4096) kv[i] = std::byte{1};
    for (std::size_t i = 0; i < dst.size(); i += 4096) dst[i] = std::byte{2};

    // Re-prefill with the reference engine (once per T, multiplied by n per row).
    std::vector<double> prefill;
    if (T <= o.max_prefill_tokens) {
      engine::PageArena arena = must(eng->alloc_pages(c.ctx_pages, page_bytes), "arena");
      const std::uint32_t reps = T > 4096 ? 1 : o.prefill_reps;
      for (std::uint32_t r = 0; r < reps; ++r) {
        engine::PagedKv pk(g);
        for (std::size_t i = 0; i < c.ctx_pages; ++i) pk.push_page(arena.page(i));
        const Clock::time_point t = Clock::now();
        must(eng->forward(pk, tokens, {}), "prefill");
        prefill.push_back(us_since(t));
      }
    }

    std::vector<std::uint64_t> ns_here;
    if (std::find(o.tokens.begin(), o.tokens.end(), T) != o.tokens.end())
      ns_here.push_back(o.t_at_n);
    if (T == o.n_at_t) {
      for (std::uint64_t n : o.ns) {
        if (std::find(ns_here.begin(), ns_here.end(), n) == ns_here.end()) ns_here.push_back(n);
      }
    }
    for (std::uint64_t n : ns_here) {
      Json row;
      row["tokens"] = T;
      row["n"] = n;
      row["kv_bytes"] = c.kv_bytes;
      row["context_pages"] = c.ctx_pages;
      row["vs_t"] =
          n == o.t_at_n && std::find(o.tokens.begin(), o.tokens.end(), T) != o.tokens.end();
      row["vs_n"] = T == o.n_at_t && std::find(o.ns.begin(), o.ns.end(), n) != o.ns.end();
      // ours, in process
      std::vector<double> s;
      for (std::uint32_t r = 0; r < o.reps; ++r) {
        const Clock::time_point t = Clock::now();
        const rt::ForkResult f = must(c.runtime->fork(c.cid, n), "fork");
        s.push_back(us_since(t));
        for (rt::BranchId b : f.branches) must(c.runtime->free_branch(b), "free");
      }
      row["ours_inproc"] = stats(s);
      // ours, over the socket
      s.clear();
      for (std::uint32_t r = 0; r < std::max<std::uint32_t>(1, o.reps / 2); ++r) {
        const Clock::time_point t = Clock::now();
        std::vector<processfork::Branch> kids =
            client.fork(processfork::Source(c.uds_cid), static_cast<std::uint32_t>(n));
        s.push_back(us_since(t));
        for (processfork::Branch& k : kids) k.free();
      }
      row["ours_uds"] = stats(s);
      // copy
      s.clear();
      for (std::uint32_t r = 0; r < o.copy_reps; ++r) {
        const Clock::time_point t = Clock::now();
        for (std::uint64_t k = 0; k < n; ++k) {
          std::memcpy(dst.data(), kv.data(), kv.size());
          asm volatile("" ::"r"(dst.data()) : "memory");
        }
        s.push_back(us_since(t));
      }
      row["copy"] = stats(s);
      // OS fork
      s.clear();
      for (std::uint32_t r = 0; r < o.fork_reps; ++r) {
        std::vector<pid_t> pids;
        const Clock::time_point t = Clock::now();
        for (std::uint64_t k = 0; k < n; ++k) {
          const pid_t pid = ::fork();
          if (pid == 0) ::_exit(0);
          if (pid < 0) die("fork failed");
          pids.push_back(pid);
        }
        for (pid_t pid : pids) {
          int st = 0;
          while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
          }
        }
        s.push_back(us_since(t));
      }
      row["os_fork"] = stats(s);
      // re-prefill x n
      if (!prefill.empty()) {
        std::vector<double> scaled;
        for (double x : prefill) scaled.push_back(x * static_cast<double>(n));
        row["reprefill"] = stats(scaled);
        row["reprefill_one"] = stats(prefill);
      } else {
        row["reprefill"] = nullptr;
      }
      // memory: fork n children, each appends child_tokens tokens (KV bytes not written:
      // page accounting only).
      const std::size_t used0 = c.runtime->pool_stats().used_pages;
      const rt::ForkResult f = must(c.runtime->fork(c.cid, n), "fork");
      const std::size_t used_fork = c.runtime->pool_stats().used_pages;
      const std::vector<rt::Token> more = engine::random_tokens(n, o.child_tokens, cfg.vocab);
      std::size_t appended = 0, cow = 0;
      for (rt::BranchId b : f.branches) {
        const rt::AppendResult a = must(c.runtime->append(b, more), "child append");
        appended += a.pages_added;
        cow += a.copied_page ? 1 : 0;
      }
      const std::size_t used_after = c.runtime->pool_stats().used_pages;
      for (rt::BranchId b : f.branches) must(c.runtime->free_branch(b), "free");
      row["memory"] = {
          {"pages_before", used0},
          {"pages_after_fork", used_fork},
          {"pages_after_children", used_after},
          {"children_appended_pages", appended},
          {"cow_pages", cow},
          {"fork_total_bytes", used_after * page_bytes},
          {"copy_total_bytes", (c.ctx_pages + n * c.ctx_pages + appended - cow) * page_bytes},
      };
      rows.push_back(row);
      std::fprintf(stderr,
                   "  n=%-4llu ours %.2f µs, uds %.1f µs, copy %.1f µs, os fork %.1f µs, "
                   "re-prefill %.1f ms\n",
                   static_cast<unsigned long long>(n), row["ours_inproc"]["p50_us"].get<double>(),
                   row["ours_uds"]["p50_us"].get<double>(), row["copy"]["p50_us"].get<double>(),
                   row["os_fork"]["p50_us"].get<double>(),
                   prefill.empty() ? 0.0 : row["reprefill"]["p50_us"].get<double>() / 1e3);
    }
    must(c.runtime->unpin(c.cid), "unpin");
    client.unpin(c.uds_cid);
    client.gc(true);
  }
  out["rows"] = rows;
  const Status stopped = daemon.stop();
  if (!stopped.is_ok()) die(stopped.to_string());
  const std::string text = out.dump(1);
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << text << "\n";
    if (!f) die("cannot write " + o.out);
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}
