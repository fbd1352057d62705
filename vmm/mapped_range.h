// MappedRange: one reserved virtual range into which whole chunks are mapped back to back
// and made read-write — the memory layout of a pool in one process (DESIGN §2: every
// attached process maps all chunks into one reserved range, so page i lives at
// base + i * page_bytes everywhere).
//
// DESIGN: the creator grows the range with fresh chunks (grow); another process imports
// the same chunks from fds in the same order (grow_imported) and sees the same bytes at
// the same offsets. Each grow sets access on the new chunk's mapping only (one set_access
// call of chunk_bytes), so growing to n chunks costs n calls of one chunk each.
// Every operation either completes or leaves the range exactly as it was: a failure in
// any backend call is rolled back (release what was created, unmap what was mapped).
//
// Lifetime: the backend must outlive the range. The destructor unmaps every chunk,
// releases every handle and frees the reservation. Not thread-safe: one owner at a time.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "base/unique_fd.h"
#include "vmm/backend.h"

namespace pf::vmm {

class MappedRange {
 public:
  // Reserves `capacity_bytes` (a multiple of the backend's granularity); nothing mapped.
  static Result<std::unique_ptr<MappedRange>> create(Backend& backend, std::size_t capacity_bytes);
  ~MappedRange();
  MappedRange(const MappedRange&) = delete;
  MappedRange& operator=(const MappedRange&) = delete;

  // Creates a chunk of `chunk_bytes` and maps it after the last one.
  Status grow(std::size_t chunk_bytes);
  // Imports the chunk behind `fd` (`chunk_bytes` long) and maps it after the last one.
  // Does not take ownership of `fd`.
  Status grow_imported(int fd, std::size_t chunk_bytes);
  // Unmaps and releases the last chunk.
  Status shrink();
  // An fd for chunk `index`, for handing to another process; the caller owns it.
  Result<UniqueFd> export_chunk(std::size_t index) const;

  Backend& backend() const { return backend_; }
  void* base() const { return base_; }
  std::size_t capacity_bytes() const { return capacity_; }
  std::size_t mapped_bytes() const { return mapped_; }
  std::size_t chunk_count() const { return chunks_.size(); }
  std::size_t chunk_bytes(std::size_t index) const { return chunks_.at(index).bytes; }

 private:
  MappedRange(Backend& backend, void* base, std::size_t capacity)
      : backend_(backend), base_(base), capacity_(capacity) {}
  // Maps an owned handle at the end; on failure releases it and changes nothing.
  Status map_at_end(const ChunkHandle& chunk);

  Backend& backend_;
  void* base_;
  std::size_t capacity_;
  std::size_t mapped_ = 0;
  std::vector<ChunkHandle> chunks_;
};

}  // namespace pf::vmm
