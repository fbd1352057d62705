// bench_child_cost: what it costs to give each of n child processes a T-token context they
// can read, measured end to end, next to the OS's own fork() of a process holding the same
// bytes in huge pages and to copying them (DESIGN §7; perf/README.md "honest baselines").
//
//  - ProcessFork, full cost: a `processfork serve` daemon (host backend, 64 MiB chunks)
//    holds the context (prefilled and written through the library, snapshotted). n worker
//    processes are started first (exec'd, connected to nothing; start-up not timed: an
//    engine process exists before it is given a context). Timed from the parent's fork
//    request until the last worker is done: pf_fork(cid, n) + pf_detach of each branch in
//    the parent, then in every worker pf_connect (HELLO + attach: import and map every
//    chunk) + adopt + pf_branch_view (its page ids) + a read of one byte per 4 KiB of every
//    page of the context (first touch: the page faults that map the pool's pages into the
//    worker). Each worker also times its own phases.
//  - OS fork(), huge pages: this process holds the context's bytes in private anonymous
//    memory (MAP_HUGETLB when the hugetlbfs pool has room, else madvise(MADV_HUGEPAGE) for
//    transparent huge pages; the result says which and how much was huge), fork()s n
//    children one after another, each reads one byte per 4 KiB of the bytes; timed until
//    the last child reported. The same with 4 KiB pages (MADV_NOHUGEPAGE).
//  - copy: memcpy of the context's bytes (in 1 GiB pieces into one warm 1 GiB buffer),
//    once per child.
// Every figure is reported as µs per child: the wall time for all n divided by n (children
// run concurrently; on 2 cores at most two at a time). Reps: several per cell, the median
// reported with min..max. Not a test: numbers, never pass/fail.
//
//   bench_child_cost [--tokens 1024,32768,131072] [--n 1,12,128] [--geometry llama-3-8b]
//                    [--reps R] [--stride 4096] [--processfork PATH] [--out FILE]
//
// A T whose KV (plus the page tables of n children) does not fit in 85% of MemAvailable is
// halved until it does; the result keeps the requested T and says why (a bigger machine runs
// the T asked for).
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/page_format.h"
#include "perf/bench_common.h"
#include "perf/fanout_process.h"
#include "processfork.h"

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

constexpr std::size_t kGiB = std::size_t{1} << 30;

// One record on the shared result pipe (smaller than PIPE_BUF: written atomically).
struct Record {
  std::uint32_t kind = 0;  // 1 ready, 2 done, 3 failed
  std::uint32_t index = 0;
  double connect_us = 0, adopt_us = 0, touch_us = 0;
  std::uint64_t pages = 0, sum = 0;
  char error[160] = {};
};

void write_record(int fd, const Record& r) {
  if (::write(fd, &r, sizeof r) != static_cast<ssize_t>(sizeof r)) _exit(3);
}

// Reads one record, waiting at most `timeout_s`; dies on timeout or EOF.
Record read_record(int fd, int timeout_s) {
  Record r;
  std::size_t got = 0;
  while (got < sizeof r) {
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, timeout_s * 1000);
    if (pr == 0) die("a child did not report within " + std::to_string(timeout_s) + " s");
    if (pr < 0) continue;
    const ssize_t k = ::read(fd, reinterpret_cast<char*>(&r) + got, sizeof r - got);
    if (k <= 0) die("result pipe closed early");
    got += static_cast<std::size_t>(k);
  }
  if (r.kind == 3) die("child " + std::to_string(r.index) + " failed: " + r.error);
  return r;
}

// One byte read per `stride` bytes of [p, p + bytes): the pages a reader of the KV touches.
std::uint64_t touch(const void* p, std::size_t bytes, std::size_t stride) {
  const volatile unsigned char* b = static_cast<const volatile unsigned char*>(p);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < bytes; i += stride) sum += b[i];
  return sum;
}

void check(pf_result r, pf_client* c, const char* what) {
  if (r != PF_OK) {
    die(std::string(what) + ": " + pf_result_string(r) + ": " +
        (c ? pf_last_error_message(c) : ""));
  }
}

// --- the worker: a separate exec'd process, as an engine process would be -----------------

