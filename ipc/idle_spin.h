#pragma once
// IdleSpin: a Unix-socket session thread's short busy-poll for its client's next frame,
// before it sleeps in poll() (ipc/uds_session.cpp; docs/daemon.md "Latency").
//
// A session thread that blocks between frames must be woken when the next request arrives;
// when its CPU went idle meanwhile, that wake-up is most of a round trip (on the 2-vCPU
// benchmark VM, a halted vCPU takes ~60 µs to wake: fork(12) p50 67 µs idle, 8 µs when the
// CPUs were busy). An engine's requests come in bursts (view, append, snapshot, fork), so a
// thread that has just replied polls the socket for up to spin_us first, and answers the
// next request of the burst without sleeping.
//
// Contract:
//  - At most max_spinners threads spin at once (others go straight to sleep), and a spinner
//    calls sched_yield() between polls, so on a busy machine spinning gives its CPU to any
//    runnable thread instead of competing with the requests being served.
//  - spin_us == 0 disables spinning (wait_readable returns false at once).
//  - Thread-safe; one IdleSpin is shared by every session of a server and must outlive them.
//  - Never reads from the descriptor; poll() errors end the spin (the caller's blocking poll
//    then reports them).

#include <atomic>
#include <cstdint>

namespace pf::ipc {

class IdleSpin {
 public:
  IdleSpin(std::uint32_t spin_us, unsigned max_spinners)
      : spin_us_(spin_us), max_spinners_(max_spinners) {}
  IdleSpin(const IdleSpin&) = delete;
  IdleSpin& operator=(const IdleSpin&) = delete;

  // Busy-polls fd for up to spin_us when a spinner slot is free. True when fd became
  // readable (or hung up) meanwhile; false when it did not, or when no slot was free.
  bool wait_readable(int fd);

  // How many threads are spinning now (tests and metrics).
  unsigned spinning() const { return spinning_.load(std::memory_order_relaxed); }

 private:
  const std::uint32_t spin_us_;
  const unsigned max_spinners_;
  std::atomic<unsigned> spinning_{0};
};

// The default for a machine: one spinner per two hardware threads, at least one.
unsigned default_max_spinners();

}  // namespace pf::ipc
