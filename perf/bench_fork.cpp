// bench_fork: in-process fork of n branches from a context of T tokens, next to copying
// the same KV bytes once per child and the OS's own fork() of a process holding them
// (DESIGN §7; issue 3). Also: pages before/after fork and after each child's first
// append, copy-on-write append cost, snapshot cost (with digests) and checkout cost.
//
//   bench_fork [--tokens T] [--n N] [--geometry G] [--backend SPEC] [--reps R] [--json]
//              [--out FILE]
//
// Without --tokens/--n it runs the matrix n in {1, 12, 128} x T in {1k, 32k, 128k}. The
// KV is written once per T into the pool. Geometry: llama-3-8b unless its KV (plus an
// equally large private buffer for the copy and fork() baselines) does not fit in half of
// MemAvailable; then llama-3-70b-tp8 (one tensor-parallel rank's KV), then tiny — the
// output states the geometry used and why. Not a test: numbers, never pass/fail.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "perf/bench_common.h"
#include "runtime/runtime.h"
#include "vmm/registry.h"

namespace {

using namespace pf;
using namespace pf::rt;
using Clock = std::chrono::steady_clock;

using bench::cpu_model;
using bench::die;
using bench::meminfo_kib;
using bench::must;
using bench::parse_list;
using bench::pct;
using bench::us_since;

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o + "\"";
}

struct Options {
  std::vector<std::size_t> tokens{1024, 32768, 131072};
  std::vector<std::size_t> ns{1, 12, 128};
  std::string geometry;  // empty = automatic choice
  std::string backend = "host";
  std::size_t reps = 0;  // 0 = automatic
  bool json = false;
  std::string out;
};

struct Row {
  std::size_t tokens = 0, n = 0, reps = 0;
  std::string geometry, geometry_name, geometry_note, copy_method;
  std::size_t page_bytes = 0, kv_bytes = 0;
  double fork_p50 = 0, fork_p99 = 0, fork_branch_p50 = 0, fork_branch_p99 = 0;
  double copy_p50 = 0, copy_one_p50 = 0, os_fork_p50 = 0, os_fork_p99 = 0;
  std::size_t pages_before = 0, pages_after_fork = 0, pages_after_child_append = 0;
  std::size_t pages_after_cow_append = 0;
  double child_append_p50 = 0, cow_append_p50 = 0, cow_append_p99 = 0;
  double snapshot_first_us = 0, snapshot_p50 = 0, snapshot_p99 = 0;
  double checkout_p50 = 0, checkout_p99 = 0;
};

// The KV bytes of T tokens copied into a private buffer, and fork() of this process while
// it holds that buffer (private anonymous memory, touched: the kernel must copy the page
// tables and mark them copy-on-write, as for any process holding KV on the heap).
struct Baselines {
  double copy_one_p50 = 0;
  std::vector<double> os_fork;
};
Baselines run_baselines(const std::byte* kv, std::size_t bytes, std::size_t copy_reps,
                        std::size_t fork_reps) {
  Baselines b;
  void* dst = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (dst == MAP_FAILED) die("mmap of the copy baseline buffer failed");
  std::memcpy(dst, kv, bytes);  // first touch (page faults) not timed
  std::vector<double> copies;
  for (std::size_t r = 0; r < copy_reps; ++r) {
    auto t0 = Clock::now();
    std::memcpy(dst, kv, bytes);
    copies.push_back(us_since(t0));
  }
  b.copy_one_p50 = pct(copies, 0.5);
  for (std::size_t r = 0; r < fork_reps; ++r) {
    auto t0 = Clock::now();
    pid_t pid = ::fork();
    if (pid == 0) _exit(0);
    if (pid < 0) die("fork() failed");
    int status = 0;
    waitpid(pid, &status, 0);
    b.os_fork.push_back(us_since(t0));
  }
  munmap(dst, bytes);
  return b;
}

Geometry choose_geometry(const Options& o, std::size_t tokens, std::string* note,
                         std::string* short_name) {
  if (!o.geometry.empty()) {
    *note = "as requested";
    *short_name = o.geometry.substr(0, 16);
    return must(parse_geometry(o.geometry), "--geometry");
  }
  const std::size_t avail = meminfo_kib("MemAvailable:") * 1024;
  for (const char* name : {"llama-3-8b", "llama-3-70b-tp8", "tiny"}) {
    const Geometry g = *geometry_preset(name);
    const std::size_t kv = (tokens + g.page_tokens - 1) / g.page_tokens * g.page_bytes();
    if (2 * kv <= avail / 2) {
      *short_name = name;
      *note = std::string(name) == "llama-3-8b"
                  ? "llama-3-8b fits"
                  : "llama-3-8b KV (" + std::to_string(tokens * 131072 >> 30) +
                        " GiB, twice with the copy/fork baseline buffer) does not fit in half of "
                        "MemAvailable (" +
                        std::to_string(avail >> 30) + " GiB); using " + name +
                        ". Fork cost is metadata only and does not depend on geometry; copy and "
                        "os fork scale with KV bytes (x" +
                        std::to_string(131072.0 / (g.page_bytes() / g.page_tokens)).substr(0, 5) +
                        " for llama-3-8b)";
      return g;
    }
  }
  die("not enough memory for even the tiny geometry");
}