int worker_main(const std::string& socket, int go_fd, int result_fd, std::uint32_t index,
                std::size_t stride) {
  Record r;
  r.index = index;
  r.kind = 1;
  write_record(result_fd, r);
  pf_branch_id branch = 0;
  if (::read(go_fd, &branch, sizeof branch) != sizeof branch) return 2;
  pf_result res = PF_OK;
  auto fail = [&](const char* what, pf_client* c) {
    r.kind = 3;
    std::snprintf(r.error, sizeof r.error, "%s: %s: %s", what, pf_result_string(res),
                  c ? pf_last_error_message(c) : "");
    write_record(result_fd, r);
    return 1;
  };
  auto t = Clock::now();
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = socket.c_str();
  cfg.timeout_ms = 120000;  // 128 workers first-touching gigabytes on 2 cores answer slowly
  pf_client* c = nullptr;
  if ((res = pf_connect(&cfg, &c)) != PF_OK) return fail("connect", c);
  r.connect_us = us_since(t);
  t = Clock::now();
  pf_branch_info info{};
  if ((res = pf_branch_view(c, branch, &info, nullptr, 0, nullptr, 0)) != PF_OK) {
    return fail("view", c);
  }
  std::vector<std::uint32_t> pages(info.n_pages);
  if ((res = pf_branch_view(c, branch, &info, pages.data(), pages.size(), nullptr, 0)) != PF_OK) {
    return fail("view pages", c);
  }
  pf_pool_info pool{};
  pool.struct_size = sizeof pool;
  if ((res = pf_pool_info_get(c, &pool)) != PF_OK) return fail("pool info", c);
  std::vector<const void*> ptrs(pages.size());
  for (std::size_t i = 0; i < pages.size(); ++i) {
    void* p = nullptr;
    if ((res = pf_page_ptr(c, pages[i], &p)) != PF_OK) return fail("page_ptr", c);
    ptrs[i] = p;
  }
  r.adopt_us = us_since(t);
  t = Clock::now();
  for (const void* p : ptrs) r.sum += touch(p, pool.page_bytes, stride);
  r.touch_us = us_since(t);
  r.pages = pages.size();
  r.kind = 2;
  write_record(result_fd, r);
  // Wait for the parent's "exit" (untimed), then let the daemon free the branch with the
  // session.
  ::read(go_fd, &branch, sizeof branch);
  pf_disconnect(c);
  return 0;
}

// --- options --------------------------------------------------------------------------------

struct Options {
  std::vector<std::uint64_t> tokens{1024, 32768, 131072};
  std::vector<std::uint64_t> ns{1, 12, 128};
  std::string geometry = "llama-3-8b";
  std::uint32_t reps = 0;  // 0 = by size
  std::size_t stride = 4096;
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
    if (a == "--tokens") {
      o.tokens = parse_list(val());
    } else if (a == "--n") {
      o.ns = parse_list(val());
    } else if (a == "--geometry") {
      o.geometry = val();
    } else if (a == "--reps") {
      o.reps = static_cast<std::uint32_t>(parse_list(val()).at(0));
    } else if (a == "--stride") {
      o.stride = parse_list(val()).at(0);
    } else if (a == "--processfork") {
      o.processfork = val();
    } else if (a == "--out") {
      o.out = val();
    } else if (a == "-h" || a == "--help") {
      std::puts(
          "bench_child_cost [--tokens 1024,32768,131072] [--n 1,12,128] [--geometry llama-3-8b]\n"
          "                 [--reps R] [--stride 4096] [--processfork PATH] [--out FILE]");
      std::exit(0);
    } else {
      die("unknown argument " + a);
    }
  }
  for (std::uint64_t n : o.ns) {
    if (n < 1 || n > PF_MAX_FORK) die("--n must be in 1..1024");
  }
  return o;
}

// Reps for a cell touching n * kv bytes: 5 for small cells, fewer as the work grows (one
// rep of n = 128 children already averages over 128 children).
std::uint32_t reps_for(const Options& o, std::uint64_t n, std::size_t kv) {
  if (o.reps) return o.reps;
  const double work = static_cast<double>(n) * static_cast<double>(kv);
  return static_cast<std::uint32_t>(std::clamp(128.0 * kGiB / work, 1.0, 5.0));
}

