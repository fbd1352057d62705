#include "perf/bench_common.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace pf::bench {
namespace {
const char* g_program = "bench";
}  // namespace

void set_program(const char* name) {
  g_program = name;
}

void die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", g_program, what.c_str());
  std::exit(1);
}

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double pct_sorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const std::size_t n = sorted.size();
  return sorted[std::min(n - 1, static_cast<std::size_t>(p * static_cast<double>(n - 1) + 0.5))];
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return pct_sorted(v, p);
}

Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.p50 = pct_sorted(v, 0.5);
  s.p99 = pct_sorted(v, 0.99);
  s.mean = sum / static_cast<double>(v.size());
  s.min = v.front();
  s.max = v.back();
  s.n = v.size();
  return s;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::size_t meminfo_kib(const char* key) {
  std::ifstream f("/proc/meminfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(line.find(':') + 1));
  }
  return 0;
}

Machine machine() {
  utsname u{};
  uname(&u);
  Machine m;
  m.cpu = cpu_model();
  m.cores = std::thread::hardware_concurrency();
  m.mem_total_gib = meminfo_kib("MemTotal:") >> 20;
  m.kernel = std::string(u.sysname) + " " + u.release;
  return m;
}

std::string machine_slug() {
  const std::string cpu = cpu_model();
  const std::string vendor = cpu.find("AMD") != std::string::npos     ? "amd"
                             : cpu.find("Intel") != std::string::npos ? "intel"
                                                                      : "cpu";
  const std::string family = cpu.find("EPYC") != std::string::npos   ? "-epyc"
                             : cpu.find("Xeon") != std::string::npos ? "-xeon"
                                                                     : "";
  return vendor + family + "-" + std::to_string(std::thread::hardware_concurrency()) + "c-host";
}

std::string utc(std::time_t t, const char* fmt) {
  char b[64];
  const std::size_t n = std::strftime(b, sizeof b, fmt, std::gmtime(&t));
  return std::string(b, n);
}

std::vector<std::uint64_t> parse_list(const std::string& s) {
  std::vector<std::uint64_t> out;
  std::size_t i = 0;
  while (i <= s.size()) {
    const std::size_t c = std::min(s.find(',', i), s.size());
    std::string item = s.substr(i, c - i);
    std::uint64_t mult = 1;
    if (!item.empty() && (item.back() == 'k' || item.back() == 'K')) {
      mult = 1024;
      item.pop_back();
    }
    char* end = nullptr;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v == 0) die("bad list '" + s + "'");
    out.push_back(v * mult);
    i = c + 1;
  }
  return out;
}

}  // namespace pf::bench