std::vector<Row> run_context(const Options& o, vmm::Backend& backend, std::size_t T) {
  Row base_row;
  const Geometry g = choose_geometry(o, T, &base_row.geometry_note, &base_row.geometry_name);
  base_row.tokens = T;
  base_row.geometry = g.to_string();
  base_row.page_bytes = g.page_bytes();
  const std::size_t P = g.page_tokens;
  const std::size_t ctx_pages = (T + P - 1) / P;
  base_row.kv_bytes = ctx_pages * g.page_bytes();
  const std::size_t max_n = *std::max_element(o.ns.begin(), o.ns.end());

  RuntimeOptions ro;
  ro.geometry = g;
  ro.verify_each_op = false;
  const std::size_t cap_pages = ctx_pages + 4 * max_n + 64;
  ro.pool.capacity_bytes = cap_pages * g.page_bytes();
  ro.pool.chunk_bytes = std::size_t{64} << 20;
  auto rt = must(Runtime::create(backend, ro), "runtime");

  // Prefill: T tokens; KV bytes written once through the write slots.
  std::vector<Token> tokens(T);
  for (std::size_t i = 0; i < T; ++i) tokens[i] = static_cast<Token>((i * 7919) % 128000);
  const BranchId src = must(rt->create_branch(), "branch").id;
  const AppendResult ar = must(rt->append(src, tokens), "prefill append");
  std::vector<std::uint8_t> fill(g.page_bytes());
  for (std::size_t i = 0; i < fill.size(); ++i) fill[i] = static_cast<std::uint8_t>(i * 131 + 7);
  PageId last = ~PageId{0};
  for (const WriteRun& run : ar.runs) {
    if (run.page == last) continue;
    last = run.page;
    std::memcpy(fill.data(), &run.first_token, sizeof run.first_token);  // distinct pages
    must(backend.copy_to_mapped(rt->base() + std::size_t{run.page} * g.page_bytes(), fill.data(),
                                fill.size()),
         "write KV");
  }
  auto t0 = Clock::now();
  const std::string cid = must(rt->snapshot(src, "context"), "snapshot").cid;
  base_row.snapshot_first_us = us_since(t0);
  const std::size_t pages_before = rt->pool_stats().used_pages;

  // Baselines on the same bytes (host memory: the pool base is ordinary memory).
  const bool host = backend.memory_kind() == vmm::MemoryKind::kHost;
  Baselines bl;
  if (host) {
    const std::size_t copy_reps = base_row.kv_bytes > (std::size_t{1} << 30) ? 3 : 10;
    const std::size_t fork_reps = base_row.kv_bytes > (std::size_t{1} << 30) ? 15 : 50;
    bl = run_baselines(rt->base(), base_row.kv_bytes, copy_reps, fork_reps);
  }

  std::vector<Row> rows;
  for (std::size_t n : o.ns) {
    Row r = base_row;
    r.n = n;
    r.reps = o.reps ? o.reps : (n >= 128 ? 300 : 2000);
    r.pages_before = pages_before;
    // fork(cid, n): p50/p99 over reps; children freed between reps (not timed).
    std::vector<double> forks, bforks;
    for (std::size_t i = 0; i < r.reps; ++i) {
      t0 = Clock::now();
      ForkResult fr = must(rt->fork(cid, n), "fork");
      forks.push_back(us_since(t0));
      for (BranchId c : fr.branches) must(rt->free_branch(c), "free");
    }
    // fork(branch, n): the source branch (its tail already frozen/rebased).
    for (std::size_t i = 0; i < r.reps; ++i) {
      t0 = Clock::now();
      ForkResult fr = must(rt->fork(src, n), "fork branch");
      bforks.push_back(us_since(t0));
      for (BranchId c : fr.branches) must(rt->free_branch(c), "free");
    }
    r.fork_p50 = pct(forks, 0.5);
    r.fork_p99 = pct(forks, 0.99);
    r.fork_branch_p50 = pct(bforks, 0.5);
    r.fork_branch_p99 = pct(bforks, 0.99);

    // Pages after fork, and after each child appends one token.
    ForkResult fr = must(rt->fork(cid, n), "fork");
    r.pages_after_fork = rt->pool_stats().used_pages;
    std::vector<double> child_appends;
    for (BranchId c : fr.branches) {
      const Token t = 42;
      t0 = Clock::now();
      must(rt->append(c, {&t, 1}), "child append");
      child_appends.push_back(us_since(t0));
    }
    r.child_append_p50 = pct(child_appends, 0.5);
    r.pages_after_child_append = rt->pool_stats().used_pages;
    // Snapshot of a child that just appended (digests: its one new page) and checkout.
    std::vector<double> snaps, checkouts;
    const std::size_t snap_reps = std::min<std::size_t>(n, 32);
    for (std::size_t i = 0; i < snap_reps; ++i) {
      t0 = Clock::now();
      const std::string c = must(rt->snapshot(fr.branches[i]), "child snapshot").cid;
      snaps.push_back(us_since(t0));
      t0 = Clock::now();
      const BranchId co = must(rt->checkout(c), "checkout");
      checkouts.push_back(us_since(t0));
      must(rt->free_branch(co), "free");
    }
    for (std::size_t i = 0; i < 200; ++i) {
      t0 = Clock::now();
      const BranchId co = must(rt->checkout(cid), "checkout");
      checkouts.push_back(us_since(t0));
      must(rt->free_branch(co), "free");
    }
    r.snapshot_p50 = pct(snaps, 0.5);
    r.snapshot_p99 = pct(snaps, 0.99);
    r.checkout_p50 = pct(checkouts, 0.5);
    r.checkout_p99 = pct(checkouts, 0.99);
    for (BranchId c : fr.branches) must(rt->free_branch(c), "free");
    for (const SnapshotInfo& s : rt->snapshots()) {
      if (s.cid != cid) must(rt->unpin(s.cid), "unpin");
    }

    // Copy-on-write append: children of a context whose last page is partially filled;
    // each child's first append copies exactly that one page.
    const BranchId half = must(rt->checkout(cid), "checkout");
    std::vector<Token> extra(P / 2, 7);
    must(rt->append(half, extra), "append half page");
    const std::string half_cid = must(rt->snapshot(half), "snapshot half").cid;
    ForkResult hf = must(rt->fork(half_cid, n), "fork half");
    const std::size_t before_cow = rt->pool_stats().used_pages;
    std::vector<double> cows;
    for (BranchId c : hf.branches) {
      const Token t = 43;
      t0 = Clock::now();
      const AppendResult a = must(rt->append(c, {&t, 1}), "cow append");
      cows.push_back(us_since(t0));
      if (!a.copied_page || a.pages_added != 1) die("copy-on-write append did not copy one page");
    }
    r.pages_after_cow_append = rt->pool_stats().used_pages - before_cow;
    r.cow_append_p50 = pct(cows, 0.5);
    r.cow_append_p99 = pct(cows, 0.99);
    for (BranchId c : hf.branches) must(rt->free_branch(c), "free");
    must(rt->free_branch(half), "free");
    must(rt->unpin(half_cid), "unpin");

    if (host) {
      r.copy_one_p50 = bl.copy_one_p50;
      r.copy_p50 = bl.copy_one_p50 * n;
      r.copy_method =
          n == 1 ? "memcpy of the KV, measured" : "memcpy of the KV measured once, x n children";
      r.os_fork_p50 = pct(bl.os_fork, 0.5);
      r.os_fork_p99 = pct(bl.os_fork, 0.99);
    } else {
      r.copy_method = "not measured (device memory)";
    }
    rows.push_back(r);
  }
  return rows;
}

