// The store's blob files (runtime/store.h, docs/store.md "On-disk layout" and "I/O path"):
// DIR/blobs/XX/<BlobKey::hex()>, one file per page blob, exactly page_bytes long, the page's
// bytes with its unfilled token slots zeroed.
//
// DESIGN
//  - write(): per blob, "<name>.tmp" is created, written with one large pwrite (O_DIRECT when
//    page_bytes and the buffer are 4 KiB aligned; a partial page or an unaligned buffer goes
//    through a per-thread aligned bounce buffer; buffered I/O where the file system refuses
//    O_DIRECT), fdatasync'd and renamed over <name>; then each fan-out directory touched is
//    fsync'd once. On return every blob written is durable under its final name.
//  - Nothing here knows about references: the store decides which blobs to write, keep and
//    remove (sweep()), and never writes one blob from two threads at once (a tmp name is
//    per blob).
//  - IoPool runs the per-blob work on a few persistent threads plus the calling one.
//  - Thread-safe: any number of threads may call write/read/remove/sweep at once for
//    different blobs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/page_format.h"
#include "base/status.h"
#include "runtime/store.h"

namespace pf::rt::store {

// A small fixed pool: run(n, fn) calls fn(0..n-1) on up to `threads` threads (the caller is
// one of them) and returns when every call has returned. Concurrent run() calls share the
// workers. fn must not throw.
class IoPool {
 public:
  explicit IoPool(std::size_t threads);
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  void run(std::size_t n, const std::function<void(std::size_t)>& fn);

 private:
  struct Job;
  void worker();
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<Job*> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// The blob file name's parse: BlobKey::hex()'s inverse; false for any other name.
bool parse_blob_name(std::string_view name, BlobKey* key);

class BlobFiles {
 public:
  // Creates DIR (= the store's blobs/ directory) when absent. A fan-out directory is made
  // (and DIR fsync'd) by the first write of a blob into it.
  static Result<std::unique_ptr<BlobFiles>> open(const std::string& dir, const Geometry& g,
                                                 std::size_t io_threads);

  std::string path(const BlobKey& key) const;
  // Writes every blob durably (see DESIGN); parallel. Returns one status per blob: ok when
  // that blob is durable under its final name, else kSystem naming it (its tmp file
  // removed). Blobs whose key appears twice must not be passed.
  std::vector<Status> write(std::span<const BlobWrite> blobs);
  // Reads blob `key`'s file into dst (page_bytes): kNotFound when there is none,
  // kDataCorrupt when its size is not page_bytes. Unchecked: the caller verifies digests.
  Status read(const BlobKey& key, std::byte* dst) const;
  // Unlinks blob `key`'s file; an absent file is fine.
  Status remove(const BlobKey& key) const;
  // One readdir of DIR and one per fan-out directory: removes every *.tmp, every name that
  // is not a blob name of its directory (or a fan-out directory in DIR), and every blob for
  // which keep(key) is false. Returns how many
  // files it removed and adds the bytes of those it kept to *kept_bytes.
  Result<std::size_t> sweep(const std::function<bool(const BlobKey&)>& keep,
                            std::uint64_t* kept_bytes);

  IoPool& pool() { return pool_; }
  // Whether writes currently use O_DIRECT (false after the file system refused it).
  bool direct_io() const;

 private:
  BlobFiles(std::string dir, const Geometry& g, std::size_t io_threads);
  Status write_one(const BlobWrite& blob) const;
  std::string dir_;
  Geometry g_;
  std::size_t page_bytes_;
  mutable std::atomic<bool> direct_;
  IoPool pool_;
};

}  // namespace pf::rt::store
