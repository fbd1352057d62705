// The invariant verifier (DESIGN §2), in two parts that Runtime uses differently
// (runtime.h, docs/runtime.md "Verification and quarantine"):
//  - verify_structure: invariants only a bug in ProcessFork can break. With
//    RuntimeOptions::verify_each_op it runs after every mutating call; a violation stops
//    the runtime from changing state any further.
//  - find_corrupt_pages: sealed pages whose bytes no longer match their digests — damage
//    from outside (a client writing through its mapping, bad memory). With verify_each_op
//    and verify_digests it runs before every mutating call, and the pages it finds are
//    quarantined rather than failing anything.
// verify_structure checks, and reports the first violation as kInternal:
//  - every page's refcount equals the references recomputed from every holder: each live
//    PageList (one per page it lists, reached from branches and snapshots; their number
//    must equal the pool's live-list count), each branch tail, each prefix-index node, each
//    lease hold (keyed pages); no underflow was ever recorded;
//  - states: free <=> refs 0 <=> in the free set; exclusive pages are held by exactly one
//    branch tail or one lease hold (alloc_pages) and nothing else; pages in lists,
//    snapshots and the index are sealed; in_index flags match the index's nodes;
//  - branch and chain shapes (tail covers exactly the pages after the base, page counts
//    match token counts), the index's chained keys (token nodes), key-only nodes under
//    their key, and the key map leading to every node exactly once; every CID is the
//    SHA-256 of its bytes;
//  - quarantine: flagged pages are sealed (held) or kQuarantined (refs 0, outside the free
//    set, no index flag or digest), and the pool's count matches.
// find_corrupt_pages re-digests every sealed page with a stored digest and every
// snapshot's pages, skipping pages already quarantined.
#pragma once

#include <vector>

#include "base/status.h"
#include "runtime/types.h"

namespace pf::rt::detail {
struct State;
Status verify_structure(const State& s);
// Pages not yet quarantined whose bytes fail a digest check, ascending. An error only when
// the digest kernel fails.
Result<std::vector<PageId>> find_corrupt_pages(const State& s);
// Runtime::verify(): verify_structure, then (with verify_digests) kDataCorrupt naming the
// first corrupt page that is not quarantined yet.
Status verify(const State& s);
}  // namespace pf::rt::detail
