// Runtime: the in-process heart of ProcessFork (DESIGN §2, §5). It owns one page pool
// of one geometry on one vmm backend, the branches, the snapshots and refs, and the
// prefix index, and performs every operation on them.
//
// DESIGN
//  - Locking: one mutex serializes every call (metadata only: page bytes are written by
//    engines through write slots, outside the runtime). The fork path holds it for O(n)
//    work in the number of children — a few hundred nanoseconds per child — and never for
//    anything proportional to the context. Operations that touch page bytes (append's
//    one-page copy-on-write, commit/snapshot digests) hold it for that work too, except
//    publish_pages, whose pages a background thread digests without it after the call
//    (runtime/digest_behind.h; docs/runtime.md "Locking").
//  - Sharing: branches and snapshots share immutable PageList chains (runtime/page_list.h)
//    that hold one page reference per page; a branch owns only a private tail
//    (runtime/branch.h). A page's refcount counts references from PageLists, branch tails
//    and the prefix index; the verifier recomputes it from every holder.
//  - Nothing here knows whether the pool is on a GPU: pages are written and read by the
//    kernels of the pool's backend (kernels_for) and by engines.
//  - Errors: every call returns a Status/Result; a failed call changes nothing (cached
//    prefix pages evicted to make room are the one exception: the cache is not state; and
//    with the verifier on, pages found damaged before the call are quarantined whatever
//    the call's outcome).
//  - Quarantine: a sealed page whose bytes no longer match its digest (found by the
//    verifier) is quarantined: it is never handed out again, prefix reuse stops before it,
//    and snapshot, fork, checkout, merge, manifest and copy-on-write append of anything
//    that reaches it answer kDataCorrupt naming the page and the CID or branch, changing
//    nothing; everything else keeps working.
//  - Backend calls (create/map/unmap) happen only when append/branch needs new pages beyond
//    the mapped ones, and in gc(); fork, checkout, snapshot, prefix reuse, free and
//    truncate never make them and never copy page bytes.
//
// Write-slot contract: the WriteRuns returned by append() stay valid until the next
// operation that changes that branch (append, commit, snapshot, fork of it, truncate,
// free); an engine writes the new tokens' KV before then.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/page_format.h"
#include "base/unique_fd.h"
#include "kernels/page_kernels.h"
#include "runtime/namespace.h"
#include "runtime/page_pool.h"
#include "runtime/sha256.h"
#include "runtime/store.h"
#include "runtime/types.h"
#include "vmm/backend.h"

