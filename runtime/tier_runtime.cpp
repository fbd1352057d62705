// The Runtime's store calls (runtime.h "the durable store"; runtime/tier.h): attaching a
// store, waiting for durability, paging snapshots and prefix pages in. Disk I/O always runs
// with the Runtime mutex released; the pages it fills are held under kStoreLease meanwhile.
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "runtime/tier.h"

namespace pf::rt {

using Lock = std::lock_guard<std::mutex>;
using detail::kStoreLease;

namespace {

struct BlobKeyHash {
  std::size_t operator()(const BlobKey& k) const noexcept {
    std::size_t h;
    std::memcpy(&h, k.k.bytes.data(), sizeof h);
    return h ^ k.fill;
  }
};

// Resident sealed pages by content (digests at their fill), for reuse by paging in.
std::unordered_map<BlobKey, PageId, BlobKeyHash> resident_by_content(const detail::State& s) {
  std::unordered_map<BlobKey, PageId, BlobKeyHash> out;
  const PagePool& pool = *s.pool;
  for (PageId p = 0; p < pool.mapped_pages(); ++p) {
    const PageMeta& m = pool.meta(p);
    if (m.state == PageState::kSealed && m.has_digest && !m.quarantined) {
      out.emplace(BlobKey{m.k, m.v, m.digest_fill}, p);
    }
  }
  return out;
}

// Pages for `keys`, under the mutex. With `reuse`, a resident page with the same content
// serves (held), and a key repeated in `keys` gets the page of its first occurrence (held
// there only); every other key gets a fresh page to read into (allocated: held once).
// `fresh[i]` says which keys must be read; `held` lists every hold taken.
Result<std::vector<PageId>> plan_pages(detail::State& s, std::span<const BlobKey> keys, bool reuse,
                                       std::vector<bool>* fresh, std::vector<PageId>* held) {
  std::unordered_map<BlobKey, PageId, BlobKeyHash> resident;
  if (reuse) resident = resident_by_content(s);
  std::unordered_map<BlobKey, std::size_t, BlobKeyHash> first_of;
  std::size_t missing = 0;
  fresh->assign(keys.size(), false);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (resident.count(keys[i]) != 0) continue;
    if (!reuse || first_of.emplace(keys[i], i).second) {
      (*fresh)[i] = true;
      ++missing;
    }
  }
  PF_TRY(detail::ensure_free_pages(s, missing));
  PF_ASSIGN_OR_RETURN(std::vector<PageId> got, s.pool->allocate(missing));
  std::vector<PageId> pages(keys.size());
  std::size_t next = 0;
  auto& holds = s.holds[kStoreLease];
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if ((*fresh)[i]) {
      pages[i] = got[next++];
      ++holds[pages[i]];  // allocate() gave the one reference this hold stands for
      held->push_back(pages[i]);
    } else if (auto r = resident.find(keys[i]); r != resident.end()) {
      pages[i] = r->second;
      s.pool->ref(pages[i]);
      ++holds[pages[i]];
      held->push_back(pages[i]);
    } else {
      pages[i] = pages[first_of.at(keys[i])];  // a repeat: its first occurrence's hold covers it
    }
  }
  return pages;
}

// The fresh pages of a plan and their keys (what must be read).
void fresh_of(std::span<const BlobKey> keys, std::span<const PageId> pages,
              const std::vector<bool>& fresh, std::vector<BlobKey>* fkeys,
              std::vector<PageId>* fpages) {
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!fresh[i]) continue;
    fkeys->push_back(keys[i]);
    fpages->push_back(pages[i]);
  }
}

// Under the mutex: the fresh pages read from the store become sealed pages with the digests
// they were checked against.
void seal_read_pages(detail::State& s, std::span<const BlobKey> fkeys,
                     std::span<const PageId> fpages) {
  for (std::size_t i = 0; i < fpages.size(); ++i) {
    s.pool->seal(fpages[i]);
    PageMeta& m = s.pool->meta(fpages[i]);
    m.has_digest = true;
    m.digest_fill = fkeys[i].fill;
    m.k = fkeys[i].k;
    m.v = fkeys[i].v;
  }
}

}  // namespace

