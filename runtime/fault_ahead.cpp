#include "runtime/fault_ahead.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <utility>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14 (uapi asm-generic/mman-common.h)
#endif

namespace pf::rt {

FaultAhead::FaultAhead(std::vector<std::byte*> dsts, std::size_t bytes,
                       const std::atomic<std::size_t>& claimed)
    : dsts_(std::move(dsts)), bytes_(bytes), claimed_(claimed) {
  thread_ = std::thread([this] { walk(); });
}

FaultAhead::~FaultAhead() {
  stop_.store(true, std::memory_order_relaxed);
  join();
}

void FaultAhead::join() {
  if (thread_.joinable()) thread_.join();
}

void FaultAhead::walk() {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  for (std::size_t i = 0; i < dsts_.size(); ++i) {
    if (stop_.load(std::memory_order_relaxed)) return;
    if (i < claimed_.load(std::memory_order_relaxed)) continue;  // its reader has it
    const auto start = reinterpret_cast<std::uintptr_t>(dsts_[i]);
    const std::uintptr_t first = (start + page - 1) / page * page;  // whole pages inside only
    const std::uintptr_t end = (start + bytes_) / page * page;
    if (end <= first) continue;
    // Any error (a kernel before 5.14, a read-only or device mapping) leaves this
    // destination to its reader, which faults it as it would have without the walk.
    if (::madvise(reinterpret_cast<void*>(first), end - first, MADV_POPULATE_WRITE) == 0) {
      ++populated_;
    }
  }
}

}  // namespace pf::rt
