// Tier: a Runtime's durable second tier — the store (runtime/store.h), the write-behind
// that fills it, and paging between it and the pool (docs/store.md "Runtime integration").
// Internal to the runtime; not part of the public API.
//
// DESIGN
//  - Write-behind: operations never wait for the disk. Under the Runtime mutex they only
//    enqueue a StoreJob (a new snapshot, an unpin, a ref change, new prefix-index pages);
//    one writer thread runs the jobs in order. A job that writes pages first takes one
//    lease hold per page under kStoreLease (so the pages cannot be freed or reused, and the
//    verifier counts the references), drops the mutex, writes the blobs, commits the
//    metadata in one durable store transaction, then takes the mutex again to release the
//    holds and mark the snapshot durable. A snapshot is durable once its manifest commit
//    returned; Runtime::wait_durable waits for that.
//  - Paging in (lazy): a snapshot loaded from the store at start, or demoted, has no
//    resident pages (Snapshot::list is null). Runtime::page_in gives it its list at once,
//    under the mutex: it reuses resident pages with the same digests and allocates the
//    rest, sealed with the digests of the blobs they will hold and flagged
//    PageMeta::loading (held under kStoreLease), and queues a LoadJob. The loader thread
//    reads and checks the blobs in page order, in batches, without the mutex, and clears
//    each page's flag as soon as that page is read and checked (notifying Tier::loaded).
//    Nothing reads a loading page's bytes: branch_view and lookup_keys wait for the pages
//    they hand out, ops that copy or digest page bytes wait for theirs
//    (State::load_blocked), the writer waits before writing one, and an unpin's removal
//    waits until its snapshot's load is done (its blobs must stay). A page whose read fails
//    is quarantined (PageMeta::load_failed): waiters get kDataCorrupt. Prefix-index misses
//    consult the store's prefix entries and page those in synchronously (promote_prefix).
//  - Demotion: when a call needs pages that neither growth nor cache eviction can give,
//    durable snapshots are paged out least recently used first (their list is dropped; a
//    page still used by a branch stays). Like cache eviction this changes no logical state:
//    every snapshot stays listed and checks out.
//  - Lock order: Runtime mutex, then Tier::mu. The writer never holds Tier::mu while it
//    takes the Runtime mutex, and never does I/O under either.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/state.h"
#include "runtime/store.h"

namespace pf::rt::detail {

// The lease under which the tier holds pages it is writing or paging in. Real lease ids
// carry a boot epoch below 2^20 in their high bits (runtime/ids.h), so they never equal it.
inline constexpr LeaseId kStoreLease = ~LeaseId{0};

struct StoreJob {
  enum class Kind { kSnapshot, kUnpin, kSetRef, kDeleteRef, kPrefix };
  Kind kind = Kind::kSnapshot;
  std::string cid;   // kSnapshot, kUnpin, kSetRef
  std::string name;  // kSetRef, kDeleteRef
  // kPrefix: new prefix-index entries and their pages (one kStoreLease hold each).
  std::vector<StoredPrefix> prefix;
  std::vector<PageId> pages;
};

// A lazy page-in: the pages of one snapshot still to read, in page order.
struct LoadJob {
  std::string cid;            // the snapshot being paged in
  std::vector<BlobKey> keys;  // blobs to read
  std::vector<PageId> pages;  // their pool pages (flagged loading)
  std::vector<PageId> held;   // every kStoreLease hold the page-in took (released when done)
  std::size_t next = 0;       // keys[next..] are still to read
};

struct Tier {
  Tier(Store& st, std::mutex& runtime_mu, State& state)
      : store(st), runtime_mu(runtime_mu), state(state) {}

  Store& store;
  std::mutex& runtime_mu;  // the Runtime's mutex (the writer takes it)
  State& state;

