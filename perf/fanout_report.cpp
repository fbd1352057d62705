#include "perf/fanout_report.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>

namespace pf::demo {

Plan make_plan(const Options& o, const rt::Geometry& g) {
  Plan p;
  p.workers = o.children;
  p.forks = p.workers + (o.control ? 1 : 0);
  const std::uint64_t P = g.page_tokens;
  p.ctx_pages = (o.context + P - 1) / P;
  p.page_bytes = g.page_bytes();
  const std::uint64_t child_pages = (o.context % P + o.suffix + o.steps + P - 1) / P + 1;
  const std::uint64_t need_pages = 2 * (p.ctx_pages + p.forks * child_pages) + 64;
  p.capacity_mib =
      std::max<std::uint64_t>(64, (need_pages * g.page_bytes() + (1u << 20) - 1) >> 20);
  return p;
}

void print_banner(const Options& o, const engine::ModelConfig& cfg, const rt::Geometry& g,
                  const Plan& plan) {
  std::printf("ProcessFork fan-out demo (DESIGN §1.1)\n");
  std::printf("  model      %s (%s)\n", o.model.c_str(), cfg.to_string().c_str());
  std::printf("  KV pages   %s: %s per page\n", g.to_string().c_str(),
              human_bytes(static_cast<double>(g.page_bytes())).c_str());
  std::printf("  context    %" PRIu64 " tokens = %" PRIu64 " pages (%s of KV)\n", o.context,
              plan.ctx_pages,
              human_bytes(static_cast<double>(plan.ctx_pages * g.page_bytes())).c_str());
  std::printf("  fan-out    %u worker processes x (%u suffix + %u sampled tokens, T=%.2f)%s\n",
              plan.workers, o.suffix, o.steps, o.temperature,
              o.control ? " + 1 negative-control process" : "");
}

namespace {

// Pool pages the fan-out added: what the children appended.
std::uint64_t fanout_pages(const Measured& m) {
  return m.st2.used_pages - m.st0.used_pages;
}
double mem_fork(const Plan& plan, const Measured& m) {
  return static_cast<double>(fanout_pages(m) * plan.page_bytes);
}
// Copying instead: every worker holds a private copy of the whole context, plus the pages
// it appends past it (its copy-on-write page is already private in a copy).
double mem_copy(const Plan& plan, const Measured& m) {
  const double ctx_bytes_total = static_cast<double>(plan.ctx_pages * plan.page_bytes);
  return plan.workers * ctx_bytes_total +
         static_cast<double>(m.tally.pages_added - m.tally.cow) * plan.page_bytes;
}
// Time to first token by re-prefilling: the reference's prefill + its first suffix forward.
double reprefill_ttft(const Measured& m) {
  return m.reprefill_us + m.ref_first_token_us;
}

}  // namespace

void print_results(const Options& o, const Plan& plan, const Measured& m) {
  const Tally& t = m.tally;
  const std::uint64_t pages = fanout_pages(m);
  const double fork_b = mem_fork(plan, m), copy_b = mem_copy(plan, m);
  const double ttft_p50 = pct(t.ttft, 0.5);
  const double reprefill = reprefill_ttft(m);
  std::printf("\n[5] results (%u worker processes on %u cores, all at once)\n", plan.workers,
              static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
  std::printf(
      "    fork latency           %s for %u branches over the socket (p50 %s, p99 %s); "
      "in-process it is ~0.5 µs (bench_fork)\n",
      human_us(m.the_fork_us).c_str(), plan.forks, human_us(pct(m.fork_us, 0.5)).c_str(),
      human_us(pct(m.fork_us, 0.99)).c_str());
  std::printf("    pages shared           %" PRIu64
              " (the context, held by the snapshot, the "
              "parent and %u branches)\n",
              m.st1.shared_pages, plan.forks);
  std::printf(
      "    pages copied           %u (copy-on-write of the half-filled last page, one per "
      "child: %s); 0 by the fork itself\n",
      t.cow, human_bytes(static_cast<double>(t.cow) * plan.page_bytes).c_str());
  std::printf(
      "    pool pages             %" PRIu64 " after prefill, %" PRIu64 " after fork, %" PRIu64
      " after %u children decoded (+%" PRIu64 " = what they appended: %u)\n",
      m.st0.used_pages, m.st1.used_pages, m.st2.used_pages, plan.workers, pages, t.pages_added);
  std::printf(
      "    memory for the fan-out %s with fork vs %s by copying the context per child "
      "(%.0fx less)\n",
      human_bytes(fork_b).c_str(), human_bytes(copy_b).c_str(), fork_b > 0 ? copy_b / fork_b : 0.0);
  std::printf(
      "    time to first token    %s median, %s max per child (spawn -> token: exec, "
      "connect+map %s, take branch %s, suffix forward %s)\n",
      human_us(ttft_p50).c_str(), human_us(pct(t.ttft, 1.0)).c_str(),
      human_us(pct(t.connect, 0.5)).c_str(), human_us(pct(t.adopt, 0.5)).c_str(),
      human_us(pct(t.in_proc_ttft, 0.5)).c_str());
  std::printf("    a child started alone  %s spawn -> first token (suffix forward %s)\n",
              human_us(m.solo.ttft).c_str(), human_us(m.solo.forward).c_str());
  std::printf("    vs re-prefilling       %s (prefill %" PRIu64
              " tokens + suffix): %.0fx the median child's, %.0fx the solo child's\n",
              human_us(reprefill).c_str(), o.context, ttft_p50 > 0 ? reprefill / ttft_p50 : 0.0,
              m.solo.ttft > 0 ? reprefill / m.solo.ttft : 0.0);
  std::printf("    children wall time     %s for all %u processes\n",
              human_us(m.children_wall_us).c_str(), plan.forks);
}

void add_result_checks(const Options& o, const Plan& plan, const Measured& m,
                       std::vector<Check>* checks) {
  const Tally& t = m.tally;
  const std::uint64_t pages = fanout_pages(m);
  checks->push_back({"every worker's logits equal the uninterrupted reference, bit for bit",
                     t.matched == plan.workers,
                     std::to_string(t.matched) + "/" + std::to_string(plan.workers) + " match"});
  checks->push_back({"every child process exited 0", m.all_exited_ok, ""});
  checks->push_back({"a child started alone also matches the reference", m.solo.diff == -1, ""});
  if (o.control) {
    checks->push_back(
        {"control: an exact private copy of the shared pages matches", t.control_clean_ok, ""});
    checks->push_back(
        {"control: one altered byte of one shared page is detected", t.control_detected, ""});
  }
  checks->push_back({"sealed context pages unchanged after the fan-out", m.changed_pages == 0,
                     std::to_string(m.changed_pages) + " of " + std::to_string(m.context_pages) +
                         " pages differ"});
  checks->push_back({"fork added no pages", m.st1.used_pages == m.st0.used_pages,
                     std::to_string(m.st1.used_pages - m.st0.used_pages) + " added"});
  checks->push_back({"pool grew by exactly the pages the children appended", pages == t.pages_added,
                     std::to_string(pages) + " vs " + std::to_string(t.pages_added)});
}

void add_summary(const Options& o, const engine::ModelConfig& cfg, const rt::Geometry& g,
                 const Plan& plan, const Measured& m, nlohmann::json* summary) {
  const Tally& t = m.tally;
  nlohmann::json& s = *summary;
  s["config"] = {{"model", cfg.to_string()},
                 {"geometry", g.to_string()},
                 {"page_bytes", plan.page_bytes},
                 {"context_tokens", o.context},
                 {"context_pages", plan.ctx_pages},
                 {"workers", plan.workers},
                 {"control", o.control},
                 {"suffix", o.suffix},
                 {"steps", o.steps},
                 {"temperature", o.temperature},
                 {"seed", o.seed},
                 {"engine", m.engine},
                 {"cores", ::sysconf(_SC_NPROCESSORS_ONLN)}};
  s["parent"] = {{"connect_us", m.connect_us},
                 {"prefill_us", m.prefill_us},
                 {"snapshot_us", m.snapshot_us},
                 {"fork_us", m.the_fork_us},
                 {"fork_n", plan.forks},
                 {"fork_reps_n", plan.workers},
                 {"fork_reps_us", m.fork_us},
                 {"fork_p50_us", pct(m.fork_us, 0.5)},
                 {"fork_p99_us", pct(m.fork_us, 0.99)}};
  s["pages"] = {{"after_prefill", m.st0.used_pages},       {"after_fork", m.st1.used_pages},
                {"shared_after_fork", m.st1.shared_pages}, {"after_children", m.st2.used_pages},
                {"children_appended", t.pages_added},      {"cow_copies", t.cow}};
  s["memory"] = {{"fanout_bytes_fork", mem_fork(plan, m)},
                 {"fanout_bytes_copy", mem_copy(plan, m)}};
  s["ttft"] = {{"child_spawn_to_first_token_us", t.ttft},
               {"child_p50_us", pct(t.ttft, 0.5)},
               {"child_max_us", pct(t.ttft, 1.0)},
               {"child_in_process_p50_us", pct(t.in_proc_ttft, 0.5)},
               {"reprefill_us", m.reprefill_us},
               {"reprefill_first_token_us", reprefill_ttft(m)},
               {"solo_child_spawn_to_first_token_us", m.solo.ttft},
               {"solo_child_first_token_us", m.solo.forward}};
  s["children"] = t.kids_json;
  s["children_wall_us"] = m.children_wall_us;
  s["matched"] = t.matched;
  s["control_detected"] = t.control_detected;
  s["control_clean_ok"] = t.control_clean_ok;
}

int report_verdict(const Options& o, const std::vector<Check>& checks, const Status& error,
                   Clock::time_point t_start, nlohmann::json* summary) {
  bool all_ok = error.is_ok();
  std::printf("\nChecks\n");
  for (const Check& c : checks) {
    std::printf("  [%s] %s%s%s\n", c.ok ? "PASS" : "FAIL", c.name.c_str(),
                c.detail.empty() ? "" : ": ", c.detail.c_str());
    all_ok = all_ok && c.ok;
  }
  nlohmann::json& s = *summary;
  s["checks"] = nlohmann::json::array();
  for (const Check& c : checks) {
    s["checks"].push_back({{"name", c.name}, {"ok", c.ok}, {"detail", c.detail}});
  }
  s["ok"] = all_ok;
  s["error"] = error.is_ok() ? "" : error.to_string();
  s["wall_s"] = us_since(t_start) / 1e6;
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << s.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "fanout_demo: cannot write %s\n", o.json.c_str());
      all_ok = false;
    }
  }
  std::printf("\n%s (%.1f s)\n",
              all_ok ? "fan-out demo: ALL CHECKS PASSED" : "fan-out demo: FAILED",
              us_since(t_start) / 1e6);
  return all_ok ? 0 : 1;
}

}  // namespace pf::demo
