// The Runtime facade: one mutex around the operations in state.h, plus the optional
// verifier run after each mutating call.
#include "runtime/runtime.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "runtime/digest_behind.h"
#include "runtime/ids.h"
#include "runtime/state.h"
#include "runtime/tier.h"
#include "runtime/verifier.h"

namespace pf::rt {

using Lock = std::lock_guard<std::mutex>;

std::string_view merge_outcome_name(MergeOutcome o) {
  return o == MergeOutcome::kFastForward ? "fast-forward" : "three-way";
}

Result<std::unique_ptr<Runtime>> Runtime::create(vmm::Backend& backend, RuntimeOptions options) {
  PF_TRY(options.geometry.validate());
  if (options.id_epoch > kMaxBootEpoch) {
    return PF_ERROR(Code::kInvalidArgument, "id_epoch " + std::to_string(options.id_epoch) +
                                                " exceeds " + std::to_string(kMaxBootEpoch));
  }
  auto state = std::make_unique<detail::State>(backend, options);
  PF_ASSIGN_OR_RETURN(state->kernels, kernels::kernels_for(backend));
  PF_ASSIGN_OR_RETURN(state->pool, PagePool::create(backend, options.geometry, options.pool));
  state->index = std::make_unique<PrefixIndex>(*state->pool);
  return std::unique_ptr<Runtime>(new Runtime(std::move(state)));
}

Runtime::Runtime(std::unique_ptr<detail::State> state) : state_(std::move(state)) {
  state_->digests.reset(new detail::DigestBehind(mu_, *state_));
  state_->digests->hook_for_testing = state_->options.digest_hook_for_testing;
}

Runtime::~Runtime() {
  // The digests behind publish_pages first: every queued page gets its digest (and, with a
  // store, goes to the write-behind, which the next step drains).
  detail::digest_behind_stop(*state_->digests);
  // The write-behind first: it finishes every queued job (a clean stop loses nothing that
  // was snapshotted) and takes the mutex while doing so.
  if (state_->tier) {
    {
      std::lock_guard<std::mutex> lock(state_->tier->mu);
      state_->tier->stop = true;
    }
    state_->tier->wake.notify_all();
    if (state_->tier->writer.joinable()) state_->tier->writer.join();
    state_->index->set_on_new_node(nullptr);
    // Then the loader (the writer may have waited for its pages): it reads every queued
    // page, so that no hold outlives it.
    {
      Lock lock(mu_);
      state_->tier->load_stop = true;
    }
    state_->tier->load_wake.notify_all();
    if (state_->tier->loader.joinable()) state_->tier->loader.join();
  }
  // Drop every holder before the pool (State's member order also guarantees this).
  state_->refs.clear();
  state_->snapshots.clear();
  for (auto& [id, b] : state_->branches) release_tail(*state_->pool, b);
  state_->branches.clear();
  while (!state_->holds.empty()) detail::release_holds(*state_, state_->holds.begin()->first);
  state_->index.reset();
}

const Geometry& Runtime::geometry() const {
  return state_->pool->geometry();
}
std::size_t Runtime::page_bytes() const {
  return state_->pool->page_bytes();
}
std::byte* Runtime::base() const {
  return state_->pool->base();
}
vmm::Backend& Runtime::backend() const {
  return state_->backend;
}

Status Runtime::before_mutation() {
  if (!state_->options.verify_each_op) return Status::ok();
  if (!state_->halted.is_ok()) {
    return PF_ERROR(Code::kInternal, "the runtime refuses changes since an invariant broke: " +
                                         state_->halted.message());
  }
  if (state_->options.verify_digests) {
    PF_ASSIGN_OR_RETURN(std::size_t quarantined, detail::quarantine_corrupt_pages(*state_));
    (void)quarantined;  // each one is logged
  }
  return Status::ok();
}

void Runtime::after_mutation() {
  if (!state_->options.verify_each_op || !state_->halted.is_ok()) return;
  if (Status v = detail::verify_structure(*state_); !v.is_ok()) {
    std::fprintf(stderr, "processfork runtime: %s; refusing further changes\n",
                 v.to_string().c_str());
    state_->halted = std::move(v);
  }
}

Result<NewBranch> Runtime::create_branch(std::span<const Token> tokens, LeaseId owner,
                                         const Namespace& ns) {
  if (!tokens.empty() && has_tier())
    promote_prefix(ns, prefix_keys(tokens, geometry().page_tokens));
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto r = detail::create_branch(*state_, tokens, owner, ns);
  after_mutation();
  return r;
}

template <typename Op>
auto Runtime::after_loads(std::unique_lock<std::mutex>& lock, Op op) -> decltype(op()) {
  for (;;) {
    state_->load_blocked.clear();
    auto r = op();
    if (r.is_ok() || state_->load_blocked.empty() || !state_->tier) return r;
    const std::vector<PageId> pages = std::move(state_->load_blocked);
    state_->load_blocked.clear();
    if (Status st = detail::wait_loaded(*state_->tier, lock, pages); !st.is_ok()) return st;
  }
}

Result<AppendResult> Runtime::append(BranchId branch, std::span<const Token> tokens) {
  std::unique_lock<std::mutex> lock(mu_);
  return after_loads(lock, [&]() -> Result<AppendResult> {
    PF_TRY(before_mutation());
    auto r = detail::append(*state_, branch, tokens);
    after_mutation();
    return r;
  });
}

Status Runtime::commit(BranchId branch) {
  std::unique_lock<std::mutex> lock(mu_);
  return after_loads(lock, [&]() -> Status {
    PF_TRY(before_mutation());
    auto r = detail::commit(*state_, branch);
    after_mutation();
    return r;
  });
}

Status Runtime::truncate(BranchId branch, std::uint64_t n_tokens) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto r = detail::truncate(*state_, branch, n_tokens);
  after_mutation();
  return r;
}

