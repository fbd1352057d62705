// One client process of the soak (perf/bench_soak.cpp): a loop of mixed operations through
// libprocessfork against a running daemon, each timed and recorded.
//
// Contract:
//  - run_soak_worker connects to `socket` and repeats a cycle until SIGTERM (checked
//    between cycles, so a stopped worker leaves nothing behind) or an unexpected error:
//    branch_create (a prefix shared by every worker, then tokens of its own), append and
//    pf_kv_copy of their KV, snapshot, fork(4), append + snapshot in two children, merge
//    (three-way), checkout of the first snapshot with its KV loaded back and compared,
//    diff, free of every branch, unpin of every snapshot; every 4th cycle it reconnects.
//  - Each operation appends one SoakSample to `samples_path` with one write(2), so a worker
//    killed with SIGKILL loses at most the sample it was writing (a torn tail record).
//  - Returns the process exit status: 0 after SIGTERM, 1 after an unexpected error
//    (printed to stderr), e.g. KV read back different from what was written.
#pragma once

#include <cstdint>
#include <string>

namespace pf::soak {

enum class SoakOp : std::uint8_t {
  kConnect,  // pf_connect with attach
  kBranch,
  kAppend,
  kKvStore,
  kKvLoad,
  kSnapshot,
  kFork,
  kMerge,
  kCheckout,
  kDiff,
  kFree,
  kUnpin,
  kHttpGet,  // the parent's HTTP prober (not a worker op)
  kCount,
};
const char* op_name(SoakOp op);

#pragma pack(push, 1)
struct SoakSample {
  std::uint32_t t_ms = 0;  // since the soak began (CLOCK_MONOTONIC, shared by processes)
  std::uint8_t op = 0;     // SoakOp
  std::uint8_t ok = 1;
  std::uint16_t reserved = 0;
  float us = 0;  // the call's latency
};
#pragma pack(pop)
static_assert(sizeof(SoakSample) == 12);

struct WorkerOptions {
  std::string socket;
  std::string samples_path;
  std::int64_t t0_ns = 0;  // steady_clock epoch of the soak start
  std::uint32_t id = 0;    // makes this worker's tokens and snapshot names its own
  std::uint32_t generation = 0;
};

int run_soak_worker(const WorkerOptions& options);

}  // namespace pf::soak