  // Under the Runtime mutex:
  std::uint64_t clock = 0;    // snapshot use clock (LRU demotion)
  bool record_prefix = true;  // false while promote_prefix publishes paged-in pages
  TierCounters counters;      // every field but jobs_queued
  // The loader: queue, progress and its thread (all under the Runtime mutex, which both
  // condition variables wait with).
  std::deque<LoadJob> loads;
  std::condition_variable load_wake;  // a load job arrived, or load_stop
  std::condition_variable loaded;     // pages stopped loading
  bool load_stop = false;             // drain the queue, then end
  // Why each page whose read failed failed (such pages are quarantined, so never reused).
  std::map<PageId, std::string> load_errors;
  std::thread loader;

  // Under mu: the queue and its progress.
  mutable std::mutex mu;
  std::condition_variable wake;  // a job arrived, or stop
  std::condition_variable done;  // done_seq advanced
  std::deque<std::pair<std::uint64_t, StoreJob>> queue;
  std::uint64_t next_seq = 1;
  std::uint64_t done_seq = 0;
  std::map<std::string, Status, std::less<>> failed;  // CID -> its last snapshot job failure
  std::uint64_t failures = 0;
  bool stop = false;
  std::thread writer;
};

// Under the Runtime mutex: queue a job (never blocks on I/O).
void tier_enqueue(Tier& t, StoreJob job);
// Under the Runtime mutex: note a new snapshot / unpin / ref change / new index page, for the
// write-behind. No-ops without a tier.
void tier_note_snapshot(State& s, const std::string& cid);
void tier_note_unpin(State& s, const std::string& cid);
void tier_note_ref(State& s, const std::string& name, const std::string* cid);  // null: deleted
void tier_note_index_node(State& s, const PrefixIndex::Node& node);
// Marks a snapshot used now (LRU demotion).
void tier_touch(State& s, const Snapshot& snap);

// Page transfers between pool pages and store blobs, for the writer and for paging in. The
// caller holds the pages (kStoreLease) so they stay put, and does not hold the Runtime mutex:
// the pool's base, page size and host kernels never change. Device pools go through a host
// staging buffer. write_pages_to_store returns how many blobs it wrote (stored ones are
// skipped).
Result<std::size_t> write_pages_to_store(State& s, Store& store, std::span<const BlobKey> keys,
                                         std::span<const PageId> pages);
// `on_each(i, status)` (optional) runs once page i is in the pool and checked, or failed:
// on the io thread that read it for a host pool, after the staging copy for a device pool.
Status read_pages_from_store(
    State& s, Store& store, std::span<const BlobKey> keys, std::span<const PageId> pages,
    const std::function<void(std::size_t, const Status&)>& on_each = nullptr);
// Under the Runtime mutex: ends one kStoreLease hold per page.
void release_store_holds(State& s, std::span<const PageId> pages);

// The writer thread's body; returns when stop is set and the queue is empty.
void tier_writer_loop(Tier& t);
// The loader thread's body; returns when load_stop is set and every load job is done.
void tier_loader_loop(Tier& t);

// Under the Runtime mutex: true when one of `pages` is still being read from the store.
bool any_loading(const State& s, std::span<const PageId> pages);
// Under the Runtime mutex: kUnavailable, with State::load_blocked set to the loading pages
// among `pages`, when there are any (the Runtime waits for them and retries the op, which
// changed nothing); ok otherwise. Ops call it before they read page bytes.
Status check_loaded(State& s, std::span<const PageId> pages);
// With the Runtime mutex held by `lock` (released while waiting): blocks until none of
// `pages` is loading. kDataCorrupt naming the page when one's read failed (load_failed).
Status wait_loaded(Tier& t, std::unique_lock<std::mutex>& lock, std::span<const PageId> pages);
// Under the Runtime mutex: the error a reader of `page` (load_failed) gets, naming `what`.
Status load_failure(const Tier& t, PageId page, std::string_view what);
// Under the Runtime mutex: true while a load job of `cid` is queued or running.
bool cid_loading(const Tier& t, std::string_view cid);

// Under the Runtime mutex: pages out durable snapshots, least recently used first, until
// free + growable + evictable pages reach n or no candidate is left. Returns how many.
std::size_t demote_for(State& s, std::size_t n);

// The blob key of each manifest page (its digests and fill).
Result<std::vector<BlobKey>> manifest_blob_keys(const Manifest& m);

}  // namespace pf::rt::detail