namespace pf::rt {

#ifdef NDEBUG
inline constexpr bool kVerifyByDefault = false;
#else
inline constexpr bool kVerifyByDefault = true;
#endif

inline constexpr std::size_t kMaxForkChildren = 1024;

struct RuntimeOptions {
  Geometry geometry;
  PoolOptions pool;
  // Run the invariant verifier around every mutating call (on in debug builds; see
  // before_mutation / after_mutation and docs/runtime.md "Verification and quarantine"):
  // a call that fails for a verifier reason changes nothing.
  bool verify_each_op = kVerifyByDefault;
  // Before each mutating call, re-digest every sealed page (DESIGN §2: a sealed page's bytes
  // never change) and quarantine those that no longer match: they are never handed out
  // again, and every operation that would build on one answers kDataCorrupt.
  bool verify_digests = true;
  // The boot epoch in every branch id: (id_epoch << 32) | sequence (runtime/ids.h). The
  // daemon passes a fresh one per start (ipc/boot_epoch.h); 0..kMaxBootEpoch.
  std::uint32_t id_epoch = 0;
  // publish_pages returns once at most this many bytes of the pages it sealed wait for their
  // digests (runtime/digest_behind.h): a bound on the backlog and on the pages it keeps from
  // eviction. 0: every publish waits until its own pages' digests are stored.
  std::size_t digest_backlog_bytes = std::size_t{256} << 20;
  // Tests only: runs on the digest thread between digesting a batch of published pages and
  // storing their digests (no lock held), to change the state deterministically in between.
  std::function<void()> digest_hook_for_testing;
  // Tests only: runs on the loader thread of lazy page-ins before it reads each batch of
  // pages (no lock held), to hold pages in their loading state deterministically.
  std::function<void()> load_hook_for_testing;
};

struct NewBranch {
  BranchId id;
  std::uint64_t n_tokens = 0;
  std::uint64_t reused_tokens = 0;
};

struct BranchInfo {
  BranchId id;
  LeaseId owner = 0;
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  std::uint32_t fill_in_last_page = 0;
  std::vector<std::string> parents;  // CIDs the next snapshot will name as parents
  Namespace ns{};                    // its prefix-index namespace (zero: default)
};

// branch_view's wait_pages for "every page of the branch", and its max_wait for "no limit".
inline constexpr std::uint64_t kAllPages = ~std::uint64_t{0};
inline constexpr std::chrono::milliseconds kWaitForever = std::chrono::milliseconds::max();

struct BranchView {
  std::vector<Token> tokens;
  std::vector<PageId> pages;
  std::uint32_t fill_in_last_page = 0;
  // How many leading pages are readable now. Pages of a snapshot being paged in from the
  // store become readable in order, in the background (docs/store.md "Lazy page-in"); a page
  // past ready_pages is listed but its bytes are not there yet.
  std::uint64_t ready_pages = 0;
};

struct AppendResult {
  std::vector<WriteRun> runs;     // where to write the new tokens' KV
  std::uint64_t first_token = 0;  // position of the first new token
  std::uint32_t pages_added = 0;  // pages taken from the pool (CoW copy + fresh)
  bool copied_page = false;       // the last page was shared and was copied first
};

struct SnapshotInfo {
  std::string cid;
  std::string name;
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  std::vector<std::string> parents;
  Namespace ns{};        // the manifest's namespace (zero: default)
  bool created = false;  // false when an identical snapshot already existed
  bool resident = true;  // its pages are in the pool (false: in the store only)
  bool durable = false;  // its manifest is committed in the store
};

struct ForkResult {
  std::vector<BranchId> branches;
  std::string source;          // the CID forked from; empty when forked from a branch
  std::uint64_t n_tokens = 0;  // every child's length
};

enum class MergeOutcome { kFastForward, kThreeWay };
std::string_view merge_outcome_name(MergeOutcome o);  // "fast-forward" / "three-way"

struct MergeResult {
  MergeOutcome outcome = MergeOutcome::kFastForward;
  BranchId branch;                  // the new branch holding the result
  std::string cid;                  // fast-forward: from's CID; three-way: the merge snapshot
  std::string base;                 // nearest common ancestor CID in the parents DAG ("" if none)
  std::uint64_t common_tokens = 0;  // length of the common token prefix of from and into
  std::vector<Token> recompute_tokens;  // from's tokens after the common prefix
};

struct DiffResult {
  std::uint64_t common_tokens = 0;
  std::vector<std::uint64_t> shared_pages;  // page indices of a whose pool page b also holds
  std::vector<std::uint64_t> a_only_pages;  // page indices of a whose pool page b lacks
  std::vector<std::uint64_t> b_only_pages;  // page indices of b whose pool page a lacks
};

struct LogEntry {
  std::string cid;
  std::string name;
  std::vector<std::string> parents;
  std::uint64_t n_tokens = 0;
  bool known = true;  // false: an ancestor that was unpinned (only its CID is left)
};

struct PoolStats {
  std::size_t page_bytes = 0;
  std::size_t chunk_bytes = 0;
  std::size_t chunks = 0;
  std::size_t capacity_pages = 0;
  std::size_t mapped_pages = 0;
  std::size_t used_pages = 0;         // not free
  std::size_t free_pages = 0;         // capacity_pages - used_pages (mapped or not)
  std::size_t exclusive_pages = 0;    // writable by one branch
  std::size_t sealed_pages = 0;       // immutable
  std::size_t shared_pages = 0;       // seen by more than one branch/snapshot/index entry
  std::size_t cached_pages = 0;       // held by the prefix index alone (evictable)
  std::size_t quarantined_pages = 0;  // failed their digest check (held or retired)
  std::size_t branches = 0;
  std::size_t snapshots = 0;
  std::size_t index_nodes = 0;
  std::size_t index_namespaces = 0;      // namespaces holding at least one cached page
  std::size_t digest_pending_pages = 0;  // published pages whose digests are being computed
};

// The pool's memory as an attached process maps it (ipc/wire.h kHello / kAttach).
struct PoolLayout {
  std::uint64_t epoch = 0;  // PagePool::epoch()
  std::size_t page_bytes = 0;
  std::size_t chunk_bytes = 0;     // every chunk has this size
  std::size_t capacity_bytes = 0;  // the VA range to reserve for the whole pool
  std::size_t capacity_pages = 0;
  std::vector<std::uint64_t> chunk_serials;  // one per mapped chunk, by index
};

struct GcResult {
  std::size_t evicted_pages = 0;
  std::size_t released_chunks = 0;
};

// The write-behind's and paging's counters (runtime/tier.h), since the store was attached.
struct TierCounters {
  std::uint64_t jobs_queued = 0;  // waiting or running
  std::uint64_t jobs_failed = 0;
  std::uint64_t blobs_written = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t pages_read = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t snapshots_paged_in = 0;
  std::uint64_t pages_loading = 0;      // paged-in pages not read yet (lazy page-in), now
  std::uint64_t pages_load_failed = 0;  // pages whose read from the store failed
  std::uint64_t load_waits = 0;         // calls that waited for pages still being read
  std::uint64_t snapshots_demoted = 0;
  std::uint64_t prefix_pages_promoted = 0;
};

struct StoreStatus {
  bool attached = false;
  std::string dir;
  std::uint64_t snapshots_resident = 0;
  std::uint64_t snapshots_durable = 0;
  TierCounters counters;
  StoreStats store;
};

struct RefEntry {
  std::string name;
  std::string cid;
};

namespace detail {
struct State;
}

class Runtime {
 public:
  // The backend must outlive the runtime. Picks the backend's page kernels. Maps nothing.
  static Result<std::unique_ptr<Runtime>> create(vmm::Backend& backend, RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const Geometry& geometry() const;
  std::size_t page_bytes() const;
  // The pool's base address in this process; page p is at base() + p * page_bytes(). The
  // VA range is reserved at creation and never moves.
  std::byte* base() const;
  vmm::Backend& backend() const;

  // --- branches ------------------------------------------------------------------------
  // A new branch. With tokens, the longest cached prefix of whole pages is reused from the
  // prefix index (no copy, no backend call); the branch holds exactly the reused tokens and
  // the caller appends the rest. The branch lives in namespace `ns` (runtime/namespace.h):
  // the lookup, and every later commit of the branch, act on that namespace's index only.
  Result<NewBranch> create_branch(std::span<const Token> tokens = {}, LeaseId owner = 0,
                                  const Namespace& ns = kDefaultNamespace);
  // Appends tokens; returns where their KV goes. Copies the last page first when it is
  // shared or sealed (exactly one page). Grows the pool by whole chunks, then evicts LRU
  // cached pages, when free pages run out; kOutOfMemory leaves everything as it was.
  Result<AppendResult> append(BranchId branch, std::span<const Token> tokens);
  // Seals the branch's full pages (computing each page's digests once) and inserts them
  // into the prefix index.
  Status commit(BranchId branch);
  // Keeps the first n_tokens tokens (n_tokens <= length, else kInvalidArgument).
  Status truncate(BranchId branch, std::uint64_t n_tokens);
  Status free_branch(BranchId branch);
  // Frees every branch owned by `owner` (a dead client's lease); returns how many.
  std::size_t free_owned_by(LeaseId owner);
  // Gives a branch to another lease (0 = detach: it then lives until freed).
  Status set_owner(BranchId branch, LeaseId owner);
  // kConflict when the branch is owned by a lease other than `lease` (0 owners are free
  // for all); kNotFound for an unknown branch.
  Status check_access(BranchId branch, LeaseId lease) const;
  Result<BranchInfo> branch_info(BranchId branch) const;
  // The branch's tokens and pages. Blocks, without the runtime's lock, until the first
  // min(wait_pages, n_pages) pages are readable (kAllPages: all of them; 0: no wait):
  // pages of a checkout of a paged-out snapshot arrive from the store after the checkout
  // returned, in page order. After max_wait it returns what it has: ready_pages may then be
  // short of wait_pages (the caller asks again). kDataCorrupt naming the page when a
  // waited-for page could not be read (missing blob, or bytes that failed the digest check:
  // the snapshot it came from is then quarantined).
  Result<BranchView> branch_view(BranchId branch, std::uint64_t wait_pages = kAllPages,
                                 std::chrono::milliseconds max_wait = kWaitForever) const;
  std::vector<BranchId> branches() const;

  // --- snapshots, refs -------------------------------------------------------------------
  // Seals every page of the branch (the partially filled last one too), digests pages not
  // digested yet, pins them under the manifest's CID. An identical snapshot yields the same
  // CID and one pin (created = false). Metadata plus digests: no page copy, no backend call.
  Result<SnapshotInfo> snapshot(BranchId branch, std::string name = "");
  // n in 1..kMaxForkChildren new branches at the source's state; metadata only, O(n).
  Result<ForkResult> fork(const Source& source, std::size_t n, LeaseId owner = 0);
  // A new branch at a snapshot (CID or ref), in the snapshot's namespace; metadata only, O(1).
  Result<BranchId> checkout(std::string_view cid_or_ref, LeaseId owner = 0);
  // DESIGN §5 merge; see docs/runtime.md for the exact semantics. Branch sources are
  // snapshotted first. kInvalidArgument, nothing changed, when from and into lie in
  // different namespaces; the result is in their namespace.
  Result<MergeResult> merge(const Source& from, const Source& into, LeaseId owner = 0);
  // Read-only comparison of two branches or snapshots.
  Result<DiffResult> diff(const Source& a, const Source& b) const;
  // Ancestry of a snapshot through parents, breadth first, each CID once.
  Result<std::vector<LogEntry>> log(std::string_view cid_or_ref) const;
  // The canonical manifest bytes.
  Result<std::string> manifest(std::string_view cid_or_ref) const;
  Result<SnapshotInfo> snapshot_info(std::string_view cid_or_ref) const;
  std::vector<SnapshotInfo> snapshots() const;
  // Drops a snapshot's pin. kConflict while a ref names it.
  Status unpin(std::string_view cid);
  // Manifest page ixs whose (k, v) digests no page of this pool holds (what a peer must
  // send). kInvalidArgument for a bad manifest or a geometry mismatch.
  Result<std::vector<std::uint64_t>> missing_pages(std::string_view manifest_bytes) const;

  Status set_ref(std::string_view name, std::string_view cid_or_ref);
  Result<std::string> get_ref(std::string_view name) const;
  Status delete_ref(std::string_view name);
  std::vector<RefEntry> refs() const;

  // --- prefix index, memory ---------------------------------------------------------------
  // Tokens of the longest cached prefix of whole pages (touches it for LRU).
  std::uint64_t lookup_prefix(std::span<const Token> tokens,
                              const Namespace& ns = kDefaultNamespace);
  // Evicts up to max_pages LRU cached pages that nothing but the index holds.
  std::size_t evict(std::size_t max_pages);
  // Frees what nothing holds (with drop_cache: every evictable cached page too) and gives
  // empty trailing chunks back to the backend. Blocking: first waits for the digests of
  // pages published before the call (runtime/digest_behind.h), which read the mapping.
  GcResult gc(bool drop_cache = false);
  PoolStats pool_stats() const;
  PoolLayout pool_layout() const;
  // An fd for mapped chunk `index`, for another process to import; the caller owns it.
  // `serial` (optional) receives the chunk's serial. kInvalidArgument for a bad index.
  Result<UniqueFd> export_chunk(std::size_t index, std::uint64_t* serial = nullptr) const;

  // --- keyed pages (docs/runtime.md "Keyed pages") --------------------------------------
  // Pages are addressed by their prefix key (DESIGN §4) within a namespace: keys of one
  // namespace never reach pages of another. A lease *hold* is one pool
  // reference a lease (client session) keeps on a page: held pages are never evicted or
  // reused. Holds end with release_pages, publish_pages (for the published pages) or
  // release_holds (the lease ended). Every call checks everything before changing anything.
  //
  // Pages of the longest leading run of `keys` present in the prefix index (touched for
  // LRU). With hold, `lease` gets one hold per returned page.
  Result<std::vector<PageId>> lookup_keys(std::span<const Sha256> keys, bool hold, LeaseId lease,
                                          const Namespace& ns = kDefaultNamespace);
  // n fresh exclusive pages held by `lease` (writable by it through its mapping). Grows the
  // pool, then evicts LRU cached pages, like append; kOutOfMemory changes nothing.
  Result<std::vector<PageId>> alloc_pages(std::size_t n, LeaseId lease);
  // Seals pages[i] and records it under keys[i], chained after parent_key (nullptr: keys[0]
  // is a first page). Every page must be an exclusive page allocated to `lease` and not yet
  // published, listed once; keys must be distinct and as many as pages (else
  // kInvalidArgument, nothing changed). A key already present keeps its page; the new page is
  // released. Ends `lease`'s holds on `pages`. Returns how many keys were new. The sealed
  // pages' digests are computed after the call, by a background thread, without the
  // runtime's lock (a caller that needs one earlier, such as snapshot, computes it); the
  // call blocks, without the lock, only while more than digest_backlog_bytes of published
  // pages await their digests.
  Result<std::size_t> publish_pages(std::span<const Sha256> keys, std::span<const PageId> pages,
                                    const Sha256* parent_key, LeaseId lease,
                                    const Namespace& ns = kDefaultNamespace);
  // Blocks until every page publish_pages sealed before this call has its digest (or was
  // evicted meanwhile); the write-behind of a store has then been handed the indexed ones.
  void wait_digests();
  // Ends one hold of `lease` per listed page (a page listed k times ends k holds).
  // kInvalidArgument, nothing changed, when the lease holds fewer.
  Status release_pages(std::span<const PageId> pages, LeaseId lease);
  // Ends every hold of `lease` (its connection ended); returns how many references.
  std::size_t release_holds(LeaseId lease);
  // References `lease` holds now (each hold counted).
  std::size_t held_pages(LeaseId lease) const;

  // --- the durable store (runtime/tier.h, docs/store.md) ------------------------------------
  // Attaches `store` (it must outlive the runtime) to a runtime that holds no snapshot, ref
  // or branch yet: lists the store's snapshots (paged out: their pages stay on disk until
  // used) and refs, and starts the write-behind: from now on every new snapshot, unpin, ref
  // change and prefix-index page is written to the store in the background. kConflict on a
  // used runtime or a second store; kInvalidArgument (nothing changed) when a stored manifest
  // is malformed or of another geometry. Blocking (reads the store's metadata).
  Status attach_store(Store& store);
  // Blocks until the snapshot is durable (its manifest committed after its pages). The
  // failure of its write if that failed; kUnavailable without a store; kNotFound for an
  // unknown CID or ref.
  Status wait_durable(std::string_view cid_or_ref);
  // Makes a paged-out snapshot resident (no-op when it is): reuses pool pages with the same
  // digests and allocates the rest, which a background thread then reads from the store and
  // checks, in page order (docs/store.md "Lazy page-in"). Returns once the pages are
  // allocated, before they are read: whatever reads their bytes waits for them (branch_view,
  // lookup_keys, append's copy, digests). kDataCorrupt for a quarantined snapshot;
  // kOutOfMemory (nothing changed) when the pool cannot hold it. A blob that fails its check
  // later quarantines the snapshot (in the store too) and the page. fork, checkout, merge
  // and diff of a paged-out snapshot call it themselves.
  Status page_in(std::string_view cid_or_ref);
  StoreStatus store_status() const;

  // Checks every invariant of DESIGN §2 (see runtime/verifier.h): kInternal on a structural
  // violation; with verify_digests, kDataCorrupt for a sealed page whose bytes changed and
  // that is not quarantined yet (quarantined pages are known and pass).
  Status verify() const;

 private:
  explicit Runtime(std::unique_ptr<detail::State> state);
  // With verify_each_op: refuses (kInternal, nothing changed) once an invariant broke, and
  // quarantines sealed pages whose bytes fail their digests (verify_digests) before the op
  // looks at anything.
  Status before_mutation();
  // With verify_each_op: checks the structural invariants after the op; a violation (a bug
  // in the op, which has happened) is logged and halts further changes. The op's own
  // answer stands: it describes what the op did.
  void after_mutation();

  // Pages in the snapshots that `sources` name (branches need nothing); then runs op under
  // the mutex, retrying when a source was paged out again in between.
  template <typename Op>
  auto with_resident(std::initializer_list<const Source*> sources, Op op) -> decltype(op());
  // Runs op under the mutex (held by `lock`); when op stopped at pages still being paged in
  // (State::load_blocked; it changed nothing), waits for them without the mutex and runs op
  // again.
  template <typename Op>
  auto after_loads(std::unique_lock<std::mutex>& lock, Op op) -> decltype(op());
  // Pages in the store's prefix entries that continue the resident prefix of `keys` in `ns`
  // (no-op without a store). Best effort: a failure only shortens the hit.
  void promote_prefix(const Namespace& ns, std::span<const Sha256> keys);
  bool has_tier() const;

  mutable std::mutex mu_;
  std::unique_ptr<detail::State> state_;
  // Set once by attach_store: lets calls skip the store's work without taking the mutex.
  std::atomic<bool> tier_attached_{false};
};

}  // namespace pf::rt
