// fanout_demo: the README's main job — multi-process agent fan-out on ProcessFork
// (DESIGN §1.1, issue 5; docs/demo.md).
//
//   fanout_demo [--context T] [--children N] [--suffix S] [--steps K] [--model SPEC]
//               [--page-tokens P] [--dtype fp32|bf16] [--temperature X] [--seed N]
//               [--device auto|host|cuda[:N]] [--processfork PATH] [--workdir DIR]
//               [--fork-reps R] [--json FILE] [--no-control] [--inject-fault child-seed]
//
// 1. Starts `processfork serve` on a private socket in a fresh temporary directory, with a
//    pool geometry that matches the reference model (HTTP off).
// 2. This process prefills a T-token context with the reference engine through the client
//    library (append -> write runs -> KV written into the mapped pages -> commit),
//    snapshots it and forks N branches (+1 for the negative control), detached.
// 3. It computes the reference: the same context prefilled again into private memory,
//    then every branch's continuation decoded on it (an uninterrupted single-process run
//    over the same tokens; this prefill is also the re-prefill baseline).
// 4. It execs N worker processes (this binary, --child). Each connects, takes its branch
//    (its pages are the snapshot's shared pages), appends its own task suffix and decodes K
//    tokens with its own sampling seed, writing its KV into the pool, and reports every
//    step's logits and token.
// 5. A control process (the (N+1)-th) copies its branch's shared pages into private memory
//    and decodes twice: from the exact copy (must match the reference) and from the copy
//    with one byte of one shared page altered (must NOT match). It never writes the pool.
// 6. One more child, forked and started alone once the others are done: its time to first
//    token without contention (it must match the reference too).
// 7. Checks: every worker's tokens and logits equal the reference bit for bit; the control
//    is detected; the sealed context pages are byte-identical after the run; pool pages
//    after the fan-out = context + what the children appended. Prints fork latency, pages
//    shared and copied, memory with fork vs copying, time to first token vs re-prefill.
// 8. Stops the daemon (SIGTERM; its socket must be gone), reaps every child and removes
//    the directory — on failure too. Children and the daemon die with this process even if
//    it is SIGKILLed (PR_SET_PDEATHSIG). Exit status 0 only when every check passes.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "perf/engine/engine.h"
#include "perf/fanout_process.h"
#include "perf/fanout_stream.h"
#include "processfork.hpp"

#ifndef PF_PROCESSFORK_PATH
#define PF_PROCESSFORK_PATH ""
#endif

namespace {

using namespace pf;
using namespace pf::demo;
using Clock = std::chrono::steady_clock;
using engine::Engine;
using engine::ModelConfig;
using engine::PagedKv;

volatile std::sig_atomic_t g_interrupted = 0;
void on_signal(int sig) {
  g_interrupted = sig;
}

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

std::string human_us(double us) {
  char b[32];
  if (us < 1000) {
    std::snprintf(b, sizeof b, "%.1f µs", us);
  } else if (us < 1e6) {
    std::snprintf(b, sizeof b, "%.1f ms", us / 1e3);
  } else {
    std::snprintf(b, sizeof b, "%.2f s", us / 1e6);
  }
  return b;
}

std::string human_bytes(double bytes) {
  char b[32];
  if (bytes < 1024) {
    std::snprintf(b, sizeof b, "%.0f B", bytes);
  } else if (bytes < 1024.0 * 1024) {
    std::snprintf(b, sizeof b, "%.1f KiB", bytes / 1024);
  } else if (bytes < 1024.0 * 1024 * 1024) {
    std::snprintf(b, sizeof b, "%.1f MiB", bytes / 1024 / 1024);
  } else {
    std::snprintf(b, sizeof b, "%.2f GiB", bytes / 1024 / 1024 / 1024);
  }
  return b;
}

struct Options {
  std::uint64_t context = 4090;  // 255 full pages of 16 and one page holding 10 tokens
  std::uint32_t children = 12;
  std::uint32_t suffix = 16;
  std::uint32_t steps = 32;
  std::string model = "demo";
  std::uint32_t page_tokens = 16;
  std::string dtype = "fp32";
  float temperature = 0.8f;
  std::uint64_t seed = 1;
  std::string device = "auto";
  std::string processfork;
  std::string workdir;
  std::uint32_t fork_reps = 200;
  std::string json;
  bool control = true;
  std::string fault;  // "child-seed": worker 0 samples with another seed (must be caught)
  bool verify = false;
  // --child mode
  bool child = false;
  std::string socket;
  std::uint64_t branch = 0;
  std::uint32_t index = 0;
  std::string report;
  std::int64_t t0_ns = 0;
  bool is_control = false;
};

[[noreturn]] void usage(const std::string& why) {
  const bool help = why.empty();
  std::fprintf(help ? stdout : stderr,
               "%s%s"
               "usage: fanout_demo [--context T] [--children N] [--suffix S] [--steps K]\n"
               "                   [--model SPEC] [--page-tokens P] [--dtype fp32|bf16]\n"
               "                   [--temperature X] [--seed N] [--device auto|host|cuda[:N]]\n"
               "                   [--processfork PATH] [--workdir DIR] [--fork-reps R]\n"
               "                   [--json FILE] [--no-control] [--verify]\n"
               "                   [--inject-fault child-seed]\n"
               "See docs/demo.md. Exit status 0 only when every check passes.\n",
               help ? "" : "fanout_demo: ", help ? "" : (why + "\n").c_str());
  std::exit(help ? 0 : 2);
}

std::uint64_t parse_u64(const std::string& flag, const std::string& v, std::uint64_t lo,
                        std::uint64_t hi) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < lo || x > hi) {
    usage(flag + " needs an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return x;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    const std::size_t eq = a.find('=');
    const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto val = [&]() -> std::string {
      if (has_eq) return v;
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--context") {
      o.context = parse_u64(a, val(), 1, 1u << 20);
    } else if (a == "--children") {
      o.children = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 256));
    } else if (a == "--suffix") {
      o.suffix = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 4096));
    } else if (a == "--steps") {
      o.steps = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 4096));
    } else if (a == "--model") {
      o.model = val();
    } else if (a == "--page-tokens") {
      o.page_tokens = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 4096));
    } else if (a == "--dtype") {
      o.dtype = val();
      if (o.dtype != "fp32" && o.dtype != "bf16") usage("--dtype is fp32 or bf16");
    } else if (a == "--temperature") {
      const std::string t = val();
      char* end = nullptr;
      o.temperature = std::strtof(t.c_str(), &end);
      if (t.empty() || *end != '\0' || !(o.temperature >= 0.0f) || o.temperature > 100.0f) {
        usage("--temperature needs a number in 0..100");
      }
    } else if (a == "--seed") {
      o.seed = parse_u64(a, val(), 0, UINT64_MAX);
    } else if (a == "--device") {
      o.device = val();
    } else if (a == "--processfork") {
      o.processfork = val();
    } else if (a == "--workdir") {
      o.workdir = val();
    } else if (a == "--fork-reps") {
      o.fork_reps = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 1000000));
    } else if (a == "--json") {
      o.json = val();
    } else if (a == "--no-control") {
      o.control = false;
    } else if (a == "--verify") {
      o.verify = true;
    } else if (a == "--inject-fault") {
      o.fault = val();
      if (o.fault != "child-seed") usage("--inject-fault takes child-seed");
    } else if (a == "--child") {
      o.child = true;
    } else if (a == "--socket") {
      o.socket = val();
    } else if (a == "--branch") {
      o.branch = parse_u64(a, val(), 1, UINT64_MAX);
    } else if (a == "--index") {
      o.index = static_cast<std::uint32_t>(parse_u64(a, val(), 0, 1u << 20));
    } else if (a == "--report") {
      o.report = val();
    } else if (a == "--t0") {
      o.t0_ns = static_cast<std::int64_t>(parse_u64(a, val(), 0, INT64_MAX));
    } else if (a == "--control") {
      o.is_control = true;
    } else if (a == "-h" || a == "--help") {
      usage("");
    } else {
      usage("unknown argument " + a);
    }
  }
  return o;
}

