// Clock readings and human-readable numbers for the fan-out demo's output.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "perf/bench_common.h"

namespace pf::demo {

using Clock = std::chrono::steady_clock;

// Microseconds from t0 to now; the p-quantile of v (nearest rank; 0 for an empty v). Both
// as for the benchmarks (perf/bench_common.h).
using pf::bench::pct;
using pf::bench::us_since;
// The steady clock in nanoseconds (comparable across processes on one machine).
std::int64_t now_ns();
// "12.3 µs", "4.5 ms", "1.23 s".
std::string human_us(double us);
// "512 B", "1.5 KiB", "3.0 MiB", "1.25 GiB".
std::string human_bytes(double bytes);

}  // namespace pf::demo
