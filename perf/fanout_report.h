// What the fan-out demo's parent measured, and how it is reported: the results block, the
// checks, the JSON summary and the final verdict. Nothing here runs anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "perf/engine/engine.h"
#include "perf/fanout_options.h"
#include "perf/fanout_units.h"
#include "processfork.hpp"
#include "base/page_format.h"
#include "base/status.h"

namespace pf::demo {

struct Check {
  std::string name;
  bool ok;
  std::string detail;
};

// The sizes that follow from the options and the model's KV geometry.
struct Plan {
  std::uint32_t workers = 0;       // worker processes
  std::uint32_t forks = 0;         // branches forked: the workers + the control
  std::uint64_t ctx_pages = 0;     // pages the context fills
  std::size_t page_bytes = 0;      // bytes per KV page
  std::uint64_t capacity_mib = 0;  // the daemon's pool
};
Plan make_plan(const Options& o, const rt::Geometry& g);

// The workers' and the control's reports, compared with the reference and tallied.
struct Tally {
  std::uint32_t matched = 0;  // workers whose stream equals the reference bit for bit
  std::uint32_t pages_added = 0, cow = 0;
  std::vector<double> ttft, in_proc_ttft, connect, adopt;  // per worker, in µs
  bool control_clean_ok = false, control_detected = false;
  nlohmann::json kids_json = nlohmann::json::array();  // one object per worker
};

// The child forked and started alone once the others are done.
struct SoloChild {
  double ttft = 0, forward = 0;  // spawn -> first token; the suffix forward
  int diff = -2;                 // -1: matches the reference; -2: failed; else the step
};

// Everything the run measured, filled in phase by phase.
struct Measured {
  std::string engine;  // the engine's name
  double connect_us = 0, prefill_us = 0, snapshot_us = 0;
  std::vector<double> fork_us;                 // the repeated forks of `workers` branches
  double the_fork_us = 0;                      // the real fork of `forks` branches
  processfork::PoolStats st0{}, st1{}, st2{};  // after prefill, fork, the children
  double reprefill_us = 0;                     // the reference's prefill
  double ref_first_token_us = 0;               // the reference's stream 0: first token
  double children_wall_us = 0;
  bool all_exited_ok = true;
  Tally tally;
  std::size_t changed_pages = 0, context_pages = 0;  // sealed context pages: altered, all
  SoloChild solo;
};

// The run's header: model, KV pages, context, fan-out.
void print_banner(const Options& o, const engine::ModelConfig& cfg, const rt::Geometry& g,
                  const Plan& plan);
// "[5] results": fork latency, pages, memory, time to first token.
void print_results(const Options& o, const Plan& plan, const Measured& m);
// The checks on the measured run (after the per-process ones), appended to `checks`.
void add_result_checks(const Options& o, const Plan& plan, const Measured& m,
                       std::vector<Check>* checks);
// The summary's config, parent, pages, memory, ttft, children and match fields.
void add_summary(const Options& o, const engine::ModelConfig& cfg, const rt::Geometry& g,
                 const Plan& plan, const Measured& m, nlohmann::json* summary);
// Prints the checks and the verdict, completes the summary (checks, ok, error, wall_s)
// and writes it to o.json when set. `error`: the run's own failure, if any. Returns the
// exit status: 0 only when the run, every check and the JSON write succeeded.
int report_verdict(const Options& o, const std::vector<Check>& checks, const Status& error,
                   Clock::time_point t_start, nlohmann::json* summary);

}  // namespace pf::demo
