// A fan-out demo child process (`fanout_demo --child ...`, exec'd by the parent).
#pragma once

#include "perf/fanout_options.h"

namespace pf::demo {

// Connects to the daemon at o.socket, takes branch o.branch and decodes stream o.index on
// it, then writes its ChildReport to o.report (with `error` set on failure).
//  - a worker appends its suffix and sampled tokens to the branch (its KV goes into the
//    pool) and releases the branch, detached, for the parent to count and free;
//  - the control (o.is_control) decodes twice from private copies of the branch's pages,
//    one with a byte altered, never writes the pool, and frees the branch.
// Returns the process's exit status: 0 when the report says success.
int run_child(const Options& o);

}  // namespace pf::demo
