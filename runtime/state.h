// Internal: the Runtime's state and the operations on it, one file per group
// (branch_ops.cpp, snapshot_ops.cpp, history_ops.cpp, verifier.cpp). Every function here
// expects the caller (runtime.cpp) to hold the Runtime mutex. Not part of the public API.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/branch.h"
#include "runtime/ids.h"
#include "runtime/manifest.h"
#include "runtime/page_digest.h"
#include "runtime/prefix_index.h"
#include "runtime/runtime.h"

namespace pf::rt::detail {

struct Tier;
// Deletes a Tier (defined in tier_ops.cpp, where Tier is complete).
struct TierDeleter {
  void operator()(Tier* t) const;
};
struct DigestBehind;
// Deletes a DigestBehind (defined in digest_behind.cpp, where it is complete).
struct DigestBehindDeleter {
  void operator()(DigestBehind* d) const;
};

struct Snapshot {
  std::string cid;
  std::string json;  // canonical manifest bytes
  Manifest manifest;
  // Flat: the snapshot's pages and tokens; the pin. Null only for a snapshot whose pages live
  // in the store alone (durable, paged out or loaded at start; runtime/tier.h): ops that read
  // pages page it in first.
  PageListPtr list;
  std::uint64_t n_tokens = 0;
  bool durable = false;                 // its manifest is committed in the store
  mutable std::uint64_t last_used = 0;  // Tier::clock at its last use (LRU demotion)
  std::string quarantine;               // non-empty: its stored pages failed their check (why)
  bool resident() const { return list != nullptr; }
};

struct State {
  State(vmm::Backend& b, RuntimeOptions o)
      : backend(b), options(std::move(o)), branch_ids(options.id_epoch) {}

  vmm::Backend& backend;
  RuntimeOptions options;
  std::unique_ptr<kernels::PageKernels> kernels;
  // Declared before every holder of page references, so it is destroyed after them.
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<PrefixIndex> index;
  std::unordered_map<BranchId, Branch> branches;
  std::map<std::string, Snapshot, std::less<>> snapshots;
  std::map<std::string, std::string, std::less<>> refs;
  // Lease holds (keyed pages): per lease, per page, how many references the lease holds
  // (each one a pool reference). An exclusive page here (from alloc_pages) is held exactly
  // once and by nothing else; a sealed one (from lookup_keys) may be held any number of
  // times. Released by release_pages, publish_pages, or when the lease ends.
  std::map<LeaseId, std::map<PageId, std::uint32_t>> holds;
  // Digests running outside the lock (the digests behind publish_pages); while any does,
  // gc() unmaps no chunk (they read page bytes through the pool's mapping).
  std::size_t unlocked_digests = 0;
  // Set by check_loaded (runtime/tier.h) when an op must wait for pages still being paged
  // in; the Runtime waits for them and runs the op again.
  std::vector<PageId> load_blocked;
  IdSequence branch_ids;  // (boot epoch << 32) | sequence, never reused (runtime/ids.h)
  // The durable store and its write-behind (runtime/tier.h); null without a store.
  std::unique_ptr<Tier, TierDeleter> tier;
  // The digests behind publish_pages (runtime/digest_behind.h); set by the Runtime.
  std::unique_ptr<DigestBehind, DigestBehindDeleter> digests;
  // The first structural invariant violation found after a mutating call (verify_each_op);
  // once set, mutating calls are refused (runtime.h). Ok while none was found.
  Status halted;

