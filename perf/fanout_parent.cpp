#include "perf/fanout_parent.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "perf/engine/engine.h"
#include "perf/fanout_pool.h"
#include "perf/fanout_process.h"
#include "perf/fanout_report.h"
#include "perf/fanout_stream.h"
#include "perf/fanout_units.h"
#include "processfork.hpp"

#ifndef PF_PROCESSFORK_PATH
#define PF_PROCESSFORK_PATH ""
#endif

namespace pf::demo {
namespace {

using engine::Engine;
using engine::PagedKv;

std::string find_processfork(const Options& o) {
  if (!o.processfork.empty()) return o.processfork;
  if (const char* env = std::getenv("PROCESSFORK_BIN"); env != nullptr && *env != '\0') return env;
  const std::string built = PF_PROCESSFORK_PATH;
  if (!built.empty() && ::access(built.c_str(), X_OK) == 0) return built;
  return self_dir() + "/../shims/processfork";
}

// The parent's prefilled context: its pool branch (held until the run ends, like the
// snapshot it was sealed into) and a host copy of the bytes of its pages.
struct Context {
  std::vector<rt::Token> tokens;
  processfork::NewBranch nb;
  processfork::Snapshot snap;
  processfork::View view;        // the branch's pages when sealed
  std::vector<std::byte> bytes;  // view.pages' bytes, in order
};

// The orchestrator. Owns the work directory, the daemon, the client and the child
// processes; run() cleans them all up however the phases end. Each phase prints its part
// of the output, records its numbers in m_ and returns an error only when the run cannot go
// on (a failed comparison is a failed check, not an error).
class Parent {
 public:
  explicit Parent(const Options& o) : o_(o) {}

  // All phases, then clean-up and the verdict; returns the exit status.
  int run() {
    const Status s = run_all();
    if (!s.is_ok()) std::printf("\nFAILED: %s\n", s.to_string().c_str());
    clean_up();
    return report_verdict(o_, checks_, s, t_start_, &summary_);
  }

 private:
  Status run_all();
  Status start_daemon();
  Status run_with_daemon();
  Result<std::unique_ptr<Engine>> connect();
  Result<Context> prefill_and_snapshot(Engine& e);
  Status copy_context_bytes(Engine& e, Context* ctx);
  void time_forks(const std::string& cid);
  std::vector<std::uint64_t> fork_branches(const std::string& cid);
  Result<std::vector<Stream>> compute_reference(Engine& e, const std::vector<rt::Token>& context);
  Result<std::vector<std::string>> run_children(const std::string& exe,
                                                const std::vector<std::uint64_t>& kid_ids);
  Status spawn_children(const std::string& exe, const std::vector<std::uint64_t>& kid_ids);
  Result<std::vector<std::string>> wait_children();
  void collect_reports(const std::vector<Stream>& expected,
                       const std::vector<std::string>& exit_notes);
  void tally_worker(std::uint32_t i, const ChildReport& c, const Stream& expected);
  void tally_control(std::uint32_t i, const ChildReport& c, const Stream& expected);
  Result<std::size_t> count_changed_pages(Engine& e, const Context& ctx);
  Status run_solo_child(const std::string& exe, const std::string& cid, const Stream& expected,
                        std::vector<std::uint64_t>* kid_ids);
  void free_branches(const std::vector<std::uint64_t>& kid_ids);
  void clean_up();
  std::vector<std::string> child_argv(const std::string& exe, std::uint64_t branch,
                                      std::uint32_t index);