Status Runtime::attach_store(Store& store) {
  if (!(store.geometry() == geometry())) {
    return PF_ERROR(Code::kInvalidArgument, "store " + store.dir() + " holds geometry " +
                                                store.geometry().to_string() + ", pool has " +
                                                geometry().to_string());
  }
  // Read and check everything before changing anything.
  std::vector<detail::Snapshot> loaded;
  for (StoredManifest& sm : store.manifests()) {
    Result<ParsedManifest> pm = parse_manifest(sm.json);
    if (!pm.is_ok() || pm->cid != sm.cid) {
      return PF_ERROR(
          Code::kInvalidArgument,
          "store " + store.dir() + ": manifest " + sm.cid + " is malformed" +
              (pm.is_ok() ? " (its bytes name " + pm->cid + ")" : ": " + pm.status().message()));
    }
    if (!(pm->manifest.geometry == geometry())) {
      return PF_ERROR(Code::kInvalidArgument, "store " + store.dir() + ": manifest " + sm.cid +
                                                  " has geometry " +
                                                  pm->manifest.geometry.to_string());
    }
    detail::Snapshot snap;
    snap.cid = sm.cid;
    snap.json = std::move(sm.json);
    snap.manifest = std::move(pm->manifest);
    snap.n_tokens = snap.manifest.tokens.size();
    snap.durable = true;
    if (auto why = store.quarantined(snap.cid)) snap.quarantine = *why;
    loaded.push_back(std::move(snap));
  }
  std::vector<StoredRef> refs = store.refs();

  Lock lock(mu_);
  detail::State& s = *state_;
  if (s.tier) return PF_ERROR(Code::kConflict, "a store is attached already");
  if (!s.snapshots.empty() || !s.refs.empty() || !s.branches.empty()) {
    return PF_ERROR(Code::kConflict,
                    "attach_store needs a runtime without snapshots, refs or "
                    "branches");
  }
  for (detail::Snapshot& snap : loaded) {
    std::string cid = snap.cid;
    s.snapshots.emplace(std::move(cid), std::move(snap));
  }
  for (StoredRef& r : refs) {
    if (s.snapshots.count(r.cid) != 0) s.refs[r.name] = r.cid;
  }
  s.tier.reset(new detail::Tier(store, mu_, s));
  s.index->set_on_new_node(
      [&s](const PrefixIndex::Node& node) { detail::tier_note_index_node(s, node); });
  s.tier->writer = std::thread([t = s.tier.get()] { detail::tier_writer_loop(*t); });
  s.tier->loader = std::thread([t = s.tier.get()] { detail::tier_loader_loop(*t); });
  tier_attached_.store(true, std::memory_order_release);
  return Status::ok();
}

Status Runtime::wait_durable(std::string_view cid_or_ref) {
  std::string cid;
  detail::Tier* t = nullptr;
  {
    Lock lock(mu_);
    PF_ASSIGN_OR_RETURN(const detail::Snapshot* snap,
                        detail::resolve_snapshot(*state_, cid_or_ref));
    if (!state_->tier) {
      return PF_ERROR(Code::kUnavailable,
                      "no store: the daemon runs without --store, so "
                      "snapshots last until it stops");
    }
    if (snap->durable) return Status::ok();
    cid = snap->cid;
    t = state_->tier.get();
  }
  {
    // Every job queued so far (the snapshot's among them) is done once done_seq reaches
    // the last one handed out.
    std::unique_lock<std::mutex> lock(t->mu);
    const std::uint64_t target = t->next_seq - 1;
    t->done.wait(lock, [&] { return t->done_seq >= target; });
    if (auto f = t->failed.find(cid); f != t->failed.end()) return f->second;
  }
  Lock lock(mu_);
  auto it = state_->snapshots.find(cid);
  if (it == state_->snapshots.end()) {
    return PF_ERROR(Code::kNotFound, "snapshot " + cid + " was unpinned before it was durable");
  }
  if (!it->second.durable) {
    return PF_ERROR(Code::kInternal, "snapshot " + cid + " is not durable after its write");
  }
  return Status::ok();
}

