// The tier's bookkeeping under the Runtime mutex: what the write-behind must write (notes),
// least-recently-used demotion of durable snapshots, and blob keys of manifests
// (runtime/tier.h).
#include <algorithm>
#include <cstdio>

#include "base/hex.h"
#include "runtime/tier.h"

namespace pf::rt::detail {

void TierDeleter::operator()(Tier* t) const {
  delete t;
}

void tier_enqueue(Tier& t, StoreJob job) {
  {
    std::lock_guard<std::mutex> lock(t.mu);
    t.queue.emplace_back(t.next_seq++, std::move(job));
  }
  t.wake.notify_one();
}

void tier_note_snapshot(State& s, const std::string& cid) {
  if (!s.tier) return;
  StoreJob job;
  job.kind = StoreJob::Kind::kSnapshot;
  job.cid = cid;
  tier_enqueue(*s.tier, std::move(job));
}

void tier_note_unpin(State& s, const std::string& cid) {
  if (!s.tier) return;
  StoreJob job;
  job.kind = StoreJob::Kind::kUnpin;
  job.cid = cid;
  tier_enqueue(*s.tier, std::move(job));
}

void tier_note_ref(State& s, const std::string& name, const std::string* cid) {
  if (!s.tier) return;
  StoreJob job;
  job.kind = cid != nullptr ? StoreJob::Kind::kSetRef : StoreJob::Kind::kDeleteRef;
  job.name = name;
  if (cid != nullptr) job.cid = *cid;
  tier_enqueue(*s.tier, std::move(job));
}

void tier_note_index_node(State& s, const PrefixIndex::Node& node) {
  if (!s.tier || !s.tier->record_prefix) return;
  const PageMeta& m = s.pool->meta(node.page);
  // Index pages are sealed full pages with digests (commit and publish digest them); one
  // without is not written rather than written unchecked.
  if (!m.has_digest || m.digest_fill != s.pt() || m.quarantined) return;
  StoredPrefix e;
  e.ns = node.ns;
  e.key = node.key;
  if (node.parent != nullptr && node.parent->parent != nullptr) e.parent = node.parent->key;
  e.tokens = node.tokens;
  e.blob = BlobKey{m.k, m.v, m.digest_fill};
  // One hold keeps the page from being freed or reused until its blob is written.
  s.pool->ref(node.page);
  ++s.holds[kStoreLease][node.page];
  StoreJob job;
  job.kind = StoreJob::Kind::kPrefix;
  job.prefix.push_back(std::move(e));
  job.pages.push_back(node.page);
  // Consecutive index pages of one call go out as one job (one store transaction).
  Tier& t = *s.tier;
  {
    std::lock_guard<std::mutex> lock(t.mu);
    if (!t.queue.empty() && t.queue.back().second.kind == StoreJob::Kind::kPrefix &&
        t.queue.back().second.pages.size() < 1024) {
      StoreJob& last = t.queue.back().second;
      last.prefix.push_back(std::move(job.prefix.front()));
      last.pages.push_back(job.pages.front());
      return;
    }
  }
  tier_enqueue(t, std::move(job));
}

void tier_touch(State& s, const Snapshot& snap) {
  if (s.tier) snap.last_used = ++s.tier->clock;
}

std::size_t demote_for(State& s, std::size_t n) {
  if (!s.tier) return 0;
  std::vector<Snapshot*> candidates;
  for (auto& [cid, snap] : s.snapshots) {
    if (snap.durable && snap.resident()) candidates.push_back(&snap);
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const Snapshot* a, const Snapshot* b) { return a->last_used < b->last_used; });
  const PagePool& pool = *s.pool;
  std::size_t demoted = 0;
  for (Snapshot* snap : candidates) {
    if (pool.free_mapped_pages() + pool.growable_pages() + s.index->evictable_pages() >= n) break;
    snap->list.reset();  // pages no branch, index entry or hold uses go back to the pool
    ++demoted;
  }
  s.tier->counters.snapshots_demoted += demoted;
  return demoted;
}

Result<std::vector<BlobKey>> manifest_blob_keys(const Manifest& m) {
  const std::uint32_t P = m.geometry.page_tokens;
  std::vector<std::uint32_t> fills(m.pages.size(), P);
  for (const LogicalSeq& seq : m.logical_seqs) {
    if (!seq.page_ixs.empty()) fills[seq.page_ixs.back()] = seq.fill_in_last_page;
  }
  std::vector<BlobKey> keys(m.pages.size());
  for (std::size_t i = 0; i < m.pages.size(); ++i) {
    if (!parse_hex(m.pages[i].k, keys[i].k.bytes.data(), 32) ||
        !parse_hex(m.pages[i].v, keys[i].v.bytes.data(), 32)) {
      return PF_ERROR(Code::kInvalidArgument,
                      "manifest page " + std::to_string(i) + " has a malformed digest");
    }
    keys[i].fill = fills[i];
  }
  return keys;
}

}  // namespace pf::rt::detail