  Options o_;
  engine::ModelConfig cfg_;
  rt::Geometry geometry_;
  Plan plan_;
  // Destroyed in reverse order: client, daemon, then the directory holding its socket.
  WorkDir workdir_;
  Daemon daemon_;
  std::unique_ptr<processfork::Client> client_;
  std::vector<pid_t> children_;  // running children (-1 once reaped); killed by clean_up()
  std::vector<Check> checks_;
  nlohmann::json summary_;
  Measured m_;
  Clock::time_point t_start_ = Clock::now();
};

// The model and plan, the banner, the daemon, then every phase that needs the daemon (a
// client error there ends the run as a Status).
Status Parent::run_all() {
  PF_ASSIGN_OR_RETURN(cfg_, engine::parse_model_config(o_.model));
  geometry_ = cfg_.kv_geometry(o_.page_tokens, dtype_of(o_));
  PF_TRY(geometry_.validate());
  plan_ = make_plan(o_, geometry_);
  print_banner(o_, cfg_, geometry_, plan_);
  PF_TRY(start_daemon());
  try {
    return run_with_daemon();
  } catch (const processfork::Error& e) {
    return PF_ERROR(static_cast<Code>(e.code()), std::string("client: ") + e.what());
  }
}

// Step 1: creates (or adopts --workdir) the work directory and starts `processfork serve`
// in it with a pool sized by the plan, HTTP off. Owns workdir_ and daemon_ (stopped and
// removed by clean_up()). Records summary_["daemon"].
Status Parent::start_daemon() {
  if (o_.workdir.empty()) {
    PF_ASSIGN_OR_RETURN(workdir_, WorkDir::create("demo"));
  } else {
    PF_ASSIGN_OR_RETURN(workdir_, WorkDir::adopt(o_.workdir));
  }
  DaemonOptions dopt;
  dopt.exe = find_processfork(o_);
  dopt.device = o_.device;
  dopt.geometry = geometry_.to_string();
  dopt.capacity = std::to_string(plan_.capacity_mib) + "MiB";
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
  return Status::ok();
}

// Steps 2-7 of fanout_demo.cpp's file comment, with the daemon running. The engine and
// the context (the parent's branch) live until the end; the forked branches are freed at
// the end (the daemon frees whatever an error leaves behind when it stops).
Status Parent::run_with_daemon() {
  PF_ASSIGN_OR_RETURN(std::unique_ptr<Engine> eng, connect());
  Engine& e = *eng;
  PF_ASSIGN_OR_RETURN(Context ctx, prefill_and_snapshot(e));
  time_forks(ctx.snap.cid);
  std::vector<std::uint64_t> kid_ids = fork_branches(ctx.snap.cid);
  PF_ASSIGN_OR_RETURN(const std::vector<Stream> expected, compute_reference(e, ctx.tokens));
  const std::string exe = self_exe();
  PF_ASSIGN_OR_RETURN(const std::vector<std::string> exit_notes, run_children(exe, kid_ids));
  collect_reports(expected, exit_notes);
  m_.st2 = client_->pool_stats();
  PF_ASSIGN_OR_RETURN(m_.changed_pages, count_changed_pages(e, ctx));
  PF_TRY(run_solo_child(exe, ctx.snap.cid, expected[plan_.forks], &kid_ids));
  print_results(o_, plan_, m_);
  add_result_checks(o_, plan_, m_, &checks_);
  free_branches(kid_ids);
  add_summary(o_, cfg_, geometry_, plan_, m_, &summary_);
  return Status::ok();
}

// Connects client_ to the daemon, checks the pool's geometry against the model's and
// returns the engine for the pool's memory. Records m_.connect_us and m_.engine.
Result<std::unique_ptr<Engine>> Parent::connect() {
  processfork::ConnectOptions co;
  co.socket_path = daemon_.socket();
  Clock::time_point t = Clock::now();
  client_ = std::make_unique<processfork::Client>(co);
  m_.connect_us = us_since(t);
  const processfork::PoolInfo info = client_->pool();
  PF_TRY(check_pool(info, geometry_));
  PF_ASSIGN_OR_RETURN(std::unique_ptr<Engine> eng, engine_for(cfg_, info));
  m_.engine = eng->name();
  std::printf("  engine     %s (reference engine, single-threaded, deterministic)\n",
              eng->name().c_str());
  return eng;
}

// Step 2: prefills the context into a new pool branch (append -> KV written into the
// mapped pages -> commit), snapshots it and copies its pages' bytes. Returns the context
// (the caller holds its branch until the end). Records m_.prefill_us, st0, snapshot_us.
Result<Context> Parent::prefill_and_snapshot(Engine& e) {
  Context ctx;
  ctx.tokens = engine::random_tokens(o_.seed, o_.context, cfg_.vocab);
  std::printf("\n[1] parent prefills %" PRIu64 " context tokens into pool pages ...\n", o_.context);
  processfork::Client& client = *client_;
  ctx.nb = client.branch();
  PagedKv kv(geometry_);
  PoolSeq seq{&client, &ctx.nb.branch, &kv};
  Clock::time_point t = Clock::now();
  PF_TRY(seq.append(ctx.tokens));
  PF_TRY(e.forward(kv, ctx.tokens, {}));
  ctx.nb.branch.commit();
  m_.prefill_us = us_since(t);
  if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
  m_.st0 = client.pool_stats();
  std::printf("    prefill   %s (%.0f tokens/s), %" PRIu64 " pages used\n",
              human_us(m_.prefill_us).c_str(), o_.context / (m_.prefill_us / 1e6),
              m_.st0.used_pages);

  t = Clock::now();
  ctx.snap = ctx.nb.branch.snapshot("fanout-context");
  m_.snapshot_us = us_since(t);
  std::printf("    snapshot  %s in %s (%" PRIu64 " pages sealed and digested)\n",
              ctx.snap.cid.substr(0, 19).c_str(), human_us(m_.snapshot_us).c_str(),
              ctx.snap.n_pages);
  PF_TRY(copy_context_bytes(e, &ctx));
  return ctx;
}

// The context's bytes, to prove afterwards that nobody altered a sealed page: fills
// ctx->view and ctx->bytes.
Status Parent::copy_context_bytes(Engine& e, Context* ctx) {
  const std::size_t page_bytes = plan_.page_bytes;
  ctx->view = ctx->nb.branch.view();
  ctx->bytes.resize(ctx->view.pages.size() * page_bytes);
  for (std::size_t i = 0; i < ctx->view.pages.size(); ++i) {
    PF_TRY(e.copy_to_host(ctx->bytes.data() + i * page_bytes, client_->page_ptr(ctx->view.pages[i]),
                          page_bytes));
  }
  return Status::ok();
}

// Step 2: fork latency over the socket, --fork-reps forks of `workers` branches of the
// snapshot `cid` (children freed between reps, untimed). Records m_.fork_us.
void Parent::time_forks(const std::string& cid) {
  for (std::uint32_t r = 0; r < o_.fork_reps; ++r) {
    const Clock::time_point t = Clock::now();
    std::vector<processfork::Branch> kids = client_->fork(processfork::Source(cid), plan_.workers);
    m_.fork_us.push_back(us_since(t));
    for (processfork::Branch& k : kids) k.free();
  }
}

// Step 2: the real fork of `forks` branches of the snapshot `cid` (workers, then the
// control), detached so the children can take them. Returns their ids (the caller frees
// them). Records m_.the_fork_us and st1.
std::vector<std::uint64_t> Parent::fork_branches(const std::string& cid) {
  std::printf("\n[2] fork %u branches from the snapshot (+%u for the control)\n", plan_.workers,
              plan_.forks - plan_.workers);
  const Clock::time_point t = Clock::now();
  std::vector<processfork::Branch> kids = client_->fork(processfork::Source(cid), plan_.forks);
  m_.the_fork_us = us_since(t);
  m_.st1 = client_->pool_stats();
  std::vector<std::uint64_t> kid_ids;
  for (processfork::Branch& k : kids) kid_ids.push_back(k.detach());
  std::printf("    fork      %s for %u branches (p50 %s, p99 %s over %u reps of %u)\n",
              human_us(m_.the_fork_us).c_str(), plan_.forks, human_us(pct(m_.fork_us, 0.5)).c_str(),
              human_us(pct(m_.fork_us, 0.99)).c_str(), o_.fork_reps, plan_.workers);
  std::printf("    pages     %" PRIu64 " used before, %" PRIu64 " after (%" PRIu64
              " shared), 0 bytes copied\n",
              m_.st0.used_pages, m_.st1.used_pages, m_.st1.shared_pages);
  return kid_ids;
}

// Step 3: the reference, an uninterrupted single-process run on private memory (freed on
// return): the context prefilled again, then every stream decoded on it. Returns streams
// 0..forks-1 (the workers and the control) and `forks` (the solo child). Records
// m_.reprefill_us (the re-prefill baseline) and ref_first_token_us.
Result<std::vector<Stream>> Parent::compute_reference(Engine& e,
                                                      const std::vector<rt::Token>& context) {
  std::printf("\n[3] reference: the same tokens in one process, on private memory\n");
  const std::uint64_t ref_pages =
      (o_.context + o_.suffix + o_.steps + geometry_.page_tokens - 1) / geometry_.page_tokens;
  PF_ASSIGN_OR_RETURN(engine::PageArena arena, e.alloc_pages(ref_pages, plan_.page_bytes));
  PagedKv ref(geometry_);
  for (std::size_t i = 0; i < ref_pages; ++i) ref.push_page(arena.page(i));
  const Clock::time_point t = Clock::now();
  PF_TRY(e.forward(ref, context, {}));
  m_.reprefill_us = us_since(t);
  std::vector<Stream> expected(plan_.forks + 1);
  const MakeRoom no_room = [](std::span<const rt::Token>) { return Status::ok(); };
  for (std::uint32_t i = 0; i <= plan_.forks; ++i) {
    if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
    PF_TRY(ref.set_n_tokens(o_.context));
    const StreamSpec spec =
        stream_spec(o_.seed, i, o_.suffix, o_.steps, o_.temperature, cfg_.vocab);
    PF_TRY(decode(e, ref, spec, no_room, &expected[i]));
  }
  m_.ref_first_token_us = expected[0].first_token_us;
  std::printf("    prefill   %s (the re-prefill a child would need without ProcessFork)\n",
              human_us(m_.reprefill_us).c_str());
  std::printf("    decoded   %u continuations (first token after %s of the suffix)\n",
              plan_.forks + 1, human_us(expected[0].first_token_us).c_str());
  return expected;
}

// Steps 4-5: execs the workers and the control (this binary, --child) on branches
// kid_ids[i] and waits for all of them. Returns each one's exit description. Records
// m_.children_wall_us and all_exited_ok.
Result<std::vector<std::string>> Parent::run_children(const std::string& exe,
                                                      const std::vector<std::uint64_t>& kid_ids) {
  std::printf("\n[4] exec %u worker processes%s; each takes its branch and decodes\n",
              plan_.workers, o_.control ? " and 1 control process" : "");
  const Clock::time_point t_spawn = Clock::now();
  PF_TRY(spawn_children(exe, kid_ids));
  PF_ASSIGN_OR_RETURN(std::vector<std::string> exit_notes, wait_children());
  m_.children_wall_us = us_since(t_spawn);
  children_.clear();
  return exit_notes;
}

// Starts child i = 0..forks-1 (i == workers: the control; worker 0 gets --inject-fault).
// Their pids go to children_ (killed by clean_up() if the run fails).
Status Parent::spawn_children(const std::string& exe, const std::vector<std::uint64_t>& kid_ids) {
  for (std::uint32_t i = 0; i < plan_.forks; ++i) {
    const bool control = i == plan_.workers;
    std::vector<std::string> argv = child_argv(exe, kid_ids[i], i);
    if (control) argv.push_back("--control");
    if (!control && i == 0 && !o_.fault.empty())
      argv.insert(argv.end(), {"--inject-fault", o_.fault});
    PF_ASSIGN_OR_RETURN(const pid_t pid,
                        spawn_process(argv, workdir_.file("child-" + std::to_string(i) + ".log")));
    children_.push_back(pid);
  }
  return Status::ok();
}

// Reaps children_ in order (each marked -1 once reaped), within 120 s for all of them.
// Returns each one's exit description; records m_.all_exited_ok.
Result<std::vector<std::string>> Parent::wait_children() {
  std::vector<std::string> exit_notes(plan_.forks);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  for (std::uint32_t i = 0; i < plan_.forks; ++i) {
    for (;;) {
      if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
      Result<int> st = wait_process(children_[i], std::chrono::milliseconds(50));
      if (st.is_ok()) {
        exit_notes[i] = describe_wait_status(*st);
        m_.all_exited_ok = m_.all_exited_ok && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
        children_[i] = -1;
        break;
      }
      if (Clock::now() > deadline) {
        return PF_ERROR(Code::kUnavailable,
                        "child " + std::to_string(i) + " did not finish in 120 s");
      }
    }
  }
  return exit_notes;
}

// Step 7: reads every child's report and compares it with the reference `expected`,
// printing one line per worker (two for the control) into m_.tally. A child without a
// valid report is a failed check "process i ran".
void Parent::collect_reports(const std::vector<Stream>& expected,
                             const std::vector<std::string>& exit_notes) {
  for (std::uint32_t i = 0; i < plan_.forks; ++i) {
    const std::string path = workdir_.file("child-" + std::to_string(i) + ".report");
    Result<ChildReport> r = read_report(path, cfg_.vocab);
    const bool control = i == plan_.workers;
    if (!r.is_ok() || !r->error.empty()) {
      const std::string why = !r.is_ok() ? r.status().to_string() : r->error;
      std::printf("    %s %2u: FAILED (%s): %s\n", control ? "control" : "child  ", i,
                  exit_notes[i].c_str(), why.c_str());
      checks_.push_back({"process " + std::to_string(i) + " ran", false, why});
      continue;
    }
    if (!control) {
      tally_worker(i, *r, expected[i]);
    } else {
      tally_control(i, *r, expected[i]);
    }
  }
}

// Worker i's report: match, pages, timings into m_.tally (and its kids_json entry); prints
// its line.
void Parent::tally_worker(std::uint32_t i, const ChildReport& c, const Stream& expected) {
  Tally& t = m_.tally;
  const int diff = first_difference(c.stream, expected, cfg_.vocab);
  t.matched += diff < 0 ? 1 : 0;
  t.pages_added += c.pages_added;
  t.cow += c.cow_copies;
  t.ttft.push_back(c.spawn_to_first_token_us);
  t.in_proc_ttft.push_back(c.stream.first_token_us);
  t.connect.push_back(c.connect_us);
  t.adopt.push_back(c.adopt_us);
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
                           c.stream.tokens[diff] != expected.tokens[diff]
                       ? " (sampled token differs)"
                       : " (logits differ)"))
                     .c_str());
  t.kids_json.push_back({{"index", i},
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
}

// The control's report: its exact copy must match the reference, its altered copy must
// not (m_.tally.control_clean_ok / control_detected); prints its two lines.
void Parent::tally_control(std::uint32_t i, const ChildReport& c, const Stream& expected) {
  const int clean = first_difference(c.stream, expected, cfg_.vocab);
  const int alt = first_difference(c.altered, expected, cfg_.vocab);
  m_.tally.control_clean_ok = clean < 0;
  m_.tally.control_detected = alt >= 0;
  std::printf("    control %2u: exact private copy of the shared pages -> %s\n", i,
              clean < 0 ? "identical to the reference" : "MISMATCH (the copy is wrong)");
  std::printf(
      "               page %u byte %" PRIu64 " altered in the copy -> %s\n", c.altered_page,
      c.altered_offset,
      alt >= 0
          ? ("differs from the reference at step " + std::to_string(alt) + " (detected)").c_str()
          : "NOT detected");
}

// Step 7: how many of the sealed context pages differ now from their bytes when sealed.
// Records m_.context_pages.
Result<std::size_t> Parent::count_changed_pages(Engine& e, const Context& ctx) {
  const std::size_t page_bytes = plan_.page_bytes;
  std::vector<std::byte> now_bytes(page_bytes);
  std::size_t changed = 0;
  for (std::size_t i = 0; i < ctx.view.pages.size(); ++i) {
    PF_TRY(e.copy_to_host(now_bytes.data(), client_->page_ptr(ctx.view.pages[i]), page_bytes));
    changed += std::memcmp(now_bytes.data(), ctx.bytes.data() + i * page_bytes, page_bytes) != 0;
  }
  m_.context_pages = ctx.view.pages.size();
  return changed;
}

// Step 6: one more child, forked from `cid` and started alone after the others are done:
// its time to first token without the other processes on the same cores (it must match
// `expected`, the reference's stream `forks`, too). Its branch id is added to kid_ids.
// Prints its line; records m_.solo.
Status Parent::run_solo_child(const std::string& exe, const std::string& cid,
                              const Stream& expected, std::vector<std::uint64_t>* kid_ids) {
  const std::uint32_t index = plan_.forks;
  std::vector<processfork::Branch> one = client_->fork(processfork::Source(cid), 1);
  const std::uint64_t id = one[0].detach();
  kid_ids->push_back(id);
  PF_ASSIGN_OR_RETURN(const pid_t pid,
                      spawn_process(child_argv(exe, id, index),
                                    workdir_.file("child-" + std::to_string(index) + ".log")));
  children_.push_back(pid);
  Result<int> st = wait_process(pid, std::chrono::seconds(60));
  children_.clear();
  if (!st.is_ok()) {
    kill_process(pid);
    return PF_ERROR(Code::kUnavailable, "the solo child did not finish in 60 s");
  }
  Result<ChildReport> r =
      read_report(workdir_.file("child-" + std::to_string(index) + ".report"), cfg_.vocab);
  SoloChild& solo = m_.solo;
  if (r.is_ok() && r->error.empty()) {
    solo.diff = first_difference(r->stream, expected, cfg_.vocab);
    solo.ttft = r->spawn_to_first_token_us;
    solo.forward = r->stream.first_token_us;
  }
  std::printf(
      "    solo    %2u: started alone: first token %s after spawn (suffix forward %s) "
      "-> %s\n",
      index, human_us(solo.ttft).c_str(), human_us(solo.forward).c_str(),
      solo.diff == -1   ? "logits identical to the reference (bit for bit)"
      : solo.diff == -2 ? "FAILED"
                        : "MISMATCH");
  return Status::ok();
}

// Frees the forked branches (the daemon frees them anyway when it stops).
void Parent::free_branches(const std::vector<std::uint64_t>& kid_ids) {
  for (std::uint64_t id : kid_ids) {
    try {
      client_->adopt(id).free();
    } catch (const processfork::Error&) {
      // the control freed its own branch
    }
  }
}

// Clean-up, on success and failure alike: kills the children still running, disconnects,
// stops the daemon and removes the work directory; checks the last two.
void Parent::clean_up() {
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
}

// The command line of child `index` taking branch `branch`.
std::vector<std::string> Parent::child_argv(const std::string& exe, std::uint64_t branch,
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

}  // namespace

int run_parent(const Options& o) {
  return Parent(o).run();
}

}  // namespace pf::demo