Json summary(const std::vector<double>& v) {
  const bench::Summary s = bench::summarize(v);
  return Json{{"p50_us", s.p50}, {"min_us", s.min}, {"max_us", s.max}, {"samples", s.n}};
}

// Per-child figures of one cell: wall / n per rep, and the children's own phases.
struct Cell {
  std::vector<double> per_child_us;  // one per rep
  std::vector<double> fork_us, connect_us, adopt_us, touch_us;
};

// --- ProcessFork: daemon, prefill, n exec'd workers per rep ---------------------------------

struct Pipe {
  int r = -1, w = -1;
};
Pipe make_pipe() {
  int fds[2];
  if (::pipe(fds) != 0) die("pipe");
  return Pipe{fds[0], fds[1]};
}

void processfork_cell(const std::string& socket, pf_client* parent, const std::string& cid,
                      std::uint64_t n, std::uint32_t reps, std::size_t stride, Cell* cell) {
  const std::string exe = demo::self_exe();
  for (std::uint32_t rep = 0; rep < reps; ++rep) {
    Pipe result = make_pipe();
    std::vector<Pipe> go(n);
    std::vector<pid_t> pids(n);
    for (std::uint64_t i = 0; i < n; ++i) {
      go[i] = make_pipe();
      ::fcntl(go[i].w, F_SETFD, FD_CLOEXEC);
      pids[i] = must(demo::spawn_process({exe, "--worker", socket, std::to_string(go[i].r),
                                          std::to_string(result.w), std::to_string(i),
                                          std::to_string(stride)}),
                     "spawn worker");
      ::close(go[i].r);
    }
    ::close(result.w);
    for (std::uint64_t i = 0; i < n; ++i) read_record(result.r, 120);
    // Timed: fork + detach in the parent, then every worker's attach + view + first touch.
    const auto t0 = Clock::now();
    std::vector<pf_branch_id> ids(n);
    const pf_source src = pf_source_named(cid.c_str());
    check(pf_fork(parent, &src, static_cast<std::uint32_t>(n), ids.data(), ids.size(), nullptr, 0),
          parent, "fork");
    for (pf_branch_id b : ids) check(pf_detach(parent, b), parent, "detach");
    cell->fork_us.push_back(us_since(t0));
    for (std::uint64_t i = 0; i < n; ++i) {
      if (::write(go[i].w, &ids[i], sizeof ids[i]) != sizeof ids[i]) die("write go");
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      const Record r = read_record(result.r, 600);
      cell->connect_us.push_back(r.connect_us);
      cell->adopt_us.push_back(r.adopt_us);
      cell->touch_us.push_back(r.touch_us);
    }
    cell->per_child_us.push_back(us_since(t0) / static_cast<double>(n));
    for (std::uint64_t i = 0; i < n; ++i) {
      ::write(go[i].w, &ids[i], sizeof ids[i]);
      ::close(go[i].w);
    }
    for (pid_t p : pids) {
      const int st = must(demo::wait_process(p, std::chrono::seconds(120)), "wait worker");
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        die("worker ended with " + demo::describe_wait_status(st));
      }
    }
    ::close(result.r);
  }
}

// --- the OS's fork() of a process holding the bytes -----------------------------------------

struct HostBuffer {
  void* p = nullptr;
  std::size_t bytes = 0;
  std::string pages;  // how it is backed
  std::size_t huge_bytes = 0;
};

std::size_t anon_huge_kib() {
  std::ifstream f("/proc/self/smaps_rollup");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("AnonHugePages:", 0) == 0) return std::stoull(line.substr(14));
  }
  return 0;
}

