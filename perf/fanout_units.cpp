#include "perf/fanout_units.h"

#include <algorithm>
#include <cstdio>

namespace pf::demo {

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

}  // namespace pf::demo
