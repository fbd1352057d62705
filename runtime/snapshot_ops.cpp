// Snapshots, fork, checkout, refs: metadata operations. None of them copies page bytes or
// calls the backend; snapshot computes digests only for pages that have none yet.
#include <algorithm>

#include "runtime/state.h"
#include "runtime/tier.h"

namespace pf::rt::detail {

Status check_ref_name(std::string_view name) {
  if (name.empty() || name.size() > 255) {
    return PF_ERROR(Code::kInvalidArgument, "ref name must be 1..255 characters");
  }
  if (name.front() == '.' || name.front() == '/' || name.front() == '-') {
    return PF_ERROR(Code::kInvalidArgument, "ref name may not start with '.', '/' or '-'");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '/';
    if (!ok) {
      return PF_ERROR(Code::kInvalidArgument, "ref name '" + std::string(name) +
                                                  "' has a character outside [A-Za-z0-9._/-]");
    }
  }
  return Status::ok();
}

Result<const Snapshot*> resolve_snapshot(const State& s, std::string_view cid_or_ref) {
  std::string_view cid = cid_or_ref;
  if (!cid_or_ref.starts_with("sha256:")) {
    auto r = s.refs.find(cid_or_ref);
    if (r == s.refs.end()) {
      return PF_ERROR(Code::kNotFound, "unknown ref '" + std::string(cid_or_ref) + "'");
    }
    cid = r->second;
  }
  auto it = s.snapshots.find(cid);
  if (it == s.snapshots.end()) {
    return PF_ERROR(Code::kNotFound, "unknown CID '" + std::string(cid) + "'");
  }
  return &it->second;
}

SnapshotInfo info_of(const Snapshot& snap) {
  SnapshotInfo i;
  i.cid = snap.cid;
  i.name = snap.manifest.name;
  i.n_tokens = snap.n_tokens;
  i.n_pages = snap.manifest.pages.size();
  i.parents = snap.manifest.parents;
  i.ns = snap.manifest.ns;
  i.resident = snap.resident();
  i.durable = snap.durable;
  return i;
}

Result<SnapshotInfo> snapshot_of(State& s, const std::vector<PageId>& pages,
                                 const std::vector<Token>& tokens, std::vector<std::string> parents,
                                 std::string name, PageListPtr list, const Namespace& ns) {
  const std::uint32_t P = s.pt();
  std::vector<std::uint32_t> fills(pages.size(), P);
  if (!pages.empty()) fills.back() = fill_in_last_page(tokens.size(), P);
  PF_ASSIGN_OR_RETURN(std::vector<PageDigest> d, digests_for(s, pages, fills));

  Manifest m;
  m.geometry = s.pool->geometry();
  m.name = std::move(name);
  m.parents = std::move(parents);
  m.tokens = tokens;
  m.ns = ns;
  m.pages.reserve(pages.size());
  for (const PageDigest& pd : d) m.pages.push_back({pd.k.hex(), pd.v.hex()});
  LogicalSeq seq;
  seq.page_ixs.resize(pages.size());
  for (std::size_t i = 0; i < pages.size(); ++i) seq.page_ixs[i] = i;
  seq.fill_in_last_page = fill_in_last_page(tokens.size(), P);
  m.logical_seqs.push_back(std::move(seq));
  PF_ASSIGN_OR_RETURN(std::string json, canonical_json(m));
  std::string cid = cid_of(json);
  // A branch unchanged since the snapshot it descends from (same tokens and page digests;
  // same name or none given) snapshots to that very snapshot: snapshotting an identical
  // state twice gives one CID and one pin.
  if (m.parents.size() == 1 && !list) {
    auto p = s.snapshots.find(m.parents[0]);
    if (p != s.snapshots.end() && p->second.manifest.tokens == m.tokens &&
        p->second.manifest.pages == m.pages && p->second.manifest.ns == m.ns &&
        (m.name.empty() || m.name == p->second.manifest.name)) {
      cid = p->first;
    }
  }

  // Nothing can fail from here on: seal, keep the digests, pin.
  for (std::size_t i = 0; i < pages.size(); ++i) {
    s.pool->seal(pages[i]);
    PageMeta& meta = s.pool->meta(pages[i]);
    if (!meta.has_digest) {
      meta.has_digest = true;
      meta.digest_fill = fills[i];
      meta.k = d[i].k;
      meta.v = d[i].v;
    }
  }
  auto it = s.snapshots.find(cid);
  if (it != s.snapshots.end()) return info_of(it->second);
  Snapshot snap;
  snap.cid = cid;
  snap.json = std::move(json);
  snap.manifest = std::move(m);
  snap.list = list ? std::move(list) : make_flat_list(*s.pool, pages, tokens);
  snap.n_tokens = tokens.size();
  tier_touch(s, snap);
  SnapshotInfo info = info_of(snap);
  info.created = true;
  s.snapshots.emplace(cid, std::move(snap));
  tier_note_snapshot(s, cid);
  return info;
}

Result<SnapshotInfo> snapshot(State& s, BranchId id, std::string name) {
  // A snapshot's name is a ref, like a git branch name: it moves to the newest snapshot
  // taken under it. The snapshot it named before keeps its pin (only unpin drops one).
  if (!name.empty()) PF_TRY(check_ref_name(name));
  PF_ASSIGN_OR_RETURN(Branch * b, find_branch(s, id));
  PF_TRY(check_branch_intact(s, *b));
  const std::vector<PageId> pages = branch_pages(*b, s.pt());
  const std::vector<Token> tokens = branch_tokens(*b);
  PF_ASSIGN_OR_RETURN(SnapshotInfo info,
                      snapshot_of(s, pages, tokens, *b->parents, name, nullptr, b->ns));
  // Rebase the branch on the snapshot's flat list when it names the very same pages (it
  // does unless an identical snapshot made of other pages already existed): page ids do
  // not change, the tail's references and chain nodes are dropped, chains stay short.
  const Snapshot& snap = s.snapshots.at(info.cid);
  if (snap.list->pages() == pages) {
    PageListPtr keep = snap.list;
    release_tail(*s.pool, *b);
    b->base = std::move(keep);
    b->base_tokens = tokens.size();
  }
  b->parents = std::make_shared<const std::vector<std::string>>(1, info.cid);
  if (!name.empty()) {
    s.refs[name] = info.cid;
    tier_note_ref(s, name, &info.cid);
  }
  return info;
}

Result<ForkResult> fork(State& s, const Source& source, std::size_t n, LeaseId owner) {
  if (n < 1 || n > kMaxForkChildren) {
    return PF_ERROR(Code::kInvalidArgument, "fork: n = " + std::to_string(n) + " outside 1.." +
                                                std::to_string(kMaxForkChildren));
  }
  PF_TRY(check_branch_ids(s, n));
  ForkResult out;
  PageListPtr base;
  std::uint64_t base_tokens = 0;
  std::shared_ptr<const std::vector<std::string>> parents;
  Namespace ns{};
  if (const BranchId* id = std::get_if<BranchId>(&source)) {
    PF_ASSIGN_OR_RETURN(Branch * b, find_branch(s, *id));
    PF_TRY(check_branch_intact(s, *b));
    freeze_tail(*s.pool, *b);  // O(tail pages) state flips; children then share one list
    base = b->base;
    base_tokens = b->base_tokens;
    parents = b->parents;
    ns = b->ns;
  } else {
    PF_ASSIGN_OR_RETURN(const Snapshot* snap, resolve_snapshot(s, std::get<std::string>(source)));
    PF_TRY(check_snapshot_intact(s, *snap));
    tier_touch(s, *snap);
    base = snap->list;
    base_tokens = snap->n_tokens;
    parents = std::make_shared<const std::vector<std::string>>(1, snap->cid);
    ns = snap->manifest.ns;
    out.source = snap->cid;
  }
  out.branches.reserve(n);
  s.branches.reserve(s.branches.size() + n);
  for (std::size_t i = 0; i < n; ++i) {
    Branch& c = new_branch(s, owner);
    c.base = base;
    c.base_tokens = base_tokens;
    c.parents = parents;
    c.ns = ns;
    out.branches.push_back(c.id);
  }
  out.n_tokens = base_tokens;
  return out;
}

Result<BranchId> checkout(State& s, std::string_view cid_or_ref, LeaseId owner) {
  PF_ASSIGN_OR_RETURN(const Snapshot* snap, resolve_snapshot(s, cid_or_ref));
  PF_TRY(check_snapshot_intact(s, *snap));
  PF_TRY(check_branch_ids(s, 1));
  tier_touch(s, *snap);
  Branch& b = new_branch(s, owner);
  b.base = snap->list;
  b.base_tokens = snap->n_tokens;
  b.parents = std::make_shared<const std::vector<std::string>>(1, snap->cid);
  b.ns = snap->manifest.ns;
  return b.id;
}

}  // namespace pf::rt::detail