HostBuffer host_buffer(std::size_t bytes, bool huge) {
  HostBuffer b;
  b.bytes = bytes;
  const std::size_t huge_free = bench::meminfo_kib("HugePages_Free:") * 2048 * 1024;
  if (huge && huge_free >= bytes) {
    b.p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
               -1, 0);
    if (b.p != MAP_FAILED) {
      std::memset(b.p, 0x5a, bytes);
      b.pages = "hugetlbfs 2 MiB pages (MAP_HUGETLB)";
      b.huge_bytes = bytes;
      return b;
    }
  }
  b.p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (b.p == MAP_FAILED) die("mmap of the fork() baseline buffer");
  ::madvise(b.p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  const std::size_t before = anon_huge_kib();
  std::memset(b.p, 0x5a, bytes);  // first touch, untimed
  b.huge_bytes = (anon_huge_kib() - std::min(before, anon_huge_kib())) * 1024;
  b.pages = huge ? "transparent huge pages (madvise MADV_HUGEPAGE; hugetlbfs pool has " +
                       std::to_string(huge_free >> 20) + " MiB free)"
                 : "4 KiB pages (madvise MADV_NOHUGEPAGE)";
  return b;
}

void os_fork_cell(const HostBuffer& b, std::uint64_t n, std::uint32_t reps, std::size_t stride,
                  Cell* cell) {
  for (std::uint32_t rep = 0; rep < reps; ++rep) {
    Pipe result = make_pipe();
    Pipe release = make_pipe();
    std::vector<pid_t> pids;
    const auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      const pid_t pid = ::fork();
      if (pid < 0) die("fork()");
      if (pid == 0) {
        ::close(result.r);
        ::close(release.w);
        Record r;
        r.index = static_cast<std::uint32_t>(i);
        const auto t = Clock::now();
        r.sum = touch(b.p, b.bytes, stride);
        r.touch_us = us_since(t);
        r.kind = 2;
        write_record(result.w, r);
        char c;
        while (::read(release.r, &c, 1) > 0) {
        }
        _exit(0);
      }
      pids.push_back(pid);
    }
    ::close(result.w);
    ::close(release.r);
    for (std::uint64_t i = 0; i < n; ++i)
      cell->touch_us.push_back(read_record(result.r, 600).touch_us);
    cell->per_child_us.push_back(us_since(t0) / static_cast<double>(n));
    ::close(release.w);
    for (pid_t p : pids) {
      int st = 0;
      ::waitpid(p, &st, 0);
    }
    ::close(result.r);
  }
}

