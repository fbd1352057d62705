// The loader of lazy page-ins (runtime/tier.h "Paging in"): reads the blobs of queued
// LoadJobs into their pool pages in page order, without the Runtime mutex, and lets waiters
// know batch by batch. Also the waits on loading pages that the Runtime's calls use.
#include <algorithm>
#include <cstdio>

#include "runtime/tier.h"

namespace pf::rt::detail {

namespace {

// Bytes read per batch: enough for the store's io threads to stream (16 × 2 MiB pages), and
// small enough that the first pages of a checkout are readable within tens of milliseconds.
constexpr std::size_t kLoadBatchBytes = std::size_t{32} << 20;
constexpr std::size_t kMaxLoadBatchPages = 1024;

// Reads a batch; on failure reads the pages one by one to tell which failed. ok[i] says
// whether pages[i] now holds its blob's checked bytes; `why` gets each failure.
std::vector<bool> read_batch(State& s, Store& store, std::span<const BlobKey> keys,
                             std::span<const PageId> pages, std::vector<Status>* why) {
  std::vector<bool> ok(keys.size(), true);
  if (read_pages_from_store(s, store, keys, pages).is_ok()) return ok;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    Status st = read_pages_from_store(s, store, keys.subspan(i, 1), pages.subspan(i, 1));
    if (st.is_ok()) continue;
    ok[i] = false;
    why->push_back(std::move(st));
  }
  return ok;
}

// Under the mutex: a failed page is quarantined (never handed out again; waiters get
// kDataCorrupt). The snapshot is quarantined for corrupt bytes; after another failure (a
// missing file, an I/O error) it is paged out again so that the next use reads afresh.
void note_failures(State& s, const std::string& cid, std::span<const PageId> failed,
                   const std::vector<Status>& why) {
  for (std::size_t i = 0; i < failed.size(); ++i) {
    PageMeta& m = s.pool->meta(failed[i]);
    m.load_failed = true;
    s.pool->quarantine(failed[i]);
    s.tier->load_errors[failed[i]] = "paging in snapshot " + cid + ": " + why[i].message();
  }
  s.tier->counters.pages_load_failed += failed.size();
  auto it = s.snapshots.find(cid);
  if (it == s.snapshots.end()) return;
  const bool corrupt = std::any_of(
      why.begin(), why.end(), [](const Status& st) { return st.code() == Code::kDataCorrupt; });
  if (corrupt) {
    for (const Status& st : why) {
      if (st.code() == Code::kDataCorrupt) {
        it->second.quarantine = st.message();
        break;
      }
    }
  } else if (it->second.resident()) {
    const auto& pages = it->second.list->pages();
    if (std::find(pages.begin(), pages.end(), failed.front()) != pages.end()) {
      it->second.list.reset();
    }
  }
}

}  // namespace

bool any_loading(const State& s, std::span<const PageId> pages) {
  if (!s.tier) return false;
  return std::any_of(pages.begin(), pages.end(), [&](PageId p) { return s.pool->meta(p).loading; });
}

Status check_loaded(State& s, std::span<const PageId> pages) {
  if (!any_loading(s, pages)) return Status::ok();
  s.load_blocked.clear();
  for (PageId p : pages) {
    if (s.pool->meta(p).loading) s.load_blocked.push_back(p);
  }
  return PF_ERROR(Code::kUnavailable, "pool page " + std::to_string(s.load_blocked.front()) +
                                          " is still being paged in from the store");
}

Status wait_loaded(Tier& t, std::unique_lock<std::mutex>& lock, std::span<const PageId> pages) {
  State& s = t.state;
  if (any_loading(s, pages)) {
    ++t.counters.load_waits;
    t.loaded.wait(lock, [&] { return !any_loading(s, pages); });
  }
  for (PageId p : pages) {
    if (s.pool->meta(p).load_failed) return load_failure(t, p, "pool page " + std::to_string(p));
  }
  return Status::ok();
}

Status load_failure(const Tier& t, PageId page, std::string_view what) {
  auto it = t.load_errors.find(page);
  return PF_ERROR(Code::kDataCorrupt,
                  std::string(what) + " could not be read from the store (" +
                      (it != t.load_errors.end() ? it->second : std::string("unknown error")) +
                      "); the page is quarantined");
}

bool cid_loading(const Tier& t, std::string_view cid) {
  return std::any_of(t.loads.begin(), t.loads.end(),
                     [&](const LoadJob& j) { return j.cid == cid; });
}

void tier_loader_loop(Tier& t) {
  State& s = t.state;
  const std::size_t batch =
      std::clamp<std::size_t>(kLoadBatchBytes / s.pool->page_bytes(), 1, kMaxLoadBatchPages);
  std::unique_lock<std::mutex> lock(t.runtime_mu);
  for (;;) {
    t.load_wake.wait(lock, [&] { return t.load_stop || !t.loads.empty(); });
    if (t.loads.empty()) return;  // stopping, and every load is done
    // Only this thread pops the queue, and a deque's push_back keeps references valid.
    LoadJob& job = t.loads.front();
    const std::size_t begin = job.next;
    const std::size_t end = std::min(job.keys.size(), begin + batch);
    const std::string cid = job.cid;
    const std::span<const BlobKey> keys = std::span(job.keys).subspan(begin, end - begin);
    const std::span<const PageId> pages = std::span(job.pages).subspan(begin, end - begin);
    lock.unlock();
    if (s.options.load_hook_for_testing) s.options.load_hook_for_testing();
    std::vector<Status> why;
    const std::vector<bool> ok = read_batch(s, t.store, keys, pages, &why);
    for (const Status& st : why) {
      std::fprintf(stderr, "processfork store: paging in %s: %s\n", cid.c_str(),
                   st.to_string().c_str());
    }
    const bool corrupt = std::any_of(
        why.begin(), why.end(), [](const Status& st) { return st.code() == Code::kDataCorrupt; });
    if (corrupt) {
      for (const Status& st : why) {
        if (st.code() != Code::kDataCorrupt) continue;
        if (Status q = t.store.quarantine(cid, st.message()); !q.is_ok()) {
          std::fprintf(stderr, "processfork store: quarantining %s failed: %s\n", cid.c_str(),
                       q.to_string().c_str());
        }
        break;
      }
    }
    lock.lock();
    std::vector<PageId> failed;
    for (std::size_t i = 0; i < pages.size(); ++i) {
      s.pool->meta(pages[i]).loading = false;
      if (!ok[i]) failed.push_back(pages[i]);
    }
    const std::size_t read = pages.size() - failed.size();
    t.counters.pages_read += read;
    t.counters.bytes_read += read * s.pool->page_bytes();
    if (!failed.empty()) note_failures(s, cid, failed, why);
    job.next = end;
    if (job.next == job.keys.size()) {
      release_store_holds(s, job.held);
      t.loads.pop_front();
    }
    t.loaded.notify_all();
  }
}

}  // namespace pf::rt::detail
