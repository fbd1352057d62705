// PagePool: the pages of one pool over one vmm::MappedRange, with their states and
// reference counts (DESIGN §2 Pool, Page).
//
// DESIGN: the pool's memory is one reserved VA range into which whole chunks are mapped
// back to back, so page i lives at base + i * page_bytes and a page may straddle a chunk
// boundary. The pool grows by whole chunks (grow_for) up to its capacity and gives back
// empty trailing chunks only when asked (trim) — never as a side effect of freeing, so
// fork/checkout/snapshot/free never call the backend.
//
// A page is kFree (refs == 0, in the free set), kExclusive (refs == 1, held by one
// branch's private tail, writable by that branch) or kSealed (immutable; any number of
// holders). ref()/unref() are the only way counts change; the page returns to the free set
// when its count reaches zero. An unref of a free page is a bug: it is never clamped, it is
// recorded (integrity_error) and reported by the verifier.
//
// Digests: a sealed page may carry K and V digests (runtime/page_digest.h) computed once,
// over its first `digest_fill` token slots; they are dropped when the page is freed.
//
// Quarantine (docs/runtime.md "Verification and quarantine"): a sealed page whose bytes no longer
// match its digest is marked quarantined; its holders keep it (and are refused as sources
// by the operations), and when the last one lets go it becomes kQuarantined instead of
// kFree: refs 0, outside the free set, never handed out again.
//
// Not thread-safe: the Runtime serializes every call under its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/page_format.h"
#include "kernels/page_kernels.h"
#include "runtime/types.h"
#include "vmm/backend.h"
#include "vmm/mapped_range.h"

namespace pf::rt {

enum class PageState : std::uint8_t { kFree, kExclusive, kSealed, kQuarantined };
std::string_view page_state_name(PageState state);

struct PageMeta {
  PageState state = PageState::kFree;
  bool in_index = false;     // held by the prefix index (at most one index reference)
  bool has_digest = false;   // k/v below are valid for the first digest_fill slots
  bool quarantined = false;  // bytes failed the digest check: kSealed (held) or kQuarantined
  // A sealed page whose bytes are still being read from the store (lazy page-in; its
  // digests are the blob's): nothing may read it until this clears (runtime/tier.h).
  bool loading = false;
  bool load_failed = false;  // its read from the store failed (then also quarantined)
  std::uint32_t refs = 0;
  std::uint32_t digest_fill = 0;
  // Unique per sealing in this pool (0: never sealed): tells a sealing of this page id from
  // a later reuse of the id (the digests behind publish_pages check it;
  // runtime/digest_behind.h).
  std::uint64_t seal_serial = 0;
  kernels::Digest k, v;
};

struct PoolOptions {
  // Upper bound on pool memory; capacity_pages = capacity_bytes / page_bytes. The VA
  // reservation is capacity_bytes rounded up to whole chunks.
  std::size_t capacity_bytes = 0;
  // Chunk size, a multiple of the backend granularity; 0 = auto (32 MiB or one page,
  // rounded up to the granularity).
  std::size_t chunk_bytes = 0;
};

class PagePool {
 public:
  // The backend must outlive the pool. Nothing is mapped until grow_for().
  static Result<std::unique_ptr<PagePool>> create(vmm::Backend& backend, const Geometry& geometry,
                                                  PoolOptions options);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  const Geometry& geometry() const { return geometry_; }
  std::size_t page_bytes() const { return page_bytes_; }
  std::size_t chunk_bytes() const { return chunk_bytes_; }
  vmm::Backend& backend() const { return range_->backend(); }
  const vmm::MappedRange& range() const { return *range_; }
  std::byte* base() const { return static_cast<std::byte*>(range_->base()); }
  std::byte* page_ptr(PageId id) const { return base() + std::size_t{id} * page_bytes_; }

  std::size_t capacity_pages() const { return capacity_pages_; }
  // Pages addressable in the mapped chunks (capped at capacity_pages).
  std::size_t mapped_pages() const { return metas_.size(); }
  std::size_t free_mapped_pages() const { return free_.size(); }
  std::size_t used_pages() const { return metas_.size() - free_.size(); }
  // Pages that mapping further chunks could add.
  std::size_t growable_pages() const { return capacity_pages_ - metas_.size(); }

  // Maps whole chunks until at least `pages` more free pages exist. All or nothing: a
  // failure (kOutOfMemory at capacity, or the backend's error) unmaps what this call
  // mapped. Blocking (backend calls).
  Status grow_for(std::size_t pages);
  // Takes `n` free pages (lowest ids first), each kExclusive with refs = 1. All or
  // nothing; never grows the pool: kOutOfMemory if fewer than n are free.
  Result<std::vector<PageId>> allocate(std::size_t n);
  // Unmaps and releases empty trailing chunks; returns how many. Blocking.
  std::size_t trim();

  // Changes whenever the set of mapped chunks changes (grow_for, trim): attached processes
  // compare it with the epoch they mapped (ipc/wire.h).
  std::uint64_t epoch() const { return epoch_; }
  // A unique serial for each mapped chunk, by index: a chunk released by trim and a later
  // one mapped at the same index have different serials.
  const std::vector<std::uint64_t>& chunk_serials() const { return chunk_serials_; }

  void ref(PageId id);
  void unref(PageId id);
  void seal(PageId id);  // kExclusive -> kSealed, with a new seal_serial (no-op when sealed)
  // Marks a sealed page quarantined (see above); false (nothing changed) for a page that
  // is not sealed or is quarantined already.
  bool quarantine(PageId id);
  // Quarantined pages, held or not.
  std::size_t quarantined_pages() const { return quarantined_; }
  const PageMeta& meta(PageId id) const { return metas_[id]; }
  PageMeta& meta(PageId id) { return metas_[id]; }
  bool valid(PageId id) const { return id < metas_.size(); }
  const std::set<PageId>& free_set() const { return free_; }

  // Page-list objects alive (runtime/page_list.h counts itself here for the verifier).
  std::int64_t& live_lists() { return live_lists_; }
  std::int64_t live_lists() const { return live_lists_; }

  // Empty while every ref/unref was legal; otherwise the first violation.
  const std::string& integrity_error() const { return integrity_error_; }

 private:
  PagePool(const Geometry& g, std::unique_ptr<vmm::MappedRange> range, std::size_t chunk_bytes,
           std::size_t capacity_pages);
  // Pages fully inside the first `bytes` of the range, capped at capacity.
  std::size_t pages_in(std::size_t bytes) const;
  void resize_to_mapped();
  void note_violation(std::string what);

  Geometry geometry_;
  std::size_t page_bytes_;
  std::unique_ptr<vmm::MappedRange> range_;
  std::size_t chunk_bytes_;
  std::size_t capacity_pages_;
  std::vector<PageMeta> metas_;
  std::set<PageId> free_;
  std::int64_t live_lists_ = 0;
  std::string integrity_error_;
  std::uint64_t seal_clock_ = 0;  // the last seal_serial given
  std::size_t quarantined_ = 0;
  std::uint64_t epoch_ = 0;
  std::uint64_t next_serial_ = 1;
  std::vector<std::uint64_t> chunk_serials_;
};

}  // namespace pf::rt