// memcpy of `bytes` from src in 1 GiB pieces into one warm buffer: one child's copy.
std::vector<double> copy_cell(const HostBuffer& src, std::uint32_t reps) {
  const std::size_t piece = std::min(src.bytes, kGiB);
  void* dst = mmap(nullptr, piece, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (dst == MAP_FAILED) die("mmap of the copy buffer");
  std::memset(dst, 0, piece);
  std::vector<double> v;
  for (std::uint32_t rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    for (std::size_t off = 0; off < src.bytes; off += piece) {
      std::memcpy(dst, static_cast<const char*>(src.p) + off, std::min(piece, src.bytes - off));
    }
    v.push_back(us_since(t0));
  }
  ::munmap(dst, piece);
  return v;
}

// --- one context size ------------------------------------------------------------------------

Json cell_json(const Cell& c) {
  Json j{{"per_child", summary(c.per_child_us)}};
  if (!c.fork_us.empty()) j["parent_fork_detach"] = summary(c.fork_us);
  if (!c.connect_us.empty()) j["child_connect_attach"] = summary(c.connect_us);
  if (!c.adopt_us.empty()) j["child_view_page_ptrs"] = summary(c.adopt_us);
  if (!c.touch_us.empty()) j["child_first_touch"] = summary(c.touch_us);
  return j;
}

Json run_context(const Options& o, std::uint64_t requested) {
  const Geometry g = must(parse_geometry(o.geometry), "--geometry");
  const std::uint64_t max_n = *std::max_element(o.ns.begin(), o.ns.end());
  const std::size_t avail = bench::meminfo_kib("MemAvailable:") * 1024;
  auto need = [&](std::uint64_t t) {
    const std::size_t kv = (t + g.page_tokens - 1) / g.page_tokens * g.page_bytes();
    return kv + kv / 512 * max_n + kGiB / 2;  // the KV, n children's page tables, slack
  };
  std::uint64_t T = requested;
  while (T > g.page_tokens && static_cast<double>(need(T)) > 0.85 * static_cast<double>(avail)) {
    T /= 2;
  }
  const std::size_t pages = (T + g.page_tokens - 1) / g.page_tokens;
  const std::size_t kv = pages * g.page_bytes();
  Json ctx{{"tokens_requested", requested},
           {"tokens", T},
           {"geometry", o.geometry},
           {"page_bytes", g.page_bytes()},
           {"kv_bytes", kv},
           {"pages", pages},
           {"stride_bytes", o.stride},
           {"mem_available_bytes", avail}};
  if (T != requested) {
    ctx["note"] = std::to_string(requested) + " tokens of " + o.geometry + " KV (" +
                  std::to_string(need(requested) >> 30) + " GiB with " + std::to_string(max_n) +
                  " children's page tables) do not fit in 85% of MemAvailable (" +
                  std::to_string(avail >> 30) + " GiB); measured at " + std::to_string(T) +
                  " tokens";
  }
  std::fprintf(stderr, "bench_child_cost: T = %llu tokens (%s), %zu MiB of KV\n",
               static_cast<unsigned long long>(T), o.geometry.c_str(), kv >> 20);

  // ProcessFork.
  Json rows = Json::array();
  std::vector<Json> cells(o.ns.size());
  {
    demo::WorkDir wd = must(demo::WorkDir::create("childcost"), "workdir");
    demo::DaemonOptions dopt;
    dopt.exe = !o.processfork.empty() ? o.processfork
               : std::string(PF_PROCESSFORK_PATH).empty()
                   ? demo::self_dir() + "/../shims/processfork"
                   : PF_PROCESSFORK_PATH;
    dopt.device = "host";
    dopt.geometry = o.geometry;
    const std::size_t chunk = std::size_t{64} << 20;
    dopt.capacity = std::to_string((kv + 2 * chunk + chunk - 1) / chunk * (chunk >> 20)) + "MiB";
    dopt.chunk = "64MiB";
    dopt.socket = wd.file("processfork.sock");
    dopt.ready_file = wd.file("ready.json");
    dopt.log_file = wd.file("daemon.log");
    demo::Daemon daemon = must(demo::Daemon::start(dopt), "daemon");
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    cfg.socket_path = dopt.socket.c_str();
    cfg.timeout_ms = 120000;
    pf_client* c = nullptr;
    check(pf_connect(&cfg, &c), nullptr, "connect");
    pf_new_branch nb{};
    check(pf_branch_create(c, nullptr, 0, &nb), c, "branch");
    const auto tp = Clock::now();
    constexpr std::uint64_t kStep = 4096;
    for (std::uint64_t at = 0; at < T; at += kStep) {
      const std::uint64_t k = std::min(kStep, T - at);
      std::vector<std::uint32_t> tokens(k);
      for (std::uint64_t i = 0; i < k; ++i) tokens[i] = static_cast<std::uint32_t>(1000 + at + i);
      std::vector<pf_write_run> runs(pf_append_max_runs(c, k));
      pf_append_result res{};
      check(pf_append(c, nb.branch, tokens.data(), k, runs.data(), runs.size(), &res), c, "append");
      std::uint32_t last = ~0u;
      for (std::size_t r = 0; r < res.n_runs; ++r) {
        if (runs[r].page == last) continue;
        last = runs[r].page;
        void* p = nullptr;
        check(pf_page_ptr(c, runs[r].page, &p), c, "page_ptr");
        std::memset(p, static_cast<int>(runs[r].page & 0xff), g.page_bytes());
      }
    }
    pf_snapshot_result snap{};
    check(pf_snapshot(c, nb.branch, nullptr, &snap), c, "snapshot");
    ctx["prefill_and_snapshot_s"] = us_since(tp) / 1e6;
    for (std::size_t i = 0; i < o.ns.size(); ++i) {
      const std::uint64_t n = o.ns[i];
      Cell cell;
      const std::uint32_t reps = reps_for(o, n, kv);
      std::fprintf(stderr, "bench_child_cost:   processfork n = %llu (%u reps)\n",
                   static_cast<unsigned long long>(n), reps);
      processfork_cell(dopt.socket, c, snap.cid, n, reps, o.stride, &cell);
      cells[i]["n"] = n;
      cells[i]["reps"] = reps;
      cells[i]["processfork"] = cell_json(cell);
    }
    pf_disconnect(c);
    must(daemon.stop(), "daemon stop");
  }

  // The OS's fork(): huge pages, then 4 KiB pages; copy from the latter.
  for (const bool huge : {true, false}) {
    HostBuffer b = host_buffer(kv, huge);
    ctx[huge ? "os_fork_huge_pages" : "os_fork_4k_pages"] = b.pages;
    if (huge) ctx["os_fork_huge_bytes"] = b.huge_bytes;
    for (std::size_t i = 0; i < o.ns.size(); ++i) {
      const std::uint64_t n = o.ns[i];
      Cell cell;
      const std::uint32_t reps = reps_for(o, n, kv);
      std::fprintf(stderr, "bench_child_cost:   os fork (%s) n = %llu (%u reps)\n",
                   huge ? "huge" : "4k", static_cast<unsigned long long>(n), reps);
      os_fork_cell(b, n, reps, o.stride, &cell);
      cells[i][huge ? "os_fork_huge" : "os_fork_4k"] = cell_json(cell);
    }
    if (!huge) {
      const std::vector<double> copies = copy_cell(b, kv > 2 * kGiB ? 3 : 5);
      for (Json& cj : cells) cj["copy"] = Json{{"per_child", summary(copies)}};
    }
    ::munmap(b.p, b.bytes);
  }
  for (Json& cj : cells) rows.push_back(cj);
  ctx["rows"] = rows;
  return ctx;
}

}  // namespace

