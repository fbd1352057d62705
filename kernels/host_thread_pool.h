// A small persistent pool of host threads for the host kernels' batch work (digest_batch).
//
// DESIGN: parallel_for(n, fn) publishes one job (n items, an atomic cursor) on a queue and
// the calling thread works on it too; idle workers take the job at the front of the queue
// and claim items from its cursor until none are left. So any number of threads may call
// parallel_for at once (the runtime digests several leases' pages concurrently, outside its
// lock): jobs are served in arrival order, every caller makes progress on its own job even
// while all workers are busy elsewhere, and nothing can deadlock. Which thread runs which
// item is not deterministic; callers make each item's result depend only on its inputs.
//
// Contract:
//  - parallel_for blocks until fn has returned for every i in [0, n). fn must not throw and
//    must not call parallel_for on the same pool (it would still finish, but serially).
//  - A pool of size 1 has no workers: parallel_for runs every item on the calling thread.
//  - The destructor joins the workers; no parallel_for may be running then.
//  - fork(): a child process has none of the workers (and maybe a mutex some worker held),
//    so there parallel_for runs every item on the calling thread and takes no lock.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pf::kernels {

class HostThreadPool {
 public:
  // `threads` counts the caller: threads - 1 workers are started (0 and 1: none).
  explicit HostThreadPool(unsigned threads);
  ~HostThreadPool();
  HostThreadPool(const HostThreadPool&) = delete;
  HostThreadPool& operator=(const HostThreadPool&) = delete;

  // Threads that work on one parallel_for (the workers plus the caller), at least 1.
  unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, n) on the workers and the calling thread; blocking.
  void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn);

  // While one lives, parallel_for called on this thread (any pool) runs every item on this
  // thread: background work that should occupy one core, not every core (the digests
  // behind publish_pages, runtime/digest_behind.h). Scopes nest.
  class SerialScope {
   public:
    SerialScope();
    ~SerialScope();
    SerialScope(const SerialScope&) = delete;
    SerialScope& operator=(const SerialScope&) = delete;

   private:
    bool previous_;
  };

  // The process-wide pool the host kernels use: PF_HOST_THREADS threads when that variable
  // holds a number in 1..256, else the hardware concurrency capped at kDefaultMaxThreads.
  // Started on first use; lives until the process exits.
  static HostThreadPool& shared();
  static constexpr unsigned kDefaultMaxThreads = 16;
  // The size shared() picks (exposed for tests and benchmarks).
  static unsigned default_threads();

 private:
  struct Job;
  void worker_loop();
  // Claims and runs `job`'s items until none are left unclaimed.
  static void run_items(Job& job);

  static thread_local bool serial_on_this_thread;  // a SerialScope lives on this thread
  const int owner_pid_;                            // the process that started the workers
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;  // jobs that may still have unclaimed items
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace pf::kernels
