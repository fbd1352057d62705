#include "perf/soak_probe.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace pf::soak {

ProcFigures probe(pid_t pid) {
  ProcFigures f;
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream status(dir + "/status");
  if (!status) return f;
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") status >> f.rss_kib;
    if (key == "RssAnon:") status >> f.rss_anon_kib;
    if (key == "RssShmem:") status >> f.rss_shmem_kib;
    if (key == "Threads:") status >> f.threads;
    status.ignore(1 << 20, '\n');
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++f.fds;
  }
  f.ok = !ec && f.threads != 0;
  return f;
}

}  // namespace pf::soak