  std::uint32_t pt() const { return pool->geometry().page_tokens; }
};

// Lookups: kNotFound with a clear message.
Result<Branch*> find_branch(State& s, BranchId id);
Result<const Branch*> find_branch(const State& s, BranchId id);
// Ok for a valid ref name: [A-Za-z0-9._/-], 1..255 characters, not starting with '.', '/'
// or '-' (so a ref never looks like a CID, a path or an option); else kInvalidArgument.
Status check_ref_name(std::string_view name);
// A CID, or a ref name, to its snapshot.
Result<const Snapshot*> resolve_snapshot(const State& s, std::string_view cid_or_ref);
// kOutOfMemory, nothing changed, unless n more branch ids are left (call it before
// changing anything in an op that creates n branches).
Status check_branch_ids(const State& s, std::size_t n);
// A new, empty branch; the caller checked check_branch_ids.
Branch& new_branch(State& s, LeaseId owner);

// Makes sure `n` free pages exist: grows by whole chunks, then evicts LRU cached pages.
// kOutOfMemory, with nothing changed, when even that cannot give n pages.
Status ensure_free_pages(State& s, std::size_t n);
// Computes and stores digests for the given pages at the given fills, for pages that have
// none (a page with a digest at another fill keeps it; see digests_for).
Status digest_missing(State& s, std::span<const PageId> pages,
                      std::span<const std::uint32_t> fills);
// The (k, v) digests of each page at its fill, from the stored digests where the fill
// matches, computing (without storing) the rest.
Result<std::vector<PageDigest>> digests_for(State& s, std::span<const PageId> pages,
                                            std::span<const std::uint32_t> fills);

Result<NewBranch> create_branch(State& s, std::span<const Token> tokens, LeaseId owner,
                                const Namespace& ns);
Result<AppendResult> append(State& s, BranchId id, std::span<const Token> tokens);
Status commit(State& s, BranchId id);
Status truncate(State& s, BranchId id, std::uint64_t n_tokens);
Status free_branch(State& s, BranchId id);

// A non-empty `name` must be a valid ref name (checked before anything changes); the ref
// `name` then names the new snapshot, moving off the snapshot it named before, if any.
Result<SnapshotInfo> snapshot(State& s, BranchId id, std::string name);
// A snapshot of the given pages/tokens/parents, sharing `list` as its pin when non-null.
// Without `list`, content equal to the single parent's resolves to that parent.
Result<SnapshotInfo> snapshot_of(State& s, const std::vector<PageId>& pages,
                                 const std::vector<Token>& tokens, std::vector<std::string> parents,
                                 std::string name, PageListPtr list, const Namespace& ns);
Result<ForkResult> fork(State& s, const Source& source, std::size_t n, LeaseId owner);
Result<BranchId> checkout(State& s, std::string_view cid_or_ref, LeaseId owner);
SnapshotInfo info_of(const Snapshot& snap);

Result<MergeResult> merge(State& s, const Source& from, const Source& into, LeaseId owner);
Result<DiffResult> diff(const State& s, const Source& a, const Source& b);
Result<std::vector<LogEntry>> log(const State& s, std::string_view cid_or_ref);

// Keyed pages (keyed_ops.cpp; docs/runtime.md "Keyed pages").
Result<std::vector<PageId>> lookup_keys(State& s, const Namespace& ns, std::span<const Sha256> keys,
                                        bool hold, LeaseId lease);
Result<std::vector<PageId>> alloc_pages(State& s, std::size_t n, LeaseId lease);
// Seals the pages whose keys are absent and records them in the index (their digests are
// queued for the DigestBehind thread), releases the others; as Runtime::publish_pages.
Result<std::size_t> publish_pages(State& s, const Namespace& ns, std::span<const Sha256> keys,
                                  std::span<const PageId> pages, const Sha256* parent_key,
                                  LeaseId lease);
Status release_pages(State& s, std::span<const PageId> pages, LeaseId lease);
std::size_t release_holds(State& s, LeaseId lease);

PoolStats pool_stats(const State& s);

// Quarantine (quarantine_ops.cpp; docs/runtime.md "Verification and quarantine").
// Quarantines every sealed page that fails its digest check (verifier.h find_corrupt_pages)
// and logs it with the snapshots referencing it; returns how many. Fails (nothing changed)
// only when the digest kernel does.
Result<std::size_t> quarantine_corrupt_pages(State& s);
// kDataCorrupt naming `what`, the page index and the pool page when one of `pages` is
// quarantined. O(1) while the pool has no quarantined page.
Status check_pages_intact(const State& s, std::span<const PageId> pages, std::string_view what);
Status check_branch_intact(const State& s, const Branch& b);
Status check_snapshot_intact(const State& s, const Snapshot& snap);

}  // namespace pf::rt::detail
