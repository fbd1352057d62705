// Helpers shared by the benchmark programs (bench_daemon, bench_fork, bench_fanout,
// bench_kernels) and the fan-out demo: failing with the program's name, timing, nearest-rank
// percentiles, and describing the machine a result was taken on. Each contract:
//
//  set_program(name)   names the program for die(); call it first in main (default "bench").
//  die(what)           prints "<program>: <what>\n" to stderr and exits with status 1.
//  must(status, what)  returns when status is ok, else die("<what>: <status>").
//  must(result, what)  the value of an ok result, else die("<what>: <status>").
//  us_since(t0)        microseconds on the steady clock from t0 to now.
//  pct_sorted(v, p)    the p-quantile (0 <= p <= 1) of an ascending, non-empty v by nearest
//                      rank: v[min(n - 1, floor(p * (n - 1) + 0.5))]; 0 for an empty v.
//  pct(v, p)           pct_sorted of a sorted copy of v (so 0 for an empty v).
//  summarize(v)        p50, p99 (pct_sorted), mean (sum in ascending order / n), min, max and
//                      n of v; all zero for an empty v.
//  cpu_model()         /proc/cpuinfo's first "model name" value, or "unknown".
//  meminfo_kib(key)    /proc/meminfo's value for key (with its colon: "MemTotal:") in KiB, or
//                      0 when the key is missing.
//  machine()           cpu_model(), hardware threads, MemTotal in GiB (rounded down) and
//                      "<sysname> <release>" from uname(2): the "machine" of a result file.
//  machine_slug()      "amd-epyc-2c-host": vendor, family, hardware threads; how
//                      perf/results names a machine in file names.
//  utc(t, fmt)         strftime of t in UTC (fmt's output at most 63 characters).
//  parse_list(s)       "1,12,128" or "1k,32k": comma-separated positive integers, each
//                      optionally suffixed k or K (x 1024); die()s on anything else.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace pf::bench {

using Clock = std::chrono::steady_clock;

void set_program(const char* name);
[[noreturn]] void die(const std::string& what);

inline void must(const Status& s, const char* what) {
  if (!s.is_ok()) die(std::string(what) + ": " + s.to_string());
}
template <typename T>
T must(Result<T> r, const char* what) {
  if (!r.is_ok()) die(std::string(what) + ": " + r.status().to_string());
  return std::move(r).value();
}

double us_since(Clock::time_point t0);

double pct_sorted(const std::vector<double>& sorted, double p);
double pct(std::vector<double> v, double p);

struct Summary {
  double p50 = 0, p99 = 0, mean = 0, min = 0, max = 0;
  std::size_t n = 0;
};
Summary summarize(std::vector<double> v);

std::string cpu_model();
std::size_t meminfo_kib(const char* key);

struct Machine {
  std::string cpu;
  unsigned cores = 0;
  std::size_t mem_total_gib = 0;
  std::string kernel;
};
Machine machine();

std::string machine_slug();

std::string utc(std::time_t t, const char* fmt);

std::vector<std::uint64_t> parse_list(const std::string& s);

}  // namespace pf::bench