Status Runtime::free_branch(BranchId branch) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto r = detail::free_branch(*state_, branch);
  after_mutation();
  return r;
}

std::size_t Runtime::free_owned_by(LeaseId owner) {
  Lock lock(mu_);
  std::vector<BranchId> doomed;
  for (const auto& [id, b] : state_->branches) {
    if (b.owner == owner) doomed.push_back(id);
  }
  for (BranchId id : doomed) detail::free_branch(*state_, id).ignore();  // ids just listed
  after_mutation();  // a lease's end is never refused: a dead client leaks nothing
  return doomed.size();
}

Status Runtime::set_owner(BranchId branch, LeaseId owner) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  PF_ASSIGN_OR_RETURN(Branch * b, detail::find_branch(*state_, branch));
  b->owner = owner;
  return Status::ok();
}

Status Runtime::check_access(BranchId branch, LeaseId lease) const {
  Lock lock(mu_);
  PF_ASSIGN_OR_RETURN(const Branch* b, detail::find_branch(std::as_const(*state_), branch));
  if (b->owner != 0 && b->owner != lease) {
    return PF_ERROR(Code::kConflict, "branch " + std::to_string(branch.value) +
                                         " is held by lease " + std::to_string(b->owner));
  }
  return Status::ok();
}

Result<BranchInfo> Runtime::branch_info(BranchId branch) const {
  Lock lock(mu_);
  PF_ASSIGN_OR_RETURN(const Branch* b, detail::find_branch(std::as_const(*state_), branch));
  BranchInfo i;
  i.id = b->id;
  i.owner = b->owner;
  i.n_tokens = b->n_tokens();
  const std::uint32_t P = state_->pt();
  i.n_pages = (i.n_tokens + P - 1) / P;
  i.fill_in_last_page = fill_in_last_page(i.n_tokens, P);
  i.parents = *b->parents;
  i.ns = b->ns;
  return i;
}

Result<BranchView> Runtime::branch_view(BranchId branch, std::uint64_t wait_pages,
                                        std::chrono::milliseconds max_wait) const {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::min(max_wait, std::chrono::milliseconds(std::chrono::hours(24 * 365)));
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    PF_ASSIGN_OR_RETURN(const Branch* b, detail::find_branch(std::as_const(*state_), branch));
    BranchView v;
    v.pages = branch_pages(*b, state_->pt());
    const PagePool& pool = *state_->pool;
    v.ready_pages = 0;
    while (v.ready_pages < v.pages.size() && !pool.meta(v.pages[v.ready_pages]).loading) {
      ++v.ready_pages;
    }
    const std::uint64_t wanted = std::min<std::uint64_t>(wait_pages, v.pages.size());
    const bool late = std::chrono::steady_clock::now() >= deadline;
    if (v.ready_pages >= wanted || late) {
      const std::uint64_t checked = std::min(wanted, v.ready_pages);
      for (std::uint64_t i = 0; i < checked; ++i) {
        if (pool.meta(v.pages[i]).load_failed) {
          return detail::load_failure(*state_->tier, v.pages[i],
                                      "branch " + std::to_string(branch.value) + " page " +
                                          std::to_string(i) + " (pool page " +
                                          std::to_string(v.pages[i]) + ")");
        }
      }
      v.tokens = branch_tokens(*b);
      v.fill_in_last_page = fill_in_last_page(v.tokens.size(), state_->pt());
      return v;
    }
    // Wait for the first page still loading, then look again: the branch may change meanwhile.
    const PageId next = v.pages[v.ready_pages];
    ++state_->tier->counters.load_waits;
    state_->tier->loaded.wait_until(lock, deadline, [&] { return !pool.meta(next).loading; });
  }
}

