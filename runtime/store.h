// Store: the durable, content-addressed second tier of a pool (DESIGN §8; docs/store.md).
//
// DESIGN
//  - Layout of a store directory DIR:
//      DIR/index/        an LMDB environment (the metadata, below), the one source of truth
//      DIR/blobs/XX/...  one file per page blob, named by the hex of its BlobKey, XX = first
//                        two hex digits; written to "<name>.tmp", fdatasync'd, renamed;
//                        page_bytes long, the slots past `fill` zeroed
//      DIR/LOCK          flock'd by the one process that has the store open
//    LMDB databases: "meta" (format version, geometry, boot epoch counter), "blobs"
//    (BlobKey -> {bytes, references}), "manifests" (CID -> canonical manifest bytes),
//    "refs" (name -> CID), "prefix" (namespace || key -> {parent key, tokens, BlobKey, last
//    use}), "prefix_lru" (last use || namespace || key: LRU order), "quarantine" (CID ->
//    reason). Encodings: docs/store.md.
//  - Crash consistency: a blob is durable (fdatasync, rename, fsync of its directory) before
//    any LMDB transaction names it; a manifest and the references to its blobs commit in one
//    LMDB transaction (durable on return). A SIGKILL at any point therefore leaves either the
//    whole manifest or none of it; blob files that no committed record names (a crash
//    between the two steps, or between unref and unlink) are removed by open().
//  - Every read is checked: read_blob re-digests the bytes it read (runtime/page_digest.h)
//    and answers kDataCorrupt, naming the blob, when they differ from the key.
//  - Threads: every member function is thread-safe. LMDB serializes writers; blob I/O of
//    different blobs runs in parallel (write_blobs/read_blobs use up to io_threads threads).
//    Every call blocks on disk I/O: never call one under the Runtime mutex.
//  - Nothing here knows about branches, leases or the pool: the Runtime's store writer
//    (runtime/store_writer.h) decides what to write and when.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/page_format.h"
#include "base/status.h"
#include "kernels/page_kernels.h"
#include "runtime/namespace.h"
#include "runtime/sha256.h"
#include "runtime/types.h"

namespace pf::rt {

inline constexpr std::uint32_t kStoreFormatVersion = 1;

// A page blob's address: the page's K and V digests over its first `fill` token slots
// (runtime/page_digest.h). Digests already depend on the fill; it is part of the key so a
// key alone says how many slots the blob's bytes hold.
struct BlobKey {
  kernels::Digest k, v;
  std::uint32_t fill = 0;
  bool operator==(const BlobKey&) const = default;
  // 64 + 64 hex digits, '-', fill in decimal: the blob's file name.
  std::string hex() const;
};

struct StoreOptions {
  std::string dir;    // created (0700) if absent
  Geometry geometry;  // a store holds one geometry; open() refuses another
  // Threads for blob I/O and read checks (0: min(8, 4 x hardware threads): they mostly
  // wait on the device).
  std::size_t io_threads = 0;
  // Upper bound on blob bytes held only by prefix entries (0: unbounded); see trim_prefix.
  std::uint64_t prefix_capacity_bytes = 0;
  // LMDB map size (the most metadata the store can hold; sparse on disk).
  std::uint64_t index_map_bytes = std::uint64_t{1} << 34;
};

struct BlobWrite {
  BlobKey key;
  const std::byte* bytes = nullptr;  // page_bytes of host memory, read during the call only
};

struct BlobRead {
  BlobKey key;
  std::byte* dst = nullptr;  // page_bytes of host memory; bytes past `fill` slots are zero
};

struct StoredManifest {
  std::string cid;
  std::string json;  // canonical manifest bytes (runtime/manifest.h parse_manifest)
};

struct StoredRef {
  std::string name;
  std::string cid;
};

// One prefix-index entry: `key` in namespace `ns`, chained after `parent` (none: a first
// page), with the page's tokens when known (empty: a key-only entry, published by key).
struct StoredPrefix {
  Namespace ns{};
  Sha256 key{};
  std::optional<Sha256> parent;
  std::vector<Token> tokens;
  BlobKey blob;
};

struct StoreStats {
  std::uint64_t blobs = 0;
  std::uint64_t blob_bytes = 0;  // bytes of blob files on disk
  std::uint64_t manifests = 0;
  std::uint64_t refs = 0;
  std::uint64_t prefix_entries = 0;
  std::uint64_t quarantined = 0;
};

class Store {
 public:
  // Opens DIR, creating an empty store when it holds none. Refuses (kInvalidArgument, with
  // what differs) a store of another geometry or format version, and (kConflict) a store
  // another process has open. Removes unreferenced and temporary blob files. `kernels` (the
  // host page kernels: reads are checked in host memory) must outlive the store.
  static Result<std::unique_ptr<Store>> open(const StoreOptions& options,
                                             kernels::PageKernels& kernels);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& dir() const;
  const Geometry& geometry() const;

