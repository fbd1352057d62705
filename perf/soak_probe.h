// What the soak (perf/bench_soak.cpp) watches of the daemon process, from /proc.
//
// Contract: probe(pid) reads /proc/<pid>/status (VmRSS and its RssAnon / RssShmem parts,
// Threads) and counts the entries of
// /proc/<pid>/fd; ok == false when the process is gone or /proc is unreadable. No side
// effects; safe from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace pf::soak {

struct ProcFigures {
  bool ok = false;
  std::uint64_t rss_kib = 0;
  std::uint64_t rss_anon_kib = 0;   // the heap and stacks
  std::uint64_t rss_shmem_kib = 0;  // pool pages (memfd chunks) the daemon has touched
  std::uint64_t threads = 0;
  std::uint64_t fds = 0;
};

ProcFigures probe(pid_t pid);

}  // namespace pf::soak