int main(int argc, char** argv) {
  pf::bench::set_program("bench_child_cost");
  if (argc == 7 && std::string(argv[1]) == "--worker") {
    return worker_main(argv[2], std::atoi(argv[3]), std::atoi(argv[4]),
                       static_cast<std::uint32_t>(std::atoi(argv[5])),
                       static_cast<std::size_t>(std::atoll(argv[6])));
  }
  const Options o = parse(argc, argv);
  const bench::Machine m = bench::machine();
  Json out;
  out["benchmark"] = "bench_child_cost";
  out["date"] = bench::utc(std::time(nullptr), "%Y-%m-%dT%H:%M:%SZ");
  out["machine"] = {
      {"cpu", m.cpu}, {"cores", m.cores}, {"mem_total_gib", m.mem_total_gib}, {"kernel", m.kernel}};
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::ifstream shmem("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string thp_s, shmem_s;
  std::getline(thp, thp_s);
  std::getline(shmem, shmem_s);
  out["machine"]["thp_enabled"] = thp_s;
  out["machine"]["thp_shmem_enabled"] = shmem_s;
  out["machine"]["hugetlb_pages_total"] = bench::meminfo_kib("HugePages_Total:");
  out["unit"] = "µs per child: wall time for all n children / n";
  auto loadavg = [] {
    std::ifstream f("/proc/loadavg");
    std::string s;
    std::getline(f, s);
    return s;
  };
  out["machine"]["loadavg_at_start"] = loadavg();
  out["contexts"] = Json::array();
  for (std::uint64_t t : o.tokens) out["contexts"].push_back(run_context(o, t));
  out["machine"]["loadavg_at_end"] = loadavg();
  const std::string s = out.dump(1);
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << s << "\n";
  }
  for (const Json& c : out["contexts"]) {
    std::printf("T = %llu tokens (%s of KV)\n", c["tokens"].get<unsigned long long>(),
                std::to_string(c["kv_bytes"].get<std::size_t>() >> 20).append(" MiB").c_str());
    for (const Json& r : c["rows"]) {
      std::printf(
          "  n = %4llu: processfork %10.1f us/child, os fork huge %10.1f, os fork 4k "
          "%10.1f, copy %10.1f\n",
          r["n"].get<unsigned long long>(), r["processfork"]["per_child"]["p50_us"].get<double>(),
          r["os_fork_huge"]["per_child"]["p50_us"].get<double>(),
          r["os_fork_4k"]["per_child"]["p50_us"].get<double>(),
          r["copy"]["per_child"]["p50_us"].get<double>());
    }
  }
  return 0;
}