rt::DType dtype_of(const Options& o) {
  return o.dtype == "bf16" ? rt::DType::kBF16 : rt::DType::kFP32;
}

// The engine for the pool's memory: the CUDA engine on a CUDA pool, else the host engine.
Result<std::unique_ptr<Engine>> engine_for(const ModelConfig& cfg, const processfork::PoolInfo& p) {
  if (p.device_memory != 0) return engine::make_engine(cfg, p.device);
  return engine::make_host_engine(cfg);
}

Status check_pool(const processfork::PoolInfo& p, const rt::Geometry& g) {
  const std::uint32_t want_dtype = g.dtype == rt::DType::kBF16 ? PF_DTYPE_BF16 : PF_DTYPE_FP32;
  if (p.layers != g.layers || p.kv_heads != g.kv_heads || p.head_dim != g.head_dim ||
      p.page_tokens != g.page_tokens || p.dtype != want_dtype || p.page_bytes != g.page_bytes()) {
    return PF_ERROR(Code::kInvalidArgument,
                    "the daemon's pool geometry does not match the model's KV: " + g.to_string());
  }
  return Status::ok();
}

rt::WriteRun to_rt(const processfork::WriteRun& r) {
  return rt::WriteRun{r.page, r.first_slot, r.count, r.first_token};
}

// A branch of the pool as the engine sees it: appends make room and hand the write runs
// to the PagedKv. Counts pages taken and copy-on-write copies.
struct PoolSeq {
  processfork::Client* client;
  processfork::Branch* branch;
  PagedKv* kv;
  std::uint32_t pages_added = 0;
  std::uint32_t cow_copies = 0;

  Status append(std::span<const rt::Token> tokens) {
    if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
    try {
      const processfork::AppendResult ar = branch->append(tokens);
      pages_added += ar.pages_added;
      cow_copies += ar.copied_page ? 1 : 0;
      std::vector<rt::WriteRun> runs;
      for (const processfork::WriteRun& r : ar.runs) runs.push_back(to_rt(r));
      return kv->add_write_runs(runs, [this](rt::PageId id) -> Result<std::byte*> {
        return static_cast<std::byte*>(client->page_ptr(id));
      });
    } catch (const processfork::Error& e) {
      return PF_ERROR(static_cast<Code>(e.code()), std::string("append: ") + e.what());
    }
  }
};

// The branch's current pages as a PagedKv holding its n_tokens.
Status kv_from_branch(processfork::Client& client, processfork::Branch& branch, PagedKv* kv) {
  const processfork::View view = branch.view();
  for (std::uint32_t page : view.pages)
    kv->push_page(static_cast<std::byte*>(client.page_ptr(page)));
  return kv->set_n_tokens(view.info.n_tokens);
}

