#include "perf/fanout_units.h"

#include <cstdio>

namespace pf::demo {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
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