std::string to_json(const std::vector<Row>& rows, vmm::Backend& backend,
                    const std::string& reason) {
  std::ostringstream j;
  const bench::Machine m = bench::machine();
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  j << "{\"benchmark\":\"bench_fork\",\"date\":" << json_str(bench::utc(now, "%Y-%m-%dT%H:%M:%SZ"))
    << ",\"machine\":{\"cpu\":" << json_str(m.cpu) << ",\"cores\":" << m.cores
    << ",\"mem_total_gib\":" << m.mem_total_gib << ",\"kernel\":" << json_str(m.kernel)
    << ",\"backend\":" << json_str(std::string(backend.name()))
    << ",\"device\":" << json_str(backend.device()) << ",\"backend_choice\":" << json_str(reason)
    << ",\"gpu\":" << (backend.memory_kind() == vmm::MemoryKind::kDevice ? "true" : "false")
    << "},\"results\":[";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (i) j << ",";
    j << "{\"tokens\":" << r.tokens << ",\"n\":" << r.n << ",\"reps\":" << r.reps
      << ",\"geometry\":" << json_str(r.geometry)
      << ",\"geometry_name\":" << json_str(r.geometry_name)
      << ",\"geometry_note\":" << json_str(r.geometry_note) << ",\"page_bytes\":" << r.page_bytes
      << ",\"kv_bytes\":" << r.kv_bytes << ",\"fork_us_p50\":" << r.fork_p50
      << ",\"fork_us_p99\":" << r.fork_p99 << ",\"fork_branch_us_p50\":" << r.fork_branch_p50
      << ",\"fork_branch_us_p99\":" << r.fork_branch_p99 << ",\"copy_us_p50\":" << r.copy_p50
      << ",\"copy_one_child_us_p50\":" << r.copy_one_p50
      << ",\"copy_method\":" << json_str(r.copy_method) << ",\"os_fork_us_p50\":" << r.os_fork_p50
      << ",\"os_fork_us_p99\":" << r.os_fork_p99 << ",\"pages_before\":" << r.pages_before
      << ",\"pages_after_fork\":" << r.pages_after_fork
      << ",\"pages_after_child_append\":" << r.pages_after_child_append
      << ",\"child_append_us_p50\":" << r.child_append_p50
      << ",\"cow_pages_added\":" << r.pages_after_cow_append
      << ",\"cow_append_us_p50\":" << r.cow_append_p50
      << ",\"cow_append_us_p99\":" << r.cow_append_p99
      << ",\"snapshot_first_us\":" << r.snapshot_first_us
      << ",\"snapshot_us_p50\":" << r.snapshot_p50 << ",\"snapshot_us_p99\":" << r.snapshot_p99
      << ",\"checkout_us_p50\":" << r.checkout_p50 << ",\"checkout_us_p99\":" << r.checkout_p99
      << "}";
  }
  j << "]}";
  return j.str();
}