// ---------------------------------------------------------------------------------------
// Child processes

int run_child(const Options& o) {
  ChildReport rep;
  rep.index = o.index;
  rep.control = o.is_control;
  Result<ModelConfig> cfg = engine::parse_model_config(o.model);
  if (!cfg.is_ok()) {
    std::fprintf(stderr, "fanout_demo child %u: %s\n", o.index, cfg.status().to_string().c_str());
    return 1;
  }
  const std::uint32_t vocab = cfg->vocab;
  auto fail = [&](const std::string& what) {
    rep.error = what;
    std::fprintf(stderr, "fanout_demo child %u: %s\n", o.index, what.c_str());
    write_report(o.report, rep, vocab).ignore();
    return 1;
  };
  try {
    const rt::Geometry g = cfg->kv_geometry(o.page_tokens, dtype_of(o));
    Clock::time_point t = Clock::now();
    processfork::ConnectOptions co;
    co.socket_path = o.socket;
    processfork::Client client(co);
    rep.connect_us = us_since(t);
    const processfork::PoolInfo info = client.pool();
    Status s = check_pool(info, g);
    if (!s.is_ok()) return fail(s.to_string());
    Result<std::unique_ptr<Engine>> eng = engine_for(*cfg, info);
    if (!eng.is_ok()) return fail(eng.status().to_string());
    Engine& e = **eng;

    t = Clock::now();
    processfork::Branch branch = client.adopt(o.branch);
    PagedKv kv(g);
    s = kv_from_branch(client, branch, &kv);
    if (!s.is_ok()) return fail(s.to_string());
    rep.adopt_us = us_since(t);
    const std::uint64_t context = kv.n_tokens();

    StreamSpec spec = stream_spec(o.seed, o.index, o.suffix, o.steps, o.temperature, vocab);
    if (o.fault == "child-seed") spec.seed += 1;  // a wrong sampler seed: must be caught

    if (!o.is_control) {
      PoolSeq seq{&client, &branch, &kv};
      const std::int64_t decode_start_ns = now_ns();
      s = decode(
          e, kv, spec, [&](std::span<const rt::Token> toks) { return seq.append(toks); },
          &rep.stream);
      if (!s.is_ok()) return fail(s.to_string());
      rep.spawn_to_first_token_us =
          static_cast<double>(decode_start_ns - o.t0_ns) / 1e3 + rep.stream.first_token_us;
      rep.pages_added = seq.pages_added;
      rep.cow_copies = seq.cow_copies;
      rep.final_tokens = kv.n_tokens();
      branch.release();  // stays (detached) for the parent's page count; the parent frees it
    } else {
      // Negative control: private copies of the shared pages; the pool is never written.
      const std::size_t ctx_pages = kv.pages().size();
      const std::size_t total_pages = static_cast<std::size_t>(
          (context + o.suffix + o.steps + g.page_tokens - 1) / g.page_tokens);
      Result<engine::PageArena> arena = e.alloc_pages(total_pages, g.page_bytes());
      if (!arena.is_ok()) return fail(arena.status().to_string());
      const std::vector<std::byte*> shared(kv.pages().begin(), kv.pages().end());
      auto private_copy = [&](PagedKv* priv) -> Status {
        for (std::size_t i = 0; i < total_pages; ++i) {
          if (i < ctx_pages) PF_TRY(e.copy_within(arena->page(i), shared[i], g.page_bytes()));
          priv->push_page(arena->page(i));
        }
        return priv->set_n_tokens(context);
      };
      const MakeRoom no_room = [](std::span<const rt::Token>) { return Status::ok(); };
      PagedKv clean(g);
      s = private_copy(&clean);
      if (s.is_ok()) s = decode(e, clean, spec, no_room, &rep.stream);
      if (!s.is_ok()) return fail(s.to_string());
      // One byte of one shared page: the high byte of element 1 of a middle token's K row
      // in layer 0 of the middle context page; flipping its lowest bit scales that element
      // by 4 or 1/4 (fp32: exponent bit 1; bf16: exponent bit 1 as well).
      PagedKv altered(g);
      s = private_copy(&altered);
      if (!s.is_ok()) return fail(s.to_string());
      const std::size_t esize = rt::dtype_bytes(g.dtype);
      rep.altered_page = static_cast<std::uint32_t>(ctx_pages / 2);
      rep.altered_offset = g.offset(0, rt::Half::kK, g.page_tokens / 2) + esize + (esize - 1);
      std::byte* at = arena->page(rep.altered_page) + rep.altered_offset;
      std::byte b{};
      s = e.copy_to_host(&b, at, 1);
      b ^= std::byte{0x01};
      if (s.is_ok()) s = e.copy_from_host(at, &b, 1);
      if (s.is_ok()) s = decode(e, altered, spec, no_room, &rep.altered);
      if (!s.is_ok()) return fail(s.to_string());
      rep.spawn_to_first_token_us = static_cast<double>(now_ns() - o.t0_ns) / 1e3;
      rep.final_tokens = context;
      branch.free();
    }
  } catch (const std::exception& e) {
    return fail(std::string("client: ") + e.what());
  }
  const Status s = write_report(o.report, rep, vocab);
  if (!s.is_ok()) {
    std::fprintf(stderr, "fanout_demo child %u: %s\n", o.index, s.to_string().c_str());
    return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// The parent

struct Check {
  std::string name;
  bool ok;
  std::string detail;
};

std::string find_processfork(const Options& o) {
  if (!o.processfork.empty()) return o.processfork;
  if (const char* env = std::getenv("PROCESSFORK_BIN"); env != nullptr && *env != '\0') return env;
  const std::string built = PF_PROCESSFORK_PATH;
  if (!built.empty() && ::access(built.c_str(), X_OK) == 0) return built;
  return self_dir() + "/../shims/processfork";
}

class Parent {
 public:
  explicit Parent(const Options& o) : o_(o) {}

  int run() {
    const Status s = run_all();
    bool all_ok = s.is_ok();
    if (!s.is_ok()) std::printf("\nFAILED: %s\n", s.to_string().c_str());
    // Cleanup, on success and failure alike: children, client, daemon, directory.
    for (pid_t pid : children_) kill_process(pid);
    children_.clear();
    client_.reset();
    const Status stopped = daemon_.stop();
    checks_.push_back({"daemon stopped cleanly, socket removed", stopped.is_ok(),
                       stopped.is_ok() ? "" : stopped.to_string()});
    const std::string dir = workdir_.path();
    workdir_.remove();
    const bool gone = !dir.empty() && ::access(dir.c_str(), F_OK) != 0;
    checks_.push_back({"work directory removed", gone || dir.empty(), dir});
    std::printf("\nChecks\n");
    for (const Check& c : checks_) {
      std::printf("  [%s] %s%s%s\n", c.ok ? "PASS" : "FAIL", c.name.c_str(),
                  c.detail.empty() ? "" : ": ", c.detail.c_str());
      all_ok = all_ok && c.ok;
    }
    summary_["checks"] = nlohmann::json::array();
    for (const Check& c : checks_) {
      summary_["checks"].push_back({{"name", c.name}, {"ok", c.ok}, {"detail", c.detail}});
    }
    summary_["ok"] = all_ok;
    summary_["error"] = s.is_ok() ? "" : s.to_string();
    summary_["wall_s"] = us_since(t_start_) / 1e6;
    if (!o_.json.empty()) {
      std::ofstream out(o_.json);
      out << summary_.dump(2) << "\n";
      if (!out) {
        std::fprintf(stderr, "fanout_demo: cannot write %s\n", o_.json.c_str());
        all_ok = false;
      }
    }
    std::printf("\n%s (%.1f s)\n",
                all_ok ? "fan-out demo: ALL CHECKS PASSED" : "fan-out demo: FAILED",
                us_since(t_start_) / 1e6);
    return all_ok ? 0 : 1;
  }

 private:
  Status run_all() {
    PF_ASSIGN_OR_RETURN(cfg_, engine::parse_model_config(o_.model));
    geometry_ = cfg_.kv_geometry(o_.page_tokens, dtype_of(o_));
    PF_TRY(geometry_.validate());
    const std::uint32_t workers = o_.children;
    const std::uint32_t forks = workers + (o_.control ? 1 : 0);
    const std::uint64_t P = geometry_.page_tokens;
    const std::uint64_t ctx_pages = (o_.context + P - 1) / P;
    const std::uint64_t child_pages = (o_.context % P + o_.suffix + o_.steps + P - 1) / P + 1;
    const std::uint64_t need_pages = 2 * (ctx_pages + forks * child_pages) + 64;
    const std::uint64_t capacity_mib =
        std::max<std::uint64_t>(64, (need_pages * geometry_.page_bytes() + (1u << 20) - 1) >> 20);

    std::printf("ProcessFork fan-out demo (DESIGN §1.1)\n");
    std::printf("  model      %s (%s)\n", o_.model.c_str(), cfg_.to_string().c_str());
    std::printf("  KV pages   %s: %s per page\n", geometry_.to_string().c_str(),
                human_bytes(static_cast<double>(geometry_.page_bytes())).c_str());
    std::printf("  context    %" PRIu64 " tokens = %" PRIu64 " pages (%s of KV)\n", o_.context,
                ctx_pages,
                human_bytes(static_cast<double>(ctx_pages * geometry_.page_bytes())).c_str());
    std::printf("  fan-out    %u worker processes x (%u suffix + %u sampled tokens, T=%.2f)%s\n",
                workers, o_.suffix, o_.steps, o_.temperature,
                o_.control ? " + 1 negative-control process" : "");

    // 1. The daemon.
    if (o_.workdir.empty()) {
      PF_ASSIGN_OR_RETURN(workdir_, WorkDir::create("demo"));
    } else {
      PF_ASSIGN_OR_RETURN(workdir_, WorkDir::adopt(o_.workdir));
    }
    DaemonOptions dopt;
    dopt.exe = find_processfork(o_);
    dopt.device = o_.device;
    dopt.geometry = geometry_.to_string();
    dopt.capacity = std::to_string(capacity_mib) + "MiB";
    dopt.chunk = "0";
    dopt.socket = workdir_.file("processfork.sock");
    dopt.ready_file = workdir_.file("ready.json");
    dopt.log_file = workdir_.file("daemon.log");
    dopt.verify = o_.verify;
    Clock::time_point t = Clock::now();
    PF_ASSIGN_OR_RETURN(daemon_, Daemon::start(dopt));
    summary_["daemon"] = {{"start_ms", us_since(t) / 1e3},
                          {"backend", daemon_.backend()},
                          {"device", daemon_.device()},
                          {"capacity", dopt.capacity},
                          {"pid", daemon_.pid()}};
    std::printf(
        "  daemon     %s serve --device %s: backend %s (%s), pid %d, socket %s, ready in %s\n",
        dopt.exe.c_str(), o_.device.c_str(), daemon_.backend().c_str(), daemon_.device().c_str(),
        static_cast<int>(daemon_.pid()), dopt.socket.c_str(), human_us(us_since(t)).c_str());

    try {
      return run_with_daemon(workers, forks, ctx_pages);
    } catch (const processfork::Error& e) {
      return PF_ERROR(static_cast<Code>(e.code()), std::string("client: ") + e.what());
    }
  }

  // The command line of child `index` taking branch `branch`.
  std::vector<std::string> child_argv(const std::string& exe, std::uint64_t branch,
                                      std::uint32_t index) {
    char temp[32];
    std::snprintf(temp, sizeof temp, "%.9g", o_.temperature);
    return {exe,
            "--child",
            "--socket",
            daemon_.socket(),
            "--branch",
            std::to_string(branch),
            "--index",
            std::to_string(index),
            "--report",
            workdir_.file("child-" + std::to_string(index) + ".report"),
            "--t0",
            std::to_string(now_ns()),
            "--model",
            o_.model,
            "--page-tokens",
            std::to_string(o_.page_tokens),
            "--dtype",
            o_.dtype,
            "--suffix",
            std::to_string(o_.suffix),
            "--steps",
            std::to_string(o_.steps),
            "--seed",
            std::to_string(o_.seed),
            "--temperature",
            temp};
  }

  Status run_with_daemon(std::uint32_t workers, std::uint32_t forks, std::uint64_t ctx_pages) {
    processfork::ConnectOptions co;
    co.socket_path = daemon_.socket();
    Clock::time_point t = Clock::now();
    client_ = std::make_unique<processfork::Client>(co);
    const double connect_us = us_since(t);
    processfork::Client& client = *client_;
    const processfork::PoolInfo info = client.pool();
    PF_TRY(check_pool(info, geometry_));
    PF_ASSIGN_OR_RETURN(std::unique_ptr<Engine> eng, engine_for(cfg_, info));
    Engine& e = *eng;
    const std::size_t page_bytes = geometry_.page_bytes();
    std::printf("  engine     %s (reference engine, single-threaded, deterministic)\n",
                e.name().c_str());

    // 2. Prefill the context into the pool.
    const std::vector<rt::Token> context = engine::random_tokens(o_.seed, o_.context, cfg_.vocab);
    std::printf("\n[1] parent prefills %" PRIu64 " context tokens into pool pages ...\n",
                o_.context);
    processfork::NewBranch nb = client.branch();
    PagedKv kv(geometry_);
    PoolSeq seq{&client, &nb.branch, &kv};
    t = Clock::now();
    PF_TRY(seq.append(context));
    PF_TRY(e.forward(kv, context, {}));
    nb.branch.commit();
    const double prefill_us = us_since(t);
    if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
    const processfork::PoolStats st0 = client.pool_stats();
    std::printf("    prefill   %s (%.0f tokens/s), %" PRIu64 " pages used\n",
                human_us(prefill_us).c_str(), o_.context / (prefill_us / 1e6), st0.used_pages);

    t = Clock::now();
    const processfork::Snapshot snap = nb.branch.snapshot("fanout-context");
    const double snapshot_us = us_since(t);
    std::printf("    snapshot  %s in %s (%" PRIu64 " pages sealed and digested)\n",
                snap.cid.substr(0, 19).c_str(), human_us(snapshot_us).c_str(), snap.n_pages);
    // The context's bytes, to prove afterwards that nobody altered a sealed page.
    const processfork::View ctx_view = nb.branch.view();
    std::vector<std::byte> ctx_bytes(ctx_view.pages.size() * page_bytes);
    for (std::size_t i = 0; i < ctx_view.pages.size(); ++i) {
      PF_TRY(e.copy_to_host(ctx_bytes.data() + i * page_bytes, client.page_ptr(ctx_view.pages[i]),
                            page_bytes));
    }

    // Fork latency over the socket, repeated (children freed between reps, untimed).
    std::vector<double> fork_us;
    for (std::uint32_t r = 0; r < o_.fork_reps; ++r) {
      t = Clock::now();
      std::vector<processfork::Branch> kids = client.fork(processfork::Source(snap.cid), workers);
      fork_us.push_back(us_since(t));
      for (processfork::Branch& k : kids) k.free();
    }

    // 3. The real fork.
    std::printf("\n[2] fork %u branches from the snapshot (+%u for the control)\n", workers,
                forks - workers);
    t = Clock::now();
    std::vector<processfork::Branch> kids = client.fork(processfork::Source(snap.cid), forks);
    const double the_fork_us = us_since(t);
    const processfork::PoolStats st1 = client.pool_stats();
    std::vector<std::uint64_t> kid_ids;
    for (processfork::Branch& k : kids) kid_ids.push_back(k.detach());
    std::printf("    fork      %s for %u branches (p50 %s, p99 %s over %u reps of %u)\n",
                human_us(the_fork_us).c_str(), forks, human_us(pct(fork_us, 0.5)).c_str(),
                human_us(pct(fork_us, 0.99)).c_str(), o_.fork_reps, workers);
    std::printf("    pages     %" PRIu64 " used before, %" PRIu64 " after (%" PRIu64
                " shared), 0 bytes copied\n",
                st0.used_pages, st1.used_pages, st1.shared_pages);

    // 4. The reference: an uninterrupted single-process run on private memory.
    std::printf("\n[3] reference: the same tokens in one process, on private memory\n");
    const std::uint64_t ref_pages =
        (o_.context + o_.suffix + o_.steps + geometry_.page_tokens - 1) / geometry_.page_tokens;
    PF_ASSIGN_OR_RETURN(engine::PageArena arena, e.alloc_pages(ref_pages, page_bytes));
    PagedKv ref(geometry_);
    for (std::size_t i = 0; i < ref_pages; ++i) ref.push_page(arena.page(i));
    t = Clock::now();
    PF_TRY(e.forward(ref, context, {}));
    const double reprefill_us = us_since(t);
    // Streams 0..forks-1: the workers and the control; stream `forks`: the solo child.
    std::vector<Stream> expected(forks + 1);
    const MakeRoom no_room = [](std::span<const rt::Token>) { return Status::ok(); };
    for (std::uint32_t i = 0; i <= forks; ++i) {
      if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
      PF_TRY(ref.set_n_tokens(o_.context));
      const StreamSpec spec =
          stream_spec(o_.seed, i, o_.suffix, o_.steps, o_.temperature, cfg_.vocab);
      PF_TRY(decode(e, ref, spec, no_room, &expected[i]));
    }
    std::printf("    prefill   %s (the re-prefill a child would need without ProcessFork)\n",
                human_us(reprefill_us).c_str());
    std::printf("    decoded   %u continuations (first token after %s of the suffix)\n", forks + 1,
                human_us(expected[0].first_token_us).c_str());

    // 5. The children.
    std::printf("\n[4] exec %u worker processes%s; each takes its branch and decodes\n", workers,
                o_.control ? " and 1 control process" : "");
    const std::string exe = self_exe();
    const Clock::time_point t_spawn = Clock::now();
    for (std::uint32_t i = 0; i < forks; ++i) {
      const bool control = i == workers;
      std::vector<std::string> argv = child_argv(exe, kid_ids[i], i);
      if (control) argv.push_back("--control");
      if (!control && i == 0 && !o_.fault.empty())
        argv.insert(argv.end(), {"--inject-fault", o_.fault});
      PF_ASSIGN_OR_RETURN(
          const pid_t pid,
          spawn_process(argv, workdir_.file("child-" + std::to_string(i) + ".log")));
      children_.push_back(pid);
    }
    std::vector<std::string> exit_notes(forks);
    bool all_exited_ok = true;
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    for (std::uint32_t i = 0; i < forks; ++i) {
      for (;;) {
        if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
        Result<int> st = wait_process(children_[i], std::chrono::milliseconds(50));
        if (st.is_ok()) {
          exit_notes[i] = describe_wait_status(*st);
          all_exited_ok = all_exited_ok && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
          children_[i] = -1;
          break;
        }
        if (Clock::now() > deadline) {
          return PF_ERROR(Code::kUnavailable,
                          "child " + std::to_string(i) + " did not finish in 120 s");
        }
      }
    }
    const double children_wall_us = us_since(t_spawn);
    children_.clear();

    // 6. Compare.
    std::vector<ChildReport> reports(forks);
    std::uint32_t matched = 0;
    std::uint32_t pages_added = 0, cow = 0;
    std::vector<double> ttft, in_proc_ttft, connect, adopt;
    bool control_clean_ok = false, control_detected = false;
    nlohmann::json kids_json = nlohmann::json::array();
    for (std::uint32_t i = 0; i < forks; ++i) {
      const std::string path = workdir_.file("child-" + std::to_string(i) + ".report");
      Result<ChildReport> r = read_report(path, cfg_.vocab);
      const bool control = i == workers;
      if (!r.is_ok() || !r->error.empty()) {
        const std::string why = !r.is_ok() ? r.status().to_string() : r->error;
        std::printf("    %s %2u: FAILED (%s): %s\n", control ? "control" : "child  ", i,
                    exit_notes[i].c_str(), why.c_str());
        checks_.push_back({"process " + std::to_string(i) + " ran", false, why});
        continue;
      }
      reports[i] = std::move(r).value();
      const ChildReport& c = reports[i];
      if (!control) {
        const int diff = first_difference(c.stream, expected[i], cfg_.vocab);
        matched += diff < 0 ? 1 : 0;
        pages_added += c.pages_added;
        cow += c.cow_copies;
        ttft.push_back(c.spawn_to_first_token_us);
        in_proc_ttft.push_back(c.stream.first_token_us);
        connect.push_back(c.connect_us);
        adopt.push_back(c.adopt_us);
        std::string toks;
        for (std::size_t k = 0; k < std::min<std::size_t>(6, c.stream.tokens.size()); ++k) {
          toks += (k ? " " : "") + std::to_string(c.stream.tokens[k]);
        }
        std::printf(
            "    child   %2u: %u tokens [%s ...], %u pages appended%s, first token %s "
            "after spawn -> %s\n",
            i, static_cast<unsigned>(c.stream.tokens.size()), toks.c_str(), c.pages_added,
            c.cow_copies ? " (1 copied on write)" : "", human_us(c.spawn_to_first_token_us).c_str(),
            diff < 0 ? "logits identical to the reference (bit for bit)"
                     : ("MISMATCH at step " + std::to_string(diff) +
                        (c.stream.tokens.size() > static_cast<std::size_t>(diff) &&
                                 c.stream.tokens[diff] != expected[i].tokens[diff]
                             ? " (sampled token differs)"
                             : " (logits differ)"))
                           .c_str());
        kids_json.push_back({{"index", i},
                             {"match", diff < 0},
                             {"first_difference", diff},
                             {"tokens", c.stream.tokens},
                             {"pages_added", c.pages_added},
                             {"cow_copies", c.cow_copies},
                             {"spawn_to_first_token_us", c.spawn_to_first_token_us},
                             {"first_token_us", c.stream.first_token_us},
                             {"connect_us", c.connect_us},
                             {"adopt_us", c.adopt_us},
                             {"decode_us", c.stream.total_us}});
      } else {
        const int clean = first_difference(c.stream, expected[i], cfg_.vocab);
        const int alt = first_difference(c.altered, expected[i], cfg_.vocab);
        control_clean_ok = clean < 0;
        control_detected = alt >= 0;
        std::printf("    control %2u: exact private copy of the shared pages -> %s\n", i,
                    clean < 0 ? "identical to the reference" : "MISMATCH (the copy is wrong)");
        std::printf(
            "               page %u byte %" PRIu64 " altered in the copy -> %s\n", c.altered_page,
            c.altered_offset,
            alt >= 0 ? ("differs from the reference at step " + std::to_string(alt) + " (detected)")
                           .c_str()
                     : "NOT detected");
      }
    }
    const processfork::PoolStats st2 = client.pool_stats();

    // The sealed context pages are unchanged.
    std::vector<std::byte> now_bytes(page_bytes);
    std::size_t changed = 0;
    for (std::size_t i = 0; i < ctx_view.pages.size(); ++i) {
      PF_TRY(e.copy_to_host(now_bytes.data(), client.page_ptr(ctx_view.pages[i]), page_bytes));
      changed += std::memcmp(now_bytes.data(), ctx_bytes.data() + i * page_bytes, page_bytes) != 0;
    }

    // One more child, started alone after the others are done: its time to first token
    // without 12 other processes on the same cores (it must match the reference too).
    double solo_ttft = 0, solo_forward = 0;
    int solo_diff = -2;
    {
      std::vector<processfork::Branch> one = client.fork(processfork::Source(snap.cid), 1);
      const std::uint64_t id = one[0].detach();
      kid_ids.push_back(id);
      PF_ASSIGN_OR_RETURN(const pid_t pid,
                          spawn_process(child_argv(exe, id, forks),
                                        workdir_.file("child-" + std::to_string(forks) + ".log")));
      children_.push_back(pid);
      Result<int> st = wait_process(pid, std::chrono::seconds(60));
      children_.clear();
      if (!st.is_ok()) {
        kill_process(pid);
        return PF_ERROR(Code::kUnavailable, "the solo child did not finish in 60 s");
      }
      Result<ChildReport> r =
          read_report(workdir_.file("child-" + std::to_string(forks) + ".report"), cfg_.vocab);
      if (r.is_ok() && r->error.empty()) {
        solo_diff = first_difference(r->stream, expected[forks], cfg_.vocab);
        solo_ttft = r->spawn_to_first_token_us;
        solo_forward = r->stream.first_token_us;
      }
      std::printf(
          "    solo    %2u: started alone: first token %s after spawn (suffix forward %s) "
          "-> %s\n",
          forks, human_us(solo_ttft).c_str(), human_us(solo_forward).c_str(),
          solo_diff == -1   ? "logits identical to the reference (bit for bit)"
          : solo_diff == -2 ? "FAILED"
                            : "MISMATCH");
    }

    // 7. Numbers.
    const double ctx_bytes_total = static_cast<double>(ctx_pages * page_bytes);
    const std::uint64_t fanout_pages = st2.used_pages - st0.used_pages;
    const double mem_fork = static_cast<double>(fanout_pages * page_bytes);
    // Copying instead: every worker holds a private copy of the whole context, plus the pages
    // it appends past it (its copy-on-write page is already private in a copy).
    const double mem_copy =
        workers * ctx_bytes_total + static_cast<double>(pages_added - cow) * page_bytes;
    const double ttft_p50 = pct(ttft, 0.5);
    const double reprefill_ttft = reprefill_us + expected[0].first_token_us;
    std::printf("\n[5] results (%u worker processes on %u cores, all at once)\n", workers,
                static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
    std::printf(
        "    fork latency           %s for %u branches over the socket (p50 %s, p99 %s); "
        "in-process it is ~0.5 µs (bench_fork)\n",
        human_us(the_fork_us).c_str(), forks, human_us(pct(fork_us, 0.5)).c_str(),
        human_us(pct(fork_us, 0.99)).c_str());
    std::printf("    pages shared           %" PRIu64
                " (the context, held by the snapshot, the "
                "parent and %u branches)\n",
                st1.shared_pages, forks);
    std::printf(
        "    pages copied           %u (copy-on-write of the half-filled last page, one per "
        "child: %s); 0 by the fork itself\n",
        cow, human_bytes(static_cast<double>(cow) * page_bytes).c_str());
    std::printf("    pool pages             %" PRIu64 " after prefill, %" PRIu64
                " after fork, %" PRIu64 " after %u children decoded (+%" PRIu64
                " = what they appended: %u)\n",
                st0.used_pages, st1.used_pages, st2.used_pages, workers, fanout_pages, pages_added);
    std::printf(
        "    memory for the fan-out %s with fork vs %s by copying the context per child "
        "(%.0fx less)\n",
        human_bytes(mem_fork).c_str(), human_bytes(mem_copy).c_str(),
        mem_fork > 0 ? mem_copy / mem_fork : 0.0);
    std::printf(
        "    time to first token    %s median, %s max per child (spawn -> token: exec, "
        "connect+map %s, take branch %s, suffix forward %s)\n",
        human_us(ttft_p50).c_str(), human_us(pct(ttft, 1.0)).c_str(),
        human_us(pct(connect, 0.5)).c_str(), human_us(pct(adopt, 0.5)).c_str(),
        human_us(pct(in_proc_ttft, 0.5)).c_str());
    std::printf("    a child started alone  %s spawn -> first token (suffix forward %s)\n",
                human_us(solo_ttft).c_str(), human_us(solo_forward).c_str());
    std::printf("    vs re-prefilling       %s (prefill %" PRIu64
                " tokens + suffix): %.0fx the median child's, %.0fx the solo child's\n",
                human_us(reprefill_ttft).c_str(), o_.context,
                ttft_p50 > 0 ? reprefill_ttft / ttft_p50 : 0.0,
                solo_ttft > 0 ? reprefill_ttft / solo_ttft : 0.0);
    std::printf("    children wall time     %s for all %u processes\n",
                human_us(children_wall_us).c_str(), forks);

    checks_.push_back({"every worker's logits equal the uninterrupted reference, bit for bit",
                       matched == workers,
                       std::to_string(matched) + "/" + std::to_string(workers) + " match"});
    checks_.push_back({"every child process exited 0", all_exited_ok, ""});
    checks_.push_back({"a child started alone also matches the reference", solo_diff == -1, ""});
    if (o_.control) {
      checks_.push_back(
          {"control: an exact private copy of the shared pages matches", control_clean_ok, ""});
      checks_.push_back(
          {"control: one altered byte of one shared page is detected", control_detected, ""});
    }
    checks_.push_back({"sealed context pages unchanged after the fan-out", changed == 0,
                       std::to_string(changed) + " of " + std::to_string(ctx_view.pages.size()) +
                           " pages differ"});
    checks_.push_back({"fork added no pages", st1.used_pages == st0.used_pages,
                       std::to_string(st1.used_pages - st0.used_pages) + " added"});
    checks_.push_back({"pool grew by exactly the pages the children appended",
                       fanout_pages == pages_added,
                       std::to_string(fanout_pages) + " vs " + std::to_string(pages_added)});

    // Free what we made (the daemon frees it anyway when it stops).
    for (std::uint64_t id : kid_ids) {
      try {
        client.adopt(id).free();
      } catch (const processfork::Error&) {
        // the control freed its own branch
      }
    }

    summary_["config"] = {{"model", cfg_.to_string()},
                          {"geometry", geometry_.to_string()},
                          {"page_bytes", page_bytes},
                          {"context_tokens", o_.context},
                          {"context_pages", ctx_pages},
                          {"workers", workers},
                          {"control", o_.control},
                          {"suffix", o_.suffix},
                          {"steps", o_.steps},
                          {"temperature", o_.temperature},
                          {"seed", o_.seed},
                          {"engine", e.name()},
                          {"cores", ::sysconf(_SC_NPROCESSORS_ONLN)}};
    summary_["parent"] = {{"connect_us", connect_us},
                          {"prefill_us", prefill_us},
                          {"snapshot_us", snapshot_us},
                          {"fork_us", the_fork_us},
                          {"fork_n", forks},
                          {"fork_reps_n", workers},
                          {"fork_reps_us", fork_us},
                          {"fork_p50_us", pct(fork_us, 0.5)},
                          {"fork_p99_us", pct(fork_us, 0.99)}};
    summary_["pages"] = {
        {"after_prefill", st0.used_pages},       {"after_fork", st1.used_pages},
        {"shared_after_fork", st1.shared_pages}, {"after_children", st2.used_pages},
        {"children_appended", pages_added},      {"cow_copies", cow}};
    summary_["memory"] = {{"fanout_bytes_fork", mem_fork}, {"fanout_bytes_copy", mem_copy}};
    summary_["ttft"] = {{"child_spawn_to_first_token_us", ttft},
                        {"child_p50_us", ttft_p50},
                        {"child_max_us", pct(ttft, 1.0)},
                        {"child_in_process_p50_us", pct(in_proc_ttft, 0.5)},
                        {"reprefill_us", reprefill_us},
                        {"reprefill_first_token_us", reprefill_ttft},
                        {"solo_child_spawn_to_first_token_us", solo_ttft},
                        {"solo_child_first_token_us", solo_forward}};
    summary_["children"] = kids_json;
    summary_["children_wall_us"] = children_wall_us;
    summary_["matched"] = matched;
    summary_["control_detected"] = control_detected;
    summary_["control_clean_ok"] = control_clean_ok;
    return Status::ok();
  }

  Options o_;
  ModelConfig cfg_;
  rt::Geometry geometry_;
  // Destroyed in reverse order: client, daemon, then the directory holding its socket.
  WorkDir workdir_;
  Daemon daemon_;
  std::unique_ptr<processfork::Client> client_;
  std::vector<pid_t> children_;
  std::vector<Check> checks_;
  nlohmann::json summary_;
  Clock::time_point t_start_ = Clock::now();
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.child) return run_child(o);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return Parent(o).run();
}