std::vector<BranchId> Runtime::branches() const {
  Lock lock(mu_);
  std::vector<BranchId> out;
  for (const auto& [id, b] : state_->branches) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}

Result<SnapshotInfo> Runtime::snapshot(BranchId branch, std::string name) {
  std::unique_lock<std::mutex> lock(mu_);
  return after_loads(lock, [&]() -> Result<SnapshotInfo> {
    PF_TRY(before_mutation());
    auto r = detail::snapshot(*state_, branch, name);
    after_mutation();
    return r;
  });
}

bool Runtime::has_tier() const {
  return tier_attached_.load(std::memory_order_acquire);
}

template <typename Op>
auto Runtime::with_resident(std::initializer_list<const Source*> sources, Op op) -> decltype(op()) {
  // The op runs under the mutex once every snapshot source is resident: one lock and no
  // store call in the common case (always without a store). A paged-out source is paged in
  // with the mutex released, then checked again: demotion in between (another call needing
  // the memory) is retried a few times; after that the op itself answers that the snapshot
  // is paged out.
  for (int attempt = 0;; ++attempt) {
    std::vector<std::string> paged_out;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (state_->tier) {
        for (const Source* src : sources) {
          const std::string* name = std::get_if<std::string>(src);
          if (name == nullptr) continue;
          auto snap = detail::resolve_snapshot(*state_, *name);
          if (snap.is_ok() && !(*snap)->resident()) paged_out.push_back((*snap)->cid);
        }
      }
      if (paged_out.empty() || attempt == 3) return after_loads(lock, op);
    }
    for (const std::string& cid : paged_out) {
      if (Status st = page_in(cid); !st.is_ok() && st.code() != Code::kNotFound) return st;
    }
  }
}

Result<ForkResult> Runtime::fork(const Source& source, std::size_t n, LeaseId owner) {
  return with_resident({&source}, [&]() -> Result<ForkResult> {
    PF_TRY(before_mutation());
    auto r = detail::fork(*state_, source, n, owner);
    after_mutation();
    return r;
  });
}

Result<BranchId> Runtime::checkout(std::string_view cid_or_ref, LeaseId owner) {
  const Source source{std::string(cid_or_ref)};
  return with_resident({&source}, [&]() -> Result<BranchId> {
    PF_TRY(before_mutation());
    auto r = detail::checkout(*state_, cid_or_ref, owner);
    after_mutation();
    return r;
  });
}

Result<MergeResult> Runtime::merge(const Source& from, const Source& into, LeaseId owner) {
  return with_resident({&from, &into}, [&]() -> Result<MergeResult> {
    PF_TRY(before_mutation());
    auto r = detail::merge(*state_, from, into, owner);
    after_mutation();
    return r;
  });
}

Result<DiffResult> Runtime::diff(const Source& a, const Source& b) const {
  // Paging in changes no logical state, so a const diff may do it.
  return const_cast<Runtime*>(this)->with_resident(
      {&a, &b}, [&]() -> Result<DiffResult> { return detail::diff(*state_, a, b); });
}

Result<std::vector<LogEntry>> Runtime::log(std::string_view cid_or_ref) const {
  Lock lock(mu_);
  return detail::log(*state_, cid_or_ref);
}

Result<std::string> Runtime::manifest(std::string_view cid_or_ref) const {
  Lock lock(mu_);
  PF_ASSIGN_OR_RETURN(const detail::Snapshot* snap, detail::resolve_snapshot(*state_, cid_or_ref));
  PF_TRY(detail::check_snapshot_intact(*state_, *snap));
  return snap->json;
}

Result<SnapshotInfo> Runtime::snapshot_info(std::string_view cid_or_ref) const {
  Lock lock(mu_);
  PF_ASSIGN_OR_RETURN(const detail::Snapshot* snap, detail::resolve_snapshot(*state_, cid_or_ref));
  return detail::info_of(*snap);
}

