// The invariant verifier (DESIGN §2). Runtime::verify() runs it under the runtime mutex;
// with RuntimeOptions::verify_each_op (default in debug builds) it runs after every
// mutating call. It checks, and reports the first violation as kInternal:
//  - every page's refcount equals the references recomputed from every holder: each live
//    PageList (one per page it lists, reached from branches and snapshots; their number
//    must equal the pool's live-list count), each branch tail, each prefix-index node, each
//    lease hold (keyed pages); no underflow was ever recorded;
//  - states: free <=> refs 0 <=> in the free set; exclusive pages are held by exactly one
//    branch tail or one lease hold (alloc_pages) and nothing else; pages in lists,
//    snapshots and the index are sealed; in_index flags match the index's nodes;
//  - branch and chain shapes (tail covers exactly the pages after the base, page counts
//    match token counts), the index's chained keys (token nodes), key-only nodes under
//    their key, and the key map leading to every node exactly once;
//  - with verify_digests: every stored digest matches its page's bytes now, and every
//    snapshot's manifest digests match its pages; every CID is the SHA-256 of its bytes.
#pragma once

#include "base/status.h"

namespace pf::rt::detail {
struct State;
Status verify(const State& s);
}  // namespace pf::rt::detail
