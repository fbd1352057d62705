#pragma once
// FaultAhead: faults a batch of read destinations into memory ahead of the threads that read
// into them (Store::read_blobs).
//
// A restarted daemon's pool is fresh memory: the first write to each 4 KiB page faults
// (allocate, zero, map). An O_DIRECT read pins its destination before it submits the I/O,
// so a reader that finds its pages absent faults all of them first, and only then puts its
// read in flight; with a few readers on a few cores, the disk sits idle while they fault.
// FaultAhead runs one thread that walks the destinations in the order readers claim them
// and populates each (madvise MADV_POPULATE_WRITE, Linux >= 5.14) before its reader gets
// there, so the faults overlap the reads in flight instead of delaying them
// (perf/RESULTS.md "bench_store").
//
// Contract:
//  - The destinations must stay mapped until the FaultAhead is destroyed (or join()
//    returned). Their contents are never changed: populating only maps pages (shared
//    memory pages that exist keep their bytes; new ones read as zeros, as on any first
//    touch), so it is safe beside readers writing into the same pages.
//  - `claimed` is the count of destinations the readers have started (the readers raise it
//    as they claim, in index order); a destination below it is skipped: faulting it now
//    would only compete with its reader.
//  - A hint only: a destination the kernel will not populate (a kernel before 5.14, a
//    read-only or device mapping) is skipped, and its reader faults it as it would have
//    without the walk.
//  - Only whole 4 KiB pages inside a destination are populated, never a neighbour's.
//  - Not copyable; the destructor stops the walk and joins the thread (blocking for at most
//    the populate of one destination).

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace pf::rt {

class FaultAhead {
 public:
  // Starts the walk over `dsts` (each `bytes` long). `claimed` must outlive this object.
  FaultAhead(std::vector<std::byte*> dsts, std::size_t bytes,
             const std::atomic<std::size_t>& claimed);
  ~FaultAhead();
  FaultAhead(const FaultAhead&) = delete;
  FaultAhead& operator=(const FaultAhead&) = delete;

  // Blocks until the walk is over (every destination populated or skipped).
  void join();
  // How many destinations the walk populated (valid after join()).
  std::size_t populated() const { return populated_; }

 private:
  void walk();
  std::vector<std::byte*> dsts_;
  std::size_t bytes_;
  const std::atomic<std::size_t>& claimed_;
  std::atomic<bool> stop_{false};
  std::size_t populated_ = 0;
  std::thread thread_;
};

}  // namespace pf::rt
