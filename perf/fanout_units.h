// Clock readings and human-readable numbers for the fan-out demo's output.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace pf::demo {

using Clock = std::chrono::steady_clock;

// Microseconds from t0 to now.
double us_since(Clock::time_point t0);
// The steady clock in nanoseconds (comparable across processes on one machine).
std::int64_t now_ns();
// The p-quantile of v (nearest rank; 0 for an empty v).
double pct(std::vector<double> v, double p);
// "12.3 µs", "4.5 ms", "1.23 s".
std::string human_us(double us);
// "512 B", "1.5 KiB", "3.0 MiB", "1.25 GiB".
std::string human_bytes(double bytes);

}  // namespace pf::demo
