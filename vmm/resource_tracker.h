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
  // Chunks are reference-counted by handle value: a driver may hand out a value that is
  // already live (CUDA does not promise that importing a chunk in the process that holds it
  // yields a new handle), and each create/import is then one more reference to the same
  // object. add_chunk adds one reference (a new entry of `chunk.bytes`, or one more on a
  // live entry, whose size the caller checked with chunk_bytes). remove_chunk ends one and
  // returns the references left: 0 means the backend's last holder is gone and the caller
  // releases the driver/OS object (release_refs tells it beforehand).
  void add_chunk(const ChunkHandle& chunk);
  std::size_t remove_chunk(const ChunkHandle& chunk);
  // Bytes of the live chunk `value`, 0 when it is not live.
  std::size_t chunk_bytes(std::uint64_t value) const;
  // References held on the live chunk `value`, 0 when it is not live.
  std::size_t chunk_refs(std::uint64_t value) const;

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

  // live_chunks counts references (each create/import until its release_chunk).
  BackendStats stats() const;

 private:
  using Addr = std::uintptr_t;
  const std::size_t granularity_;
  mutable std::mutex mutex_;
  struct Chunk {
    std::size_t bytes = 0;
    std::size_t refs = 0;
  };
  std::map<std::uint64_t, Chunk> chunks_;     // handle value -> size and references
  std::map<Addr, std::size_t> reservations_;  // start -> bytes
  std::map<Addr, std::size_t> mappings_;      // start -> bytes
};

}  // namespace pf::vmm
