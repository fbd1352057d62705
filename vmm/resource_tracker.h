// ResourceTracker: the argument checks and the bookkeeping every real backend shares.
//
// It knows nothing about memory; it records which chunks, reservations and mappings a
// backend holds, so that each backend call can be validated before the OS / driver is
// touched (a failed call then changes nothing) and leaks can be counted in tests.
//
// Threading: not internally synchronized. A backend holds lock() across "check, act on the
// OS/driver, record", which keeps the three consistent under concurrent callers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include "vmm/backend.h"

namespace pf::vmm {

class ResourceTracker {
 public:
  explicit ResourceTracker(std::size_t granularity) : granularity_(granularity) {}

  std::unique_lock<std::mutex> lock() const { return std::unique_lock(mutex_); }
  std::size_t granularity() const { return granularity_; }

  // A non-zero multiple of the granularity.
  Status check_size(std::size_t bytes, const char* what) const;

  Status check_chunk(const ChunkHandle& chunk) const;
  void add_chunk(const ChunkHandle& chunk);
  void remove_chunk(const ChunkHandle& chunk);

  void add_reservation(void* va, std::size_t bytes);
  // Exactly one whole reservation, with no live mapping inside.
  Status check_free_reservation(void* va, std::size_t bytes) const;
  void remove_reservation(void* va);

  // Aligned, inside one reservation, not overlapping a live mapping, within the chunk.
  Status check_map(void* va, std::size_t bytes, const ChunkHandle& chunk,
                   std::size_t chunk_offset) const;
  void add_mapping(void* va, std::size_t bytes);
  // The range is covered exactly by whole live mappings (no holes, no partial mapping).
  Status check_mapped_range(void* va, std::size_t bytes, const char* what) const;
  void remove_mappings(void* va, std::size_t bytes);
  // The range lies inside live mappings without holes (it may start and end inside one).
  Status check_within_mappings(void* va, std::size_t bytes, const char* what) const;

  BackendStats stats() const;

 private:
  using Addr = std::uintptr_t;
  const std::size_t granularity_;
  mutable std::mutex mutex_;
  std::map<std::uint64_t, std::size_t> chunks_;  // handle value -> bytes
  std::map<Addr, std::size_t> reservations_;     // start -> bytes
  std::map<Addr, std::size_t> mappings_;         // start -> bytes
};

}  // namespace pf::vmm
