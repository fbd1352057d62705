// The write-behind thread (runtime/tier.h): runs StoreJobs in order, with disk I/O outside
// the Runtime mutex, and the page transfers between pool pages and store blobs that paging
// in shares with it.
#include <cstdio>
#include <cstring>

#include "runtime/tier.h"

namespace pf::rt::detail {

namespace {

bool host_pool(const State& s) {
  return s.kernels->name() == "host";
}

}  // namespace

Result<std::size_t> write_pages_to_store(State& s, Store& store, std::span<const BlobKey> keys,
                                         std::span<const PageId> pages) {
  const std::size_t page_bytes = s.pool->page_bytes();
  // Every blob goes to write_blobs, stored ones too: it skips those and holds them all until
  // the commit that names them (runtime/store.h), so none can vanish in between.
  std::vector<BlobWrite> writes;
  std::vector<std::byte> staging;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    writes.push_back({keys[i], s.pool->page_ptr(pages[i])});
  }
  if (writes.empty()) return std::size_t{0};
  if (!host_pool(s)) {
    // Device pages: copy them to host memory first (the store reads and writes host memory).
    staging.resize(writes.size() * page_bytes);
    std::vector<kernels::CopyOp> ops(writes.size());
    for (std::size_t j = 0; j < writes.size(); ++j) {
      ops[j] = {writes[j].bytes, staging.data() + j * page_bytes, page_bytes};
      writes[j].bytes = staging.data() + j * page_bytes;
    }
    PF_TRY(s.kernels->copy_batch(ops));
  }
  return store.write_blobs(writes);
}

Status read_pages_from_store(State& s, Store& store, std::span<const BlobKey> keys,
                             std::span<const PageId> pages,
                             const std::function<void(std::size_t, const Status&)>& on_each) {
  const std::size_t page_bytes = s.pool->page_bytes();
  std::vector<BlobRead> reads(keys.size());
  std::vector<std::byte> staging;
  if (!host_pool(s)) staging.resize(keys.size() * page_bytes);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    reads[i] = {keys[i],
                staging.empty() ? s.pool->page_ptr(pages[i]) : staging.data() + i * page_bytes};
  }
  if (staging.empty()) return store.read_blobs(reads, on_each);
  // Device pool: every blob to host staging (per-blob outcomes kept), then one copy batch of
  // the good ones.
  std::vector<Status> each(keys.size());
  Status read = store.read_blobs(reads, [&](std::size_t i, const Status& st) { each[i] = st; });
  std::vector<kernels::CopyOp> ops;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (each[i].is_ok()) {
      ops.push_back({staging.data() + i * page_bytes, s.pool->page_ptr(pages[i]), page_bytes});
    }
  }
  Status copied = s.kernels->copy_batch(ops);
  if (on_each) {
    for (std::size_t i = 0; i < keys.size(); ++i) on_each(i, each[i].is_ok() ? copied : each[i]);
  }
  PF_TRY(std::move(read));
  return copied;
}

void release_store_holds(State& s, std::span<const PageId> pages) {
  if (pages.empty()) return;
  // Holds taken by this tier are released exactly once; a failure here is a bug.
  if (Status st = release_pages(s, pages, kStoreLease); !st.is_ok()) {
    std::fprintf(stderr, "processfork store: releasing write holds failed: %s\n",
                 st.to_string().c_str());
  }
}

