// The fan-out demo's parent process: the orchestrator that starts the daemon, prefills,
// snapshots and forks the context, computes the reference, runs the child processes and
// checks and reports what they did (the phases in fanout_parent.cpp, docs/demo.md).
#pragma once

#include "perf/fanout_options.h"

namespace pf::demo {

// Runs the demo as configured by `o`, prints its progress, checks and verdict, and writes
// the JSON summary to o.json when set. Stops the daemon, reaps every child and removes
// the work directory on success and failure alike. Returns the exit status: 0 only when
// every check passes.
int run_parent(const Options& o);

}  // namespace pf::demo
