// The loader of lazy page-ins (runtime/tier.h "Paging in"): reads the blobs of queued
// LoadJobs into their pool pages in page order, without the Runtime mutex, and lets waiters
// know page by page. Also the waits on loading pages that the Runtime's calls use.
#include <algorithm>
#include <cstdio>

#include "runtime/tier.h"

namespace pf::rt::detail {

namespace {

// A job's first batch is small (4 pages of 2 MiB), so that its first pages are readable
// within milliseconds of the checkout; the rest goes in batches of up to 1 GiB. Within a
// batch every page becomes readable as soon as it is read and checked (the store calls back
// per blob), so a batch's size delays no page; batches only bound what one read_blobs call
// holds, and each ends with a barrier (its slowest read), which large batches make rare.
constexpr std::size_t kFirstLoadBatchBytes = std::size_t{8} << 20;
constexpr std::size_t kLoadBatchBytes = std::size_t{1} << 30;

std::size_t batch_pages(std::size_t bytes, std::size_t page_bytes) {
  return std::max<std::size_t>(bytes / page_bytes, 1);
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
  const std::size_t page_bytes = s.pool->page_bytes();
  std::unique_lock<std::mutex> lock(t.runtime_mu);
  for (;;) {
    t.load_wake.wait(lock, [&] { return t.load_stop || !t.loads.empty(); });
    if (t.loads.empty()) return;  // stopping, and every load is done
    // Only this thread pops the queue, and a deque's push_back keeps references valid.
    LoadJob& job = t.loads.front();
    const std::size_t begin = job.next;
    const std::size_t n =
        std::min(job.keys.size() - begin,
                 batch_pages(begin == 0 ? kFirstLoadBatchBytes : kLoadBatchBytes, page_bytes));
    const std::string cid = job.cid;
    const std::span<const BlobKey> keys = std::span(job.keys).subspan(begin, n);
    const std::span<const PageId> pages = std::span(job.pages).subspan(begin, n);
    lock.unlock();
    if (s.options.load_hook_for_testing) s.options.load_hook_for_testing();
    // Each page is released to its readers the moment it is checked (io threads, under the
    // mutex); failures are handled once the batch is done.
    std::vector<std::size_t> failed_at;
    std::vector<Status> why;
    read_pages_from_store(s, t.store, keys, pages, [&](std::size_t i, const Status& st) {
      std::lock_guard<std::mutex> page_lock(t.runtime_mu);
      if (st.is_ok()) {
        s.pool->meta(pages[i]).loading = false;
        ++t.counters.pages_read;
        t.counters.bytes_read += page_bytes;
        t.loaded.notify_all();
      } else {
        failed_at.push_back(i);
        why.push_back(st);
      }
    }).ignore();  // every page's outcome came through the callback
    for (const Status& st : why) {
      std::fprintf(stderr, "processfork store: paging in %s: %s\n", cid.c_str(),
                   st.to_string().c_str());
    }
    for (const Status& st : why) {
      if (st.code() != Code::kDataCorrupt) continue;
      if (Status q = t.store.quarantine(cid, st.message()); !q.is_ok()) {
        std::fprintf(stderr, "processfork store: quarantining %s failed: %s\n", cid.c_str(),
                     q.to_string().c_str());
      }
      break;
    }
    lock.lock();
    if (!failed_at.empty()) {
      std::vector<PageId> failed;
      for (std::size_t i : failed_at) {
        failed.push_back(pages[i]);
        s.pool->meta(pages[i]).loading = false;
      }
      note_failures(s, cid, failed, why);
    }
    job.next = begin + n;
    if (job.next == job.keys.size()) {
      release_store_holds(s, job.held);
      t.loads.pop_front();
    }
    t.loaded.notify_all();
  }
}

}  // namespace pf::rt::detail