namespace {

// Under the Runtime mutex.
void count_written(State& s, Result<std::size_t>& written) {
  if (!written.is_ok()) return;
  s.tier->counters.blobs_written += *written;
  s.tier->counters.bytes_written += *written * s.pool->page_bytes();
}

// A new snapshot: its blobs, then its manifest; marks it durable.
Status run_snapshot_job(Tier& t, const std::string& cid) {
  State& s = t.state;
  std::vector<PageId> pages;
  std::vector<BlobKey> keys;
  std::string json;
  {
    std::unique_lock<std::mutex> lock(t.runtime_mu);
    auto it = s.snapshots.find(cid);
    // Unpinned before its turn (its unpin job follows), paged out (only durable ones are),
    // or written already: nothing to do.
    if (it == s.snapshots.end() || it->second.durable || !it->second.resident()) {
      return Status::ok();
    }
    PF_ASSIGN_OR_RETURN(keys, manifest_blob_keys(it->second.manifest));
    pages = it->second.list->pages();
    json = it->second.json;
    for (PageId p : pages) {
      s.pool->ref(p);
      ++s.holds[kStoreLease][p];
    }
    // Pages of a lazy page-in are written only once read (their blobs are stored already,
    // so write_blobs skips them; this wait keeps that an optimisation, not a requirement).
    if (Status st = wait_loaded(t, lock, pages); !st.is_ok()) {
      release_store_holds(s, pages);
      return st;
    }
  }
  Result<std::size_t> written = write_pages_to_store(s, t.store, keys, pages);
  Status st = written.is_ok() ? t.store.commit_manifest(cid, json, keys) : written.status();
  std::lock_guard<std::mutex> lock(t.runtime_mu);
  release_store_holds(s, pages);
  count_written(s, written);
  if (st.is_ok()) {
    if (auto it = s.snapshots.find(cid); it != s.snapshots.end()) it->second.durable = true;
  }
  return st;
}

Status run_prefix_job(Tier& t, const StoreJob& job) {
  State& s = t.state;
  std::vector<BlobKey> keys;
  keys.reserve(job.prefix.size());
  for (const StoredPrefix& e : job.prefix) keys.push_back(e.blob);
  {
    std::unique_lock<std::mutex> lock(t.runtime_mu);
    if (Status st = wait_loaded(t, lock, job.pages); !st.is_ok()) {
      release_store_holds(s, job.pages);
      return st;
    }
  }
  Result<std::size_t> written = write_pages_to_store(s, t.store, keys, job.pages);
  Status st = written.is_ok() ? t.store.put_prefix(job.prefix) : written.status();
  std::lock_guard<std::mutex> lock(t.runtime_mu);
  release_store_holds(s, job.pages);
  count_written(s, written);
  return st;
}

Status run_job(Tier& t, const StoreJob& job) {
  switch (job.kind) {
    case StoreJob::Kind::kSnapshot:
      return run_snapshot_job(t, job.cid);
    case StoreJob::Kind::kPrefix:
      return run_prefix_job(t, job);
    case StoreJob::Kind::kUnpin: {
      {
        // Its blobs stay until a lazy page-in of it has read them.
        std::unique_lock<std::mutex> lock(t.runtime_mu);
        t.loaded.wait(lock, [&] { return !cid_loading(t, job.cid); });
      }
      Status st = t.store.remove_manifest(job.cid);
      return st.code() == Code::kNotFound ? Status::ok() : st;  // never made durable
    }
    case StoreJob::Kind::kSetRef:
      return t.store.set_ref(job.name, job.cid);
    case StoreJob::Kind::kDeleteRef: {
      Status st = t.store.delete_ref(job.name);
      return st.code() == Code::kNotFound ? Status::ok() : st;
    }
  }
  return PF_ERROR(Code::kInternal, "unknown store job");
}

}  // namespace

void tier_writer_loop(Tier& t) {
  for (;;) {
    std::pair<std::uint64_t, StoreJob> item;
    {
      std::unique_lock<std::mutex> lock(t.mu);
      t.wake.wait(lock, [&] { return t.stop || !t.queue.empty(); });
      if (t.queue.empty()) return;  // stop, and everything queued is written
      item = std::move(t.queue.front());
      t.queue.pop_front();
    }
    Status st = run_job(t, item.second);
    if (!st.is_ok()) {
      std::fprintf(stderr, "processfork store: write-behind failed: %s\n", st.to_string().c_str());
    }
    {
      std::lock_guard<std::mutex> lock(t.mu);
      if (!st.is_ok()) {
        ++t.failures;
        if (item.second.kind == StoreJob::Kind::kSnapshot) t.failed[item.second.cid] = st;
      } else if (item.second.kind == StoreJob::Kind::kSnapshot) {
        t.failed.erase(item.second.cid);
      }
      t.done_seq = item.first;
    }
    t.done.notify_all();
  }
}

}  // namespace pf::rt::detail