void print_table(const std::vector<Row>& rows, vmm::Backend& backend) {
  std::printf("bench_fork on %s (%u cores), backend %s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), backend.device().c_str());
  std::printf("%7s %4s %-16s %9s %9s %11s %11s %8s %8s %8s %9s %9s %11s %9s\n", "tokens", "n",
              "geometry", "fork p50", "fork p99", "copy p50", "os fork p50", "pg befor", "pg fork",
              "pg +app", "cow p50", "snap p50", "snap first", "ckout p50");
  for (const Row& r : rows) {
    const std::string& geo = r.geometry_name;
    std::printf(
        "%7zu %4zu %-16s %7.2fus %7.2fus %9.0fus %9.0fus %8zu %8zu %8zu %7.1fus %7.0fus %9.0fus "
        "%7.2fus\n",
        r.tokens, r.n, geo.c_str(), r.fork_p50, r.fork_p99, r.copy_p50, r.os_fork_p50,
        r.pages_before, r.pages_after_fork, r.pages_after_child_append, r.cow_append_p50,
        r.snapshot_p50, r.snapshot_first_us, r.checkout_p50);
  }
  for (const Row& r : rows) {
    if (r.n == rows.front().n) {
      std::printf("T=%zu: %s; %s\n", r.tokens, r.geometry.c_str(), r.geometry_note.c_str());
    }
  }
  std::printf(
      "copy p50 = memcpy of the KV once per child; os fork = fork()+_exit+waitpid of this "
      "process holding the KV in private memory; pg = pool pages used\n");
}

}  // namespace

int main(int argc, char** argv) {
  pf::bench::set_program("bench_fork");
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--tokens")
      o.tokens = parse_list(next());
    else if (a == "--n")
      o.ns = parse_list(next());
    else if (a == "--geometry")
      o.geometry = next();
    else if (a == "--backend")
      o.backend = next();
    else if (a == "--reps")
      o.reps = std::stoull(next());
    else if (a == "--json")
      o.json = true;
    else if (a == "--out")
      o.out = next();
    else {
      std::printf(
          "usage: bench_fork [--tokens T[,T..]] [--n N[,N..]] [--geometry G] "
          "[--backend host|auto|cuda:N] [--reps R] [--json] [--out FILE]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  for (std::size_t n : o.ns) {
    if (n < 1 || n > kMaxForkChildren) die("--n must be in 1..1024");
  }
  auto choice = must(vmm::open_backend(o.backend), "backend");
  std::fprintf(stderr, "bench_fork: %s\n", choice.reason.c_str());
  std::vector<Row> rows;
  for (std::size_t T : o.tokens) {
    if (T == 0) die("--tokens must be positive");
    auto r = run_context(o, *choice.backend, T);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  const std::string json = to_json(rows, *choice.backend, choice.reason);
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << json << "\n";
  }
  if (o.json) {
    std::printf("%s\n", json.c_str());
  } else {
    print_table(rows, *choice.backend);
  }
  return 0;
}