  // The next boot epoch (1..kMaxBootEpoch, wrapping to 1; a fresh store starts at a random
  // one), committed durably before return:
  // the store is the one source of the epoch for a daemon started on it (ipc/boot_epoch.h).
  Result<std::uint32_t> next_boot_epoch();

  // --- blobs -----------------------------------------------------------------------------
  bool has_blob(const BlobKey& key) const;
  // Writes each blob not stored yet and makes it durable; blobs already stored are skipped.
  // Written blobs hold no reference: commit_manifest / put_prefix take references, and
  // open() removes blobs that none took. Each blob written or found stored is *held* (in
  // memory) until the next commit that references it, so a concurrent remove of its last
  // reference cannot unlink it before that commit: pair each call with the commit naming
  // its blobs (a hold never released lasts until the store closes). Parallel over
  // io_threads; kInvalidArgument (nothing written) for a null buffer or a fill above
  // page_tokens; kSystem on an I/O error (what was written stays unreferenced). Returns how
  // many blobs this call wrote (the others were stored already, or written by another call).
  Result<std::size_t> write_blobs(std::span<const BlobWrite> blobs);
  // Reads each blob into its dst and checks its digests: kNotFound for a blob not stored,
  // kDataCorrupt naming the first blob whose bytes do not match its key (dst then holds
  // undefined bytes). Parallel over io_threads. `on_each`, when given, is called with blob
  // i's index and outcome as soon as that blob is read and checked, on the io thread that
  // read it (several at once): a caller can use each blob before the others are in. With
  // more than one blob, one more thread faults the destinations in ahead of the readers
  // (runtime/fault_ahead.h: contents untouched); the dsts must be ordinary host memory.
  Status read_blobs(std::span<const BlobRead> blobs,
                    const std::function<void(std::size_t, const Status&)>& on_each = nullptr);

  // --- manifests and refs (each call one durable LMDB transaction) -----------------------
  // Records a manifest and one reference to each of `blobs` (its pages, each stored:
  // kNotFound otherwise, nothing changed). kInvalidArgument when `cid` is not
  // cid_of(json) (runtime/manifest.h). Idempotent: committing a CID again changes nothing.
  Status commit_manifest(std::string_view cid, std::string_view json,
                         std::span<const BlobKey> blobs);
  // Drops a manifest and its blob references; unreferenced blobs are unlinked after the
  // transaction commits. kNotFound for an unknown CID; kConflict while a ref names it.
  Status remove_manifest(std::string_view cid);
  bool has_manifest(std::string_view cid) const;
  // The canonical bytes; kNotFound, or kDataCorrupt when they no longer hash to the CID.
  Result<std::string> manifest(std::string_view cid) const;
  std::vector<StoredManifest> manifests() const;
  // kNotFound when `cid` is not a committed manifest.
  Status set_ref(std::string_view name, std::string_view cid);
  Status delete_ref(std::string_view name);  // kNotFound for an unknown name
  std::vector<StoredRef> refs() const;

  // --- prefix entries ----------------------------------------------------------------------
  // Records entries (their blobs stored: kNotFound otherwise, nothing changed), one reference
  // to each blob; an entry whose (ns, key) exists keeps the old one. Then trims (trim_prefix).
  Status put_prefix(std::span<const StoredPrefix> entries);
  // The entry for (ns, key), touched for LRU; nullopt when absent. The touch is kept in
  // memory and written by the next write transaction (a crash loses LRU precision only).
  std::optional<StoredPrefix> find_prefix(const Namespace& ns, const Sha256& key);
  // Removes least recently used prefix entries (and the blobs only they referenced) until
  // the blob bytes referenced by prefix entries alone are at most prefix_capacity_bytes.
  // Returns how many entries were removed.
  Result<std::size_t> trim_prefix();
  // Drops one prefix entry (a page found corrupt); kNotFound when absent.
  Status remove_prefix(const Namespace& ns, const Sha256& key);

  // --- quarantine ---------------------------------------------------------------------------
  // Marks a manifest quarantined (its pages failed their check): it stays listed, with the
  // reason, and is never paged in again until removed.
  Status quarantine(std::string_view cid, std::string_view reason);
  // The reason, or nullopt when the CID is not quarantined.
  std::optional<std::string> quarantined(std::string_view cid) const;

  StoreStats stats() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::rt
