// The digests of published keyed pages, behind publish_pages (runtime/digest_behind.h).
#include "runtime/digest_behind.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <optional>

#include "kernels/host_thread_pool.h"
#include "runtime/page_digest.h"
#include "runtime/tier.h"

namespace pf::rt::detail {

void DigestBehindDeleter::operator()(DigestBehind* d) const {
  delete d;
}

namespace {

// Pages per batch: up to 16 MiB of them (at least one): the Runtime mutex is taken once per
// batch, not per page, and a store's write-behind gets the first pages soon.
std::size_t batch_pages(const State& s) {
  return std::max<std::size_t>(1, (std::size_t{16} << 20) / s.pool->page_bytes());
}

// Whether `e` still names the sealing it was queued for, without a digest (under the
// Runtime mutex).
bool still_pending(const State& s, const PendingDigest& e) {
  if (!s.pool->valid(e.page)) return false;
  const PageMeta& m = s.pool->meta(e.page);
  return m.state == PageState::kSealed && m.seal_serial == e.seal_serial && !m.has_digest;
}

// Digests `batch` without any lock, then stores the digests under the Runtime mutex.
void digest_batch(DigestBehind& d, std::vector<PendingDigest> batch, bool background) {
  State& s = d.state;
  const std::uint32_t P = s.pt();
  {
    std::lock_guard<std::mutex> lock(d.runtime_mu);
    std::erase_if(batch, [&](const PendingDigest& e) { return !still_pending(s, e); });
    if (batch.empty()) return;
    ++s.unlocked_digests;  // gc unmaps no chunk while pages are read
  }
  {
    std::vector<PageId> pages;
    pages.reserve(batch.size());
    for (const PendingDigest& e : batch) pages.push_back(e.page);
    std::vector<std::uint32_t> fills(pages.size(), P);
    std::vector<PageDigest> digests(pages.size());
    // The pool's base, geometry and kernels never change; the mapping stays.
    const Status st =
        digest_pages(*s.kernels, s.pool->geometry(), s.pool->base(), pages, fills, digests);
    if (background && d.hook_for_testing) d.hook_for_testing();
    std::lock_guard<std::mutex> lock(d.runtime_mu);
    --s.unlocked_digests;
    if (!st.is_ok()) {
      // The pages stay without digests: whoever needs one computes it (digests_for).
      std::fprintf(stderr, "processfork: digesting %zu published pages failed: %s\n", pages.size(),
                   st.to_string().c_str());
    }
    for (std::size_t i = 0; st.is_ok() && i < batch.size(); ++i) {
      if (!still_pending(s, batch[i])) continue;  // evicted, reused or digested meanwhile
      PageMeta& m = s.pool->meta(pages[i]);
      m.has_digest = true;
      m.digest_fill = P;
      m.k = digests[i].k;
      m.v = digests[i].v;
      if (!m.in_index) continue;
      const PrefixIndex::Node* node = s.index->find(batch[i].ns, batch[i].key);
      if (node != nullptr && node->page == pages[i]) tier_note_index_node(s, *node);
    }
  }
}

// Under d.mu: moves up to max entries from the queue's front into a batch (in flight).
std::vector<PendingDigest> take_batch(DigestBehind& d, std::size_t max) {
  const std::size_t n = std::min(d.queue.size(), max);
  const auto end = d.queue.begin() + static_cast<std::ptrdiff_t>(n);
  std::vector<PendingDigest> batch(std::make_move_iterator(d.queue.begin()),
                                   std::make_move_iterator(end));
  d.queue.erase(d.queue.begin(), end);
  d.in_flight += n;
  return batch;
}

// Not under d.mu: digests a taken batch on this thread alone (one core: the engine's copies
// run on the others; every core once the runtime is stopping) and accounts for it.
void run_batch(DigestBehind& d, std::vector<PendingDigest> batch, bool background) {
  const std::size_t n = batch.size();
  bool stopping = false;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    stopping = d.stop;
  }
  {
    // Once the runtime is ending nothing else runs: drain with every core.
    std::optional<kernels::HostThreadPool::SerialScope> one_core;
    if (!stopping) one_core.emplace();
    digest_batch(d, std::move(batch), background);
  }
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.in_flight -= n;
    d.finished += n;
  }
  d.progress.notify_all();
}

void digest_loop(DigestBehind& d) {
  const std::size_t max_batch = batch_pages(d.state);
  for (;;) {
    std::vector<PendingDigest> batch;
    {
      std::unique_lock<std::mutex> lock(d.mu);
      d.wake.wait(lock, [&] { return d.stop || !d.queue.empty(); });
      if (d.queue.empty()) return;  // stopped, and nothing is left
      batch = take_batch(d, max_batch);
    }
    run_batch(d, std::move(batch), /*background=*/true);
  }
}

// A waiter's share: pages per batch it digests itself while it waits (small, so it returns
// soon after the condition holds).
constexpr std::size_t kHelperBatchPages = 4;

// Blocks until done() holds (under d.mu), digesting queued pages on this thread meanwhile.
template <typename Done>
void wait_helping(DigestBehind& d, Done done) {
  std::unique_lock<std::mutex> lock(d.mu);
  while (!done()) {
    if (d.queue.empty()) {
      d.progress.wait(lock);
      continue;
    }
    std::vector<PendingDigest> batch = take_batch(d, kHelperBatchPages);
    lock.unlock();
    run_batch(d, std::move(batch), /*background=*/false);
    lock.lock();
  }
}

}  // namespace

void digest_behind_enqueue(State& s, const Namespace& ns, const Sha256& key, PageId page) {
  const PageMeta& m = s.pool->meta(page);
  if (m.has_digest) return;
  DigestBehind& d = *s.digests;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.queue.push_back({page, m.seal_serial, ns, key});
    ++d.queued;
    if (!d.worker.joinable()) d.worker = std::thread([&d] { digest_loop(d); });
  }
  d.wake.notify_one();
}

std::size_t digest_behind_pending(DigestBehind& d) {
  std::lock_guard<std::mutex> lock(d.mu);
  return d.queue.size() + d.in_flight;
}

void digest_behind_wait_below(DigestBehind& d, std::size_t max_pages) {
  wait_helping(d, [&] { return d.queue.size() + d.in_flight <= max_pages; });
}

void digest_behind_wait_queued(DigestBehind& d) {
  std::uint64_t target = 0;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    target = d.queued;
  }
  wait_helping(d, [&] { return d.finished >= target; });
}

void digest_behind_stop(DigestBehind& d) {
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.stop = true;
  }
  d.wake.notify_all();
  if (d.worker.joinable()) d.worker.join();
}

}  // namespace pf::rt::detail
