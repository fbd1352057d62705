// PoolMapping: a client's view of the daemon's pool — one VA reservation of the pool's
// capacity, chunk i mapped at base + i * chunk_bytes, so page p is at base + p * page_bytes
// exactly as in the daemon and every other attached process (DESIGN §2, docs/protocol.md).
//
// DESIGN
//  - Unlike vmm::MappedRange (which only grows and shrinks at its end), chunks here are
//    tracked per index with the serial the daemon gave them: an attach reply maps exactly
//    the indices whose serial differs from what is mapped (unmapping the old chunk first)
//    and truncate_to() unmaps indices >= the pool's chunk count. A chunk released by the
//    daemon and later re-created at the same index therefore never shows stale memory.
//  - A chunk's backend handle is released right after it is mapped: the mapping keeps the
//    physical memory alive (vmm/backend.h), and the process does not hold one fd per chunk
//    (a 4 GiB pool of 2 MiB chunks would otherwise need 2048 descriptors).
//  - Failure leaves every index in a known state: an index is either mapped with a
//    recorded serial, or unmapped. A failed apply() may have mapped some of the window's
//    chunks; the caller retries the attach later.
//  - Page protection (DESIGN §8: sealed pages are not writable through the mapping where
//    the page size allows). When the backend can change access inside a mapping
//    (Backend::protect_granularity: the OS page on host, the huge page for a hugetlb
//    chunk) and that unit divides page_bytes, a chunk is *guarded*: mapped read-only, with
//    only the pages set_writable() opened read-write. A stray store into any other page
//    faults (SIGSEGV) instead of changing a page other processes share. Other chunks (a
//    CUDA pool; pages smaller than the unit) are mapped read-write as before.
//  - Mapping entries: each read-write island splits a guarded chunk's mapping; set_writable
//    coalesces adjacent pages into one call. When the OS refuses more entries
//    (vm.max_map_count) or a protect call fails, the chunk is unguarded (read-write
//    whole): writes the session may make always work; protection degrades, never access.
//
// Threading: not thread-safe; the owning Connection serializes changes and readers.
// Lifetime: the destructor unmaps every chunk and frees the reservation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "vmm/backend.h"

namespace pf::client {

class PoolMapping {
 public:
  // Opens the backend named by `device` (the daemon's HelloReply.device: "host", "cuda:N")
  // and reserves `capacity_bytes` (rounded up to whole chunks) of address space.
  // kProtocol when chunk_bytes is not a multiple of the backend's granularity.
  // `page_bytes` is the pool's page size (protection works in whole pages); 0 maps every
  // chunk read-write.
  static Result<std::unique_ptr<PoolMapping>> create(std::string_view device,
                                                     std::size_t capacity_bytes,
                                                     std::size_t chunk_bytes,
                                                     std::size_t page_bytes);
  ~PoolMapping();
  PoolMapping(const PoolMapping&) = delete;
  PoolMapping& operator=(const PoolMapping&) = delete;

  // Maps chunks [first, first + fds.size()) whose serial differs from the mapped one.
  // Does not keep the fds (the caller's UniqueFds close them). In a newly mapped guarded
  // chunk the pages of `writable` (sorted) are opened read-write.
  Status apply(std::uint32_t first, std::span<const UniqueFd> fds,
               std::span<const std::uint64_t> serials, std::span<const std::uint32_t> writable);
  // Opens (writable) or closes (read-only) `pages` (sorted, unique) in guarded chunks;
  // pages in unmapped or unguarded chunks are left as they are. Opening never fails to
  // leave the pages writable unless the chunk cannot be made read-write at all (then the
  // error); a failed close leaves the page read-write (only protection is lost).
  Status set_writable(std::span<const std::uint32_t> pages, bool writable);
  // True when the mapping of `page` faults on stores unless set_writable opened it.
  bool guarded(std::uint32_t page) const;
  // Unmaps every index >= total_chunks.
  Status truncate_to(std::uint32_t total_chunks);

  // True when every byte of [offset, offset + bytes) lies in mapped chunks.
  bool covers(std::size_t offset, std::size_t bytes) const;

  std::byte* base() const { return static_cast<std::byte*>(base_); }
  std::size_t reserved_bytes() const { return reserved_; }
  std::size_t chunk_bytes() const { return chunk_bytes_; }
  std::size_t mapped_chunks() const { return mapped_count_; }
  // One past the highest mapped index.
  std::size_t chunk_span() const;
  vmm::Backend& backend() const { return *backend_; }

 private:
  struct Slot {
    bool mapped = false;
    bool guarded = false;  // mapped read-only but for the pages set_writable() opened
    std::uint64_t serial = 0;
  };

  PoolMapping(std::unique_ptr<vmm::Backend> backend, void* base, std::size_t reserved,
              std::size_t chunk_bytes, std::size_t page_bytes);
  Status unmap_index(std::size_t index);
  // Applies `access` to pages [first, first + count) in every guarded chunk they touch.
  Status protect_pages(std::uint32_t first, std::uint32_t count, vmm::Access access);
  // Gives up guarding chunk `index`: read-write whole.
  Status unguard(std::size_t index);

  std::unique_ptr<vmm::Backend> backend_;
  void* base_;
  std::size_t reserved_;
  std::size_t chunk_bytes_;
  std::size_t page_bytes_;   // 0: nothing is guarded
  std::vector<Slot> slots_;  // one per chunk index of the reservation
  std::size_t mapped_count_ = 0;
};

}  // namespace pf::client
