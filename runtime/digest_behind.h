// DigestBehind: the content digests of the pages publish_pages seals, computed right after
// the call returns, by one background thread (docs/runtime.md "Keyed pages").
// Internal to the runtime; not part of the public API.
//
// DESIGN
//  - publish_pages seals its pages and records them in the prefix index under the Runtime
//    mutex without their digests, and queues them here with their seal_serial. A queued
//    page is not held: it stays evictable like any cached page (a full pool never fails
//    for want of a digest). A sealed page's bytes never change, so its digest is the same
//    whenever it is computed.
//  - The thread takes a batch; under the Runtime mutex it drops entries whose page is no
//    longer that sealing (freed, or reused: state or seal_serial changed) or has its digest
//    already, and counts itself in State::unlocked_digests (gc then unmaps no chunk, so
//    every page stays readable). It digests the rest with the pool's kernels outside every
//    lock, then, under the Runtime mutex, stores each digest whose page is still the same
//    sealing without a digest (a page evicted and reused meanwhile was read mid-change:
//    its digest is dropped), hands indexed pages to the store's write-behind
//    (tier_note_index_node). digest_missing and digests_for compute on demand what is still
//    pending: a snapshot never waits for this thread.
//  - Cores: the thread digests on itself alone (HostThreadPool::SerialScope), one core, so
//    the engines' copies keep the others. Backpressure: publish_pages returns only once at
//    most RuntimeOptions::digest_backlog_bytes of pages are pending, and while it waits
//    (without the Runtime mutex) it digests queued pages itself, a few at a time; so do
//    wait_digests and gc. Under a sustained load every waiting caller adds a core, and the
//    backlog stays bounded.
//  - Lock order: Runtime mutex, then DigestBehind::mu. The thread never holds mu while it
//    takes the Runtime mutex.
//  - Stop (Runtime's destructor, before the store's write-behind stops): every queued page
//    gets its digest first (on every core: nothing else runs then), so a clean stop loses no
//    prefix page.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "runtime/state.h"

namespace pf::rt::detail {

struct PendingDigest {
  PageId page = 0;
  std::uint64_t seal_serial = 0;  // PageMeta::seal_serial when queued
  Namespace ns{};                 // where the page is indexed (for the store's write-behind)
  Sha256 key{};
};

struct DigestBehind {
  DigestBehind(std::mutex& runtime_mu, State& state) : runtime_mu(runtime_mu), state(state) {}

  std::mutex& runtime_mu;  // the Runtime's mutex (the thread takes it)
  State& state;
  // Tests only: runs on the background thread (not on waiters that help) after a batch is
  // digested and before its digests are stored, with no lock held.
  std::function<void()> hook_for_testing;

  // Under mu:
  std::mutex mu;
  std::condition_variable wake;      // pages arrived, or stop
  std::condition_variable progress;  // a batch was stored
  std::deque<PendingDigest> queue;
  std::size_t in_flight = 0;   // pages of the batches being digested (thread and helpers)
  std::uint64_t queued = 0;    // entries ever queued
  std::uint64_t finished = 0;  // entries ever taken and done with (stored or skipped)
  bool stop = false;
  std::thread worker;  // started by the first enqueue
};

// Under the Runtime mutex: queue a sealed page indexed under (ns, key). No-op for a page that
// has its digest.
void digest_behind_enqueue(State& s, const Namespace& ns, const Sha256& key, PageId page);
// Pages queued or being digested.
std::size_t digest_behind_pending(DigestBehind& d);
// NOT under the Runtime mutex: blocks while more than max_pages are pending, digesting
// queued pages on the calling thread meanwhile.
void digest_behind_wait_below(DigestBehind& d, std::size_t max_pages);
// NOT under the Runtime mutex: blocks until every page queued before the call is done with
// (terminates under continuous publishing, unlike waiting for an empty queue), digesting
// queued pages on the calling thread meanwhile.
void digest_behind_wait_queued(DigestBehind& d);
// NOT under the Runtime mutex: digests every pending page, then ends the thread.
void digest_behind_stop(DigestBehind& d);

}  // namespace pf::rt::detail