std::vector<SnapshotInfo> Runtime::snapshots() const {
  Lock lock(mu_);
  std::vector<SnapshotInfo> out;
  for (const auto& [cid, snap] : state_->snapshots) out.push_back(detail::info_of(snap));
  return out;
}

Status Runtime::unpin(std::string_view cid) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto it = state_->snapshots.find(cid);
  if (it == state_->snapshots.end()) {
    return PF_ERROR(Code::kNotFound, "unknown CID '" + std::string(cid) + "'");
  }
  for (const auto& [name, target] : state_->refs) {
    if (target == cid) {
      return PF_ERROR(Code::kConflict, "snapshot " + std::string(cid) + " is named by ref '" +
                                           name + "'; delete the ref first");
    }
  }
  detail::tier_note_unpin(*state_, it->first);
  state_->snapshots.erase(it);
  after_mutation();
  return Status::ok();
}

Result<std::vector<std::uint64_t>> Runtime::missing_pages(std::string_view manifest_bytes) const {
  PF_ASSIGN_OR_RETURN(ParsedManifest pm, parse_manifest(manifest_bytes));
  Lock lock(mu_);
  const PagePool& pool = *state_->pool;
  if (!(pm.manifest.geometry == pool.geometry())) {
    return PF_ERROR(Code::kInvalidArgument, "geometry mismatch: manifest " +
                                                pm.manifest.geometry.to_string() + ", pool " +
                                                pool.geometry().to_string());
  }
  // Digests this pool holds (stored digests of sealed pages, and every snapshot's).
  std::set<std::pair<std::string, std::string>> have;
  for (PageId p = 0; p < pool.mapped_pages(); ++p) {
    const PageMeta& m = pool.meta(p);
    if (m.has_digest) have.emplace(m.k.hex(), m.v.hex());
  }
  for (const auto& [cid, snap] : state_->snapshots) {
    for (const ManifestPage& mp : snap.manifest.pages) have.emplace(mp.k, mp.v);
  }
  std::vector<std::uint64_t> missing;
  for (std::size_t i = 0; i < pm.manifest.pages.size(); ++i) {
    if (!have.count({pm.manifest.pages[i].k, pm.manifest.pages[i].v})) missing.push_back(i);
  }
  return missing;
}

Status Runtime::set_ref(std::string_view name, std::string_view cid_or_ref) {
  PF_TRY(detail::check_ref_name(name));
  Lock lock(mu_);
  PF_TRY(before_mutation());
  PF_ASSIGN_OR_RETURN(const detail::Snapshot* snap, detail::resolve_snapshot(*state_, cid_or_ref));
  state_->refs[std::string(name)] = snap->cid;
  detail::tier_note_ref(*state_, std::string(name), &snap->cid);
  return Status::ok();
}

Result<std::string> Runtime::get_ref(std::string_view name) const {
  Lock lock(mu_);
  auto it = state_->refs.find(name);
  if (it == state_->refs.end()) {
    return PF_ERROR(Code::kNotFound, "unknown ref '" + std::string(name) + "'");
  }
  return it->second;
}

Status Runtime::delete_ref(std::string_view name) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto it = state_->refs.find(name);
  if (it == state_->refs.end()) {
    return PF_ERROR(Code::kNotFound, "unknown ref '" + std::string(name) + "'");
  }
  detail::tier_note_ref(*state_, it->first, nullptr);
  state_->refs.erase(it);
  return Status::ok();
}

std::vector<RefEntry> Runtime::refs() const {
  Lock lock(mu_);
  std::vector<RefEntry> out;
  for (const auto& [name, cid] : state_->refs) out.push_back({name, cid});
  return out;
}

std::uint64_t Runtime::lookup_prefix(std::span<const Token> tokens, const Namespace& ns) {
  if (!tokens.empty() && has_tier())
    promote_prefix(ns, prefix_keys(tokens, geometry().page_tokens));
  Lock lock(mu_);
  return std::uint64_t{state_->index->lookup(ns, tokens).size()} * state_->pt();
}

std::size_t Runtime::evict(std::size_t max_pages) {
  Lock lock(mu_);
  const std::size_t n = state_->index->evict(max_pages);
  after_mutation();
  return n;
}

