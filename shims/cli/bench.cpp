// `processfork bench`: a quick round-trip latency check against a running daemon. It builds
// a context of T tokens (KV bytes are not written: this measures the control path), snapshots
// it, then times fork(n) of the snapshot and checkout of it over the Unix socket, freeing
// what each op made between timed calls. perf/bench_daemon is the full benchmark.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

#include "shims/cli/cli.h"

namespace pf::cli {
namespace {

struct Percentiles {
  double p50 = 0, p99 = 0, mean = 0, min = 0, max = 0;
};

Percentiles percentiles(std::vector<double> us) {
  Percentiles p;
  if (us.empty()) return p;
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    const std::size_t i = static_cast<std::size_t>(q * static_cast<double>(us.size() - 1) + 0.5);
    return us[std::min(i, us.size() - 1)];
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.min = us.front();
  p.max = us.back();
  p.mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  return p;
}

Json to_json(const Percentiles& p) {
  return Json{{"p50_us", p.p50},
              {"p99_us", p.p99},
              {"mean_us", p.mean},
              {"min_us", p.min},
              {"max_us", p.max}};
}

double since_us(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

void check(pf_result r) {
  processfork::detail::check(r);
}

}  // namespace

int cmd_bench(const GlobalOptions& g, Args& a) {
  std::string text;
  std::uint32_t iterations = 1000, tokens = 4096, n = 12;
  if (a.take_option("--iterations", &text)) iterations = parse_u32(text, "--iterations");
  if (a.take_option("--tokens", &text)) tokens = parse_u32(text, "--tokens");
  if (a.take_option("-n", &text)) n = parse_u32(text, "-n");
  a.finish();
  if (iterations == 0) throw UsageError("--iterations must be at least 1");
  if (tokens == 0) throw UsageError("--tokens must be at least 1");
  if (n == 0 || n > PF_MAX_FORK) throw UsageError("-n must be in 1..1024");

  processfork::Client client = connect(g);
  pf_client* c = client.get();
  // The context: distinct token ids so it does not collide with real prefixes.
  std::vector<std::uint32_t> ids(tokens);
  for (std::uint32_t i = 0; i < tokens; ++i) ids[i] = 0xB0000000u + i;
  processfork::NewBranch base = client.branch(ids);
  if (base.n_tokens < tokens) {
    base.branch.append(std::span(ids).subspan(static_cast<std::size_t>(base.n_tokens)));
  }
  const processfork::Snapshot snap = base.branch.snapshot();
  const pf_source src = pf_source_named(snap.cid.c_str());

  std::vector<double> fork_us, checkout_us;
  fork_us.reserve(iterations);
  checkout_us.reserve(iterations);
  std::vector<pf_branch_id> children(n);
  for (std::uint32_t i = 0; i < iterations; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    check(pf_fork(c, &src, n, children.data(), children.size(), nullptr, 0));
    fork_us.push_back(since_us(t0));
    for (pf_branch_id id : children) check(pf_branch_free(c, id));

    pf_branch_id b = 0;
    t0 = std::chrono::steady_clock::now();
    check(pf_checkout(c, snap.cid.c_str(), &b, nullptr, 0));
    checkout_us.push_back(since_us(t0));
    check(pf_branch_free(c, b));
  }
  base.branch.free();
  // Unpin only what this run created: an identical snapshot may be someone else's.
  if (snap.created) client.unpin(snap.cid);

  const Percentiles f = percentiles(fork_us);
  const Percentiles k = percentiles(checkout_us);
  if (g.json) {
    print_json(Json{{"tokens", tokens},
                    {"n", n},
                    {"iterations", iterations},
                    {"fork", to_json(f)},
                    {"checkout", to_json(k)}});
    return kExitOk;
  }
  std::printf("context %u tokens (%s), %u iterations over the Unix socket\n", tokens,
              snap.cid.c_str(), iterations);
  std::printf("%-14s %10s %10s %10s\n", "op", "p50 (us)", "p99 (us)", "mean (us)");
  std::printf("fork(%-4u)     %10.1f %10.1f %10.1f\n", n, f.p50, f.p99, f.mean);
  std::printf("checkout       %10.1f %10.1f %10.1f\n", k.p50, k.p99, k.mean);
  return kExitOk;
}

}  // namespace pf::cli