Status Runtime::page_in(std::string_view cid_or_ref) {
  detail::State& s = *state_;
  Lock lock(mu_);
  PF_ASSIGN_OR_RETURN(const detail::Snapshot* found, detail::resolve_snapshot(s, cid_or_ref));
  if (found->resident()) return Status::ok();
  if (!found->quarantine.empty()) {
    return PF_ERROR(Code::kDataCorrupt,
                    "snapshot " + found->cid + " is quarantined: " + found->quarantine);
  }
  detail::Snapshot& snap = s.snapshots.find(found->cid)->second;
  PF_ASSIGN_OR_RETURN(std::vector<BlobKey> keys, detail::manifest_blob_keys(snap.manifest));
  std::vector<bool> fresh;
  std::vector<PageId> held;
  PF_ASSIGN_OR_RETURN(std::vector<PageId> pages,
                      plan_pages(s, keys, /*reuse=*/true, &fresh, &held));
  detail::LoadJob job;
  job.cid = snap.cid;
  fresh_of(keys, pages, fresh, &job.keys, &job.pages);
  // The fresh pages are sealed now with the digests their blobs must match, and flagged
  // loading until the loader has read and checked them.
  seal_read_pages(s, job.keys, job.pages);
  for (PageId p : job.pages) s.pool->meta(p).loading = true;
  snap.list = make_flat_list(*s.pool, pages, snap.manifest.tokens);
  detail::tier_touch(s, snap);
  ++s.tier->counters.snapshots_paged_in;
  if (job.keys.empty()) {
    detail::release_store_holds(s, held);
    return Status::ok();
  }
  job.held = std::move(held);
  s.tier->loads.push_back(std::move(job));
  s.tier->load_wake.notify_one();
  return Status::ok();
}

void Runtime::promote_prefix(const Namespace& ns, std::span<const Sha256> keys) {
  detail::State& s = *state_;
  std::size_t resident = 0;
  {
    Lock lock(mu_);
    if (!s.tier) return;
    while (resident < keys.size() && s.index->contains(ns, keys[resident])) ++resident;
  }
  if (resident == keys.size()) return;
  Store& store = s.tier->store;
  std::vector<BlobKey> blobs;
  for (std::size_t i = resident; i < keys.size(); ++i) {
    std::optional<StoredPrefix> e = store.find_prefix(ns, keys[i]);
    if (!e || e->blob.fill != geometry().page_tokens) break;
    blobs.push_back(e->blob);
  }
  if (blobs.empty()) return;
  // Every promoted key gets a page of its own: an index node holds its page alone.
  std::vector<BlobKey> fkeys;
  std::vector<PageId> pages, fpages, held;
  {
    Lock lock(mu_);
    std::vector<bool> fresh;
    Result<std::vector<PageId>> planned = plan_pages(s, blobs, /*reuse=*/false, &fresh, &held);
    if (!planned.is_ok()) return;  // no room: the hit is shorter, nothing changed
    pages = std::move(*planned);
    fresh_of(blobs, pages, fresh, &fkeys, &fpages);
  }
  Status read = read_pages_from_store(s, store, fkeys, fpages);
  std::size_t usable = blobs.size();
  if (!read.is_ok()) {
    // Promote nothing; a corrupt entry is dropped so the next lookup recomputes that page.
    std::fprintf(stderr, "processfork store: prefix page-in failed: %s\n",
                 read.to_string().c_str());
    usable = 0;
    if (read.code() == Code::kDataCorrupt) {
      for (std::size_t i = 0; i < blobs.size(); ++i) {
        if (read.message().find(blobs[i].hex()) != std::string::npos) {
          store.remove_prefix(ns, keys[resident + i]).ignore();
        }
      }
    }
  }
  Lock lock(mu_);
  if (usable > 0) {
    seal_read_pages(s, fkeys, fpages);
    s.tier->counters.pages_read += fpages.size();
    s.tier->counters.bytes_read += fpages.size() * s.pool->page_bytes();
    std::vector<bool> added;
    s.tier->record_prefix = false;  // these pages come from the store: nothing to write
    s.index->publish(ns, keys.subspan(resident, usable), std::span(pages).first(usable),
                     resident > 0 ? &keys[resident - 1] : nullptr, &added);
    s.tier->record_prefix = true;
    s.tier->counters.prefix_pages_promoted += usable;
  }
  detail::release_store_holds(s, held);
}

StoreStatus Runtime::store_status() const {
  StoreStatus out;
  const detail::Tier* t = nullptr;
  {
    Lock lock(mu_);
    if (!state_->tier) return out;
    t = state_->tier.get();
    out.attached = true;
    out.dir = t->store.dir();
    out.counters = t->counters;
    for (const detail::LoadJob& job : t->loads) {
      out.counters.pages_loading += job.keys.size() - job.next;
    }
    for (const auto& [cid, snap] : state_->snapshots) {
      out.snapshots_resident += snap.resident() ? 1 : 0;
      out.snapshots_durable += snap.durable ? 1 : 0;
    }
  }
  {
    std::lock_guard<std::mutex> lock(t->mu);
    out.counters.jobs_queued = t->next_seq - 1 - t->done_seq;
    out.counters.jobs_failed = t->failures;
  }
  out.store = t->store.stats();
  return out;
}

}  // namespace pf::rt