GcResult Runtime::gc(bool drop_cache) {
  // Digests behind publish_pages read pages through the mapping, so no chunk is released
  // while one runs: let those queued before this call finish first (outside the mutex,
  // which they need), so that without concurrent publishes gc releases every empty chunk.
  detail::digest_behind_wait_queued(*state_->digests);
  Lock lock(mu_);
  GcResult r;
  // Pages are freed the moment their last holder lets go, so there is nothing unheld to
  // collect; gc drops the cache on request and returns empty trailing chunks.
  if (drop_cache) r.evicted_pages = state_->index->evict(~std::size_t{0});
  // Digests running outside the lock read pages through the mapping: keep it whole.
  if (state_->unlocked_digests == 0) r.released_chunks = state_->pool->trim();
  after_mutation();
  return r;
}

PoolStats Runtime::pool_stats() const {
  Lock lock(mu_);
  PoolStats st = detail::pool_stats(*state_);
  st.digest_pending_pages = detail::digest_behind_pending(*state_->digests);
  return st;
}

PoolLayout Runtime::pool_layout() const {
  Lock lock(mu_);
  const PagePool& pool = *state_->pool;
  PoolLayout layout;
  layout.epoch = pool.epoch();
  layout.page_bytes = pool.page_bytes();
  layout.chunk_bytes = pool.chunk_bytes();
  layout.capacity_bytes = pool.range().capacity_bytes();
  layout.capacity_pages = pool.capacity_pages();
  layout.chunk_serials = pool.chunk_serials();
  return layout;
}

Result<UniqueFd> Runtime::export_chunk(std::size_t index, std::uint64_t* serial) const {
  Lock lock(mu_);
  const PagePool& pool = *state_->pool;
  PF_ASSIGN_OR_RETURN(UniqueFd fd, pool.range().export_chunk(index));
  if (serial != nullptr) *serial = pool.chunk_serials()[index];
  return fd;
}

Result<std::vector<PageId>> Runtime::lookup_keys(std::span<const Sha256> keys, bool hold,
                                                 LeaseId lease, const Namespace& ns) {
  if (!keys.empty() && has_tier()) promote_prefix(ns, keys);
  std::unique_lock<std::mutex> lock(mu_);
  PF_TRY(before_mutation());
  auto r = detail::lookup_keys(*state_, ns, keys, hold, lease);
  after_mutation();
  // Pages still being paged in (a checkout's pages that a commit indexed) are handed out
  // once readable; a failed one ends the lookup, and its holds, with the error.
  if (r.is_ok() && detail::any_loading(*state_, *r)) {
    if (Status st = detail::wait_loaded(*state_->tier, lock, *r); !st.is_ok()) {
      if (hold) detail::release_pages(*state_, *r, lease).ignore();  // just taken
      return st;
    }
  }
  return r;
}

Result<std::vector<PageId>> Runtime::alloc_pages(std::size_t n, LeaseId lease) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto r = detail::alloc_pages(*state_, n, lease);
  after_mutation();
  return r;
}

Result<std::size_t> Runtime::publish_pages(std::span<const Sha256> keys,
                                           std::span<const PageId> pages, const Sha256* parent_key,
                                           LeaseId lease, const Namespace& ns) {
  Result<std::size_t> r = std::size_t{0};
  {
    Lock lock(mu_);
    PF_TRY(before_mutation());
    r = detail::publish_pages(*state_, ns, keys, pages, parent_key, lease);
    after_mutation();
  }
  // Backpressure (runtime/digest_behind.h): at most digest_backlog_bytes stay pending.
  if (r.is_ok()) {
    const std::size_t page_bytes = state_->pool->page_bytes();
    detail::digest_behind_wait_below(*state_->digests,
                                     state_->options.digest_backlog_bytes / page_bytes);
  }
  return r;
}

void Runtime::wait_digests() {
  detail::digest_behind_wait_queued(*state_->digests);
}

Status Runtime::release_pages(std::span<const PageId> pages, LeaseId lease) {
  Lock lock(mu_);
  PF_TRY(before_mutation());
  auto r = detail::release_pages(*state_, pages, lease);
  after_mutation();
  return r;
}

std::size_t Runtime::release_holds(LeaseId lease) {
  Lock lock(mu_);
  const std::size_t n = detail::release_holds(*state_, lease);
  // Reported on stderr; nothing to return it to. A lease without holds changed nothing.
  if (n > 0) after_mutation();
  return n;
}

std::size_t Runtime::held_pages(LeaseId lease) const {
  Lock lock(mu_);
  auto it = state_->holds.find(lease);
  if (it == state_->holds.end()) return 0;
  std::size_t n = 0;
  for (const auto& [page, count] : it->second) n += count;
  return n;
}

Status Runtime::verify() const {
  Lock lock(mu_);
  return detail::verify(*state_);
}

}  // namespace pf::rt
