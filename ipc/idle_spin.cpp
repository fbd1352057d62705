#include "ipc/idle_spin.h"

#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace pf::ipc {

bool IdleSpin::wait_readable(int fd) {
  if (spin_us_ == 0 || max_spinners_ == 0) return false;
  // Take a slot, or do not spin at all.
  unsigned now = spinning_.load(std::memory_order_relaxed);
  do {
    if (now >= max_spinners_) return false;
  } while (!spinning_.compare_exchange_weak(now, now + 1, std::memory_order_relaxed));

  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
  bool readable = false;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, 0);
    if (n != 0) {  // readable, hung up, or an error: the blocking poll takes it from here
      readable = n > 0;
      break;
    }
    if (std::chrono::steady_clock::now() >= until) break;
    ::sched_yield();
  }
  spinning_.fetch_sub(1, std::memory_order_relaxed);
  return readable;
}

unsigned default_max_spinners() {
  return std::max(1u, std::thread::hardware_concurrency() / 2);
}

}  // namespace pf::ipc
