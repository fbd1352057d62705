// The store facade (runtime/store.h): the LMDB index (store_index.h) plus the blob files
// (store_blobs.h), and the bookkeeping that keeps them consistent.
//
// DESIGN (docs/store.md "Crash consistency" has the step-by-step argument)
//  - A "blobs" record exists exactly for blobs with at least one reference. A blob written by
//    write_blobs but not referenced yet is a durable file with no record; the store remembers
//    it in memory (held) so commit_manifest / put_prefix can reference it. After a crash or a
//    restart nothing remembers it and open() removes it.
//  - mu serializes every write transaction with the held/writing sets and with the unlinks
//    that follow a commit: a blob whose last reference goes is unlinked after the commit
//    while mu is still held, so no write_blobs call can see it "stored" in between.
//  - Holds: each write_blobs call holds each blob it wrote or found stored (a count per
//    blob); the next transaction that takes a reference to the blob releases one hold. A
//    held blob keeps its file even when its last reference goes, so a caller's
//    write_blobs-then-commit never loses a blob to another thread's remove in between.
//    A hold never released (no commit followed) lasts until the store is closed.
//  - find_prefix touches in memory (touches, under touch_mu, not mu: a lookup never
//    waits for a commit's fsync); the next write transaction writes them. A crash loses the
//    touches since the last write transaction: only LRU precision, never an entry.
//  - "meta" holds prefix_bytes, the bytes of blobs held by prefix entries only (what
//    trim_prefix may reclaim), updated in the transaction that changes it.
#include "runtime/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "base/unique_fd.h"
#include "runtime/fault_ahead.h"
#include "runtime/ids.h"
#include "runtime/manifest.h"
#include "runtime/page_digest.h"
#include "runtime/store_blobs.h"
#include "runtime/store_index.h"

namespace pf::rt {

using store::Db;
using store::Txn;

namespace {

constexpr std::size_t kMaxRefName = 256;

Status check_cid(std::string_view cid) {
  if (!is_cid(cid)) {
    return PF_ERROR(Code::kInvalidArgument,
                    "'" + std::string(cid.substr(0, 80)) + "' is not a CID (sha256:<64 hex>)");
  }
  return Status::ok();
}

Status check_blob_key(const BlobKey& key, const Geometry& g) {
  if (key.fill > g.page_tokens) {
    return PF_ERROR(Code::kInvalidArgument, "blob " + key.hex() + ": fill " +
                                                std::to_string(key.fill) + " exceeds the " +
                                                std::to_string(g.page_tokens) + " page tokens");
  }
  return Status::ok();
}

// A blob key and its buffer as write_blobs / read_blobs take them.
Status check_blob_arg(const BlobKey& key, const void* buffer, const Geometry& g,
                      std::string_view what) {
  PF_TRY(check_blob_key(key, g));
  if (buffer == nullptr) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::string(what) + ": blob " + key.hex() + " has no buffer");
  }
  return Status::ok();
}

// Zeroes the token slots [fill, page_tokens) of every block of the page at p.
void zero_unfilled(const Geometry& g, std::byte* p, std::uint32_t fill) {
  const std::size_t tail = std::size_t{g.page_tokens - fill} * g.token_bytes();
  if (tail == 0) return;
  for (std::uint32_t l = 0; l < g.layers; ++l) {
    for (Half h : {Half::kK, Half::kV}) std::memset(p + g.offset(l, h, fill), 0, tail);
  }
}

std::uint32_t random_epoch() {
  std::uint32_t r = 0;
  if (::getrandom(&r, sizeof(r), 0) != sizeof(r)) r = static_cast<std::uint32_t>(::getpid());
  return r % kMaxBootEpoch + 1;
}

// The status of a Result whose value the caller does not need.
template <typename T>
Status status_of(Result<T>&& r) {
  return r.is_ok() ? Status::ok() : r.take_status();
}

// The record under `key`, decoded; kDataCorrupt when another record names it and it is absent.
template <typename T>
Result<T> must_get(Txn& txn, Db db, std::string_view key, Result<T> (*decode)(std::string_view),
                   std::string_view what) {
  PF_ASSIGN_OR_RETURN(auto v, txn.get(db, key));
  if (!v) {
    return PF_ERROR(Code::kDataCorrupt, "store index: a record names a " + std::string(what) +
                                            " record that is absent");
  }
  return decode(*v);
}

Result<std::uint64_t> meta_u64(Txn& txn, std::string_view key, std::uint64_t absent) {
  PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kMeta, key));
  if (!v) return absent;
  return store::decode_u64_record(*v);
}

}  // namespace

struct Store::Impl {
  StoreOptions options;
  kernels::PageKernels* kernels = nullptr;
  std::size_t page_bytes = 0;
  UniqueFd lock_fd;
  std::unique_ptr<store::Index> index;
  std::unique_ptr<store::BlobFiles> blobs;

  std::mutex mu;  // write transactions, held, writing, post-commit unlinks
  std::condition_variable written_cv;
  // Blob key bytes -> holds (see DESIGN): keep the file though it may have no record.
  std::map<std::string, std::uint32_t> held;
  std::set<std::string> writing;  // blob key bytes being written by some write_blobs call

  std::mutex touch_mu;
  std::map<std::string, std::uint64_t> touches;  // prefix key -> last_use tick
  std::atomic<std::uint64_t> tick{0};            // the last tick given

  // What one write transaction did to blobs, applied after it commits.
  struct Mutation {
    std::set<std::string> taken;        // blobs that got a reference: release one hold
    std::vector<BlobKey> unreferenced;  // blobs whose last reference went: unlink
    std::uint64_t prefix_bytes = 0;
  };

  // Runs fn in one durable write transaction (with pending touches and the meta counters),
  // then the unlinks it asked for. Nothing changes when fn fails.
  Status mutate(const std::function<Status(Txn&, Mutation&)>& fn);
  Status flush_touches(Txn& txn);
  Status add_ref(Txn& txn, Mutation& m, const BlobKey& key, bool manifest);
  Status drop_ref(Txn& txn, Mutation& m, const BlobKey& key, bool manifest);
  Status remove_prefix_entry(Txn& txn, Mutation& m, std::string_view pk,
                             const store::PrefixRecord& rec);
  Result<std::size_t> trim(Txn& txn, Mutation& m);
  Result<Txn> read_txn() const { return Txn::begin(*index, false); }
  // The record under `key`, decoded; nullopt when absent or unreadable.
  template <typename T>
  std::optional<T> lookup(Db db, std::string_view key,
                          Result<T> (*decode)(std::string_view)) const {
    auto txn = read_txn();
    if (!txn.is_ok()) return std::nullopt;
    auto v = txn->get(db, key);
    if (!v.is_ok() || !*v) return std::nullopt;
    auto rec = decode(**v);
    if (!rec.is_ok()) return std::nullopt;
    return std::move(*rec);
  }
  // make(key, value) of every record of `db` in key order, those it gives nullopt for (a
  // record that does not decode) left out; empty when the index cannot be read.
  template <typename T, typename F>
  std::vector<T> list(Db db, const F& make) const {
    std::vector<T> out;
    auto txn = read_txn();
    if (!txn.is_ok()) return out;
    txn->for_each(db,
                  [&](std::string_view k, std::string_view v) {
                    if (std::optional<T> t = make(k, v)) out.push_back(std::move(*t));
                    return true;
                  })
        .ignore();
    return out;
  }
};

Status Store::Impl::mutate(const std::function<Status(Txn&, Mutation&)>& fn) {
  std::lock_guard lock(mu);
  PF_ASSIGN_OR_RETURN(Txn txn, Txn::begin(*index, true));
  Mutation m;
  PF_ASSIGN_OR_RETURN(m.prefix_bytes, meta_u64(txn, store::kMetaPrefixBytes, 0));
  PF_TRY(flush_touches(txn));
  PF_TRY(fn(txn, m));
  PF_TRY(txn.put(Db::kMeta, store::kMetaPrefixBytes, store::encode_u64_record(m.prefix_bytes)));
  PF_TRY(txn.put(Db::kMeta, store::kMetaPrefixTick, store::encode_u64_record(tick.load())));
  PF_TRY(txn.commit());
  for (const std::string& k : m.taken) {
    auto it = held.find(k);
    if (it != held.end() && --it->second == 0) held.erase(it);
  }
  // The transaction is committed: an unlink that fails leaves an unnamed file, which the
  // next open() removes; the call itself succeeded.
  for (const BlobKey& key : m.unreferenced) blobs->remove(key).ignore();
  return Status::ok();
}

Status Store::Impl::flush_touches(Txn& txn) {
  std::map<std::string, std::uint64_t> pending;
  {
    std::lock_guard lock(touch_mu);
    pending.swap(touches);
  }
  for (const auto& [pk, last_use] : pending) {
    PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kPrefix, pk));
    if (!v) continue;  // removed since it was found
    PF_ASSIGN_OR_RETURN(store::PrefixRecord rec, store::decode_prefix_record(*v));
    if (rec.last_use >= last_use) continue;
    PF_TRY(status_of(txn.del(Db::kPrefixLru, store::prefix_lru_key(rec.last_use, pk))));
    rec.last_use = last_use;
    PF_TRY(txn.put(Db::kPrefixLru, store::prefix_lru_key(last_use, pk), {}));
    PF_TRY(txn.put(Db::kPrefix, pk, store::encode_prefix_record(rec)));
  }
  return Status::ok();
}

Status Store::Impl::add_ref(Txn& txn, Mutation& m, const BlobKey& key, bool manifest) {
  PF_TRY(check_blob_key(key, options.geometry));
  const std::string kb = store::blob_key_bytes(key);
  PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kBlobs, kb));
  store::BlobRecord rec;
  if (v) {
    PF_ASSIGN_OR_RETURN(rec, store::decode_blob_record(*v));
  } else {
    auto dropped = std::find(m.unreferenced.begin(), m.unreferenced.end(), key);
    if (dropped != m.unreferenced.end()) {
      m.unreferenced.erase(dropped);  // unreferenced earlier in this transaction: still there
    } else if (!held.contains(kb)) {
      return PF_ERROR(Code::kNotFound,
                      "blob " + key.hex() + " is not stored (write_blobs it first)");
    }
    rec.bytes = page_bytes;
  }
  if (rec.prefix_only()) m.prefix_bytes -= rec.bytes;
  ++(manifest ? rec.manifest_refs : rec.prefix_refs);
  if (rec.prefix_only()) m.prefix_bytes += rec.bytes;
  m.taken.insert(kb);
  return txn.put(Db::kBlobs, kb, store::encode_blob_record(rec));
}

Status Store::Impl::drop_ref(Txn& txn, Mutation& m, const BlobKey& key, bool manifest) {
  const std::string kb = store::blob_key_bytes(key);
  PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kBlobs, kb));
  if (!v)
    return PF_ERROR(Code::kInternal,
                    "store: a record names blob " + key.hex() + ", which has none");
  PF_ASSIGN_OR_RETURN(store::BlobRecord rec, store::decode_blob_record(*v));
  std::uint64_t& refs = manifest ? rec.manifest_refs : rec.prefix_refs;
  if (refs == 0) {
    return PF_ERROR(Code::kInternal, "store: blob " + key.hex() + " reference count underflow");
  }
  if (rec.prefix_only()) m.prefix_bytes -= rec.bytes;
  --refs;
  if (rec.prefix_only()) m.prefix_bytes += rec.bytes;
  if (rec.manifest_refs == 0 && rec.prefix_refs == 0) {
    PF_TRY(status_of(txn.del(Db::kBlobs, kb)));
    if (!held.contains(kb)) m.unreferenced.push_back(key);
    return Status::ok();
  }
  return txn.put(Db::kBlobs, kb, store::encode_blob_record(rec));
}

Status Store::Impl::remove_prefix_entry(Txn& txn, Mutation& m, std::string_view pk,
                                        const store::PrefixRecord& rec) {
  PF_TRY(status_of(txn.del(Db::kPrefix, pk)));
  PF_TRY(status_of(txn.del(Db::kPrefixLru, store::prefix_lru_key(rec.last_use, pk))));
  return drop_ref(txn, m, rec.blob, /*manifest=*/false);
}

Result<std::size_t> Store::Impl::trim(Txn& txn, Mutation& m) {
  const std::uint64_t cap = options.prefix_capacity_bytes;
  if (cap == 0 || m.prefix_bytes <= cap) return std::size_t{0};
  // One pass in LRU order picks the victims: entries whose blob is held by prefix entries
  // only (an entry whose blob a manifest pins frees nothing and stays), counting a blob's
  // bytes as freed when its last prefix reference is picked.
  std::uint64_t bytes = m.prefix_bytes;
  std::map<std::string, std::uint64_t> left;  // blob key bytes -> prefix refs not yet picked
  std::vector<std::pair<std::string, store::PrefixRecord>> victims;
  // Picks the entry under LRU key `lru` when its blob is prefix-only; true to go on.
  auto visit = [&](std::string_view lru) -> Result<bool> {
    const std::string pk(lru.substr(8));
    PF_ASSIGN_OR_RETURN(store::PrefixRecord rec,
                        must_get(txn, Db::kPrefix, pk, store::decode_prefix_record, "prefix"));
    const std::string kb = store::blob_key_bytes(rec.blob);
    PF_ASSIGN_OR_RETURN(store::BlobRecord blob,
                        must_get(txn, Db::kBlobs, kb, store::decode_blob_record, "blob"));
    if (!blob.prefix_only()) return true;
    auto [it, fresh] = left.try_emplace(kb, blob.prefix_refs);
    if (--it->second == 0) bytes -= blob.bytes;
    victims.emplace_back(pk, std::move(rec));
    return bytes > cap;
  };
  Status err;
  PF_TRY(txn.for_each(Db::kPrefixLru, [&](std::string_view lru, std::string_view) {
    auto more = visit(lru);
    if (!more.is_ok()) err = more.take_status();
    return more.is_ok() && *more;
  }));
  PF_TRY(std::move(err));
  for (const auto& [pk, rec] : victims) PF_TRY(remove_prefix_entry(txn, m, pk, rec));
  return victims.size();
}

// --- open ---------------------------------------------------------------------------------

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

const std::string& Store::dir() const {
  return impl_->options.dir;
}
const Geometry& Store::geometry() const {
  return impl_->options.geometry;
}

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options,
                                           kernels::PageKernels& kernels) {
  PF_TRY(options.geometry.validate());
  if (options.dir.empty()) return PF_ERROR(Code::kInvalidArgument, "store: no directory given");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->kernels = &kernels;
  impl->page_bytes = options.geometry.page_bytes();
  const std::string& dir = options.dir;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return PF_ERRNO("store: mkdir " + dir);

  const std::string lock_path = dir + "/LOCK";
  impl->lock_fd.reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!impl->lock_fd.valid()) return PF_ERRNO("store: open " + lock_path);
  if (::flock(impl->lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return PF_ERROR(Code::kConflict, "store " + dir + " is open in another process (or Store)");
    }
    return PF_ERRNO("store: flock " + lock_path);
  }

  const std::string index_dir = dir + "/index";
  if (::mkdir(index_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return PF_ERRNO("store: mkdir " + index_dir);
  }
  PF_ASSIGN_OR_RETURN(impl->index, store::Index::open(index_dir, options.index_map_bytes));

  // Format and geometry: recorded by the first open, checked by every later one.
  {
    PF_ASSIGN_OR_RETURN(Txn txn, Txn::begin(*impl->index, true));
    PF_ASSIGN_OR_RETURN(auto format, txn.get(Db::kMeta, store::kMetaFormat));
    PF_ASSIGN_OR_RETURN(auto geometry, txn.get(Db::kMeta, store::kMetaGeometry));
    const std::string want = options.geometry.to_string();
    if (!format && !geometry) {
      PF_TRY(txn.put(Db::kMeta, store::kMetaFormat, store::encode_u64_record(kStoreFormatVersion)));
      PF_TRY(txn.put(Db::kMeta, store::kMetaGeometry, store::encode_text_record(want)));
      PF_TRY(txn.commit());
    } else {
      if (!format || !geometry) {
        return PF_ERROR(Code::kDataCorrupt, "store " + dir + ": meta lacks format or geometry");
      }
      PF_ASSIGN_OR_RETURN(std::uint64_t version, store::decode_u64_record(*format));
      if (version != kStoreFormatVersion) {
        return PF_ERROR(Code::kInvalidArgument,
                        "store " + dir + " has format version " + std::to_string(version) +
                            "; this build reads version " + std::to_string(kStoreFormatVersion));
      }
      PF_ASSIGN_OR_RETURN(std::string have, store::decode_text_record(*geometry));
      if (have != want) {
        return PF_ERROR(Code::kInvalidArgument,
                        "store " + dir + " holds geometry " + have + ", not " + want);
      }
    }
  }

  const std::size_t io_threads =
      options.io_threads
          ? options.io_threads
          : std::min<std::size_t>(8, std::max(1u, 4 * std::thread::hardware_concurrency()));
  PF_ASSIGN_OR_RETURN(impl->blobs,
                      store::BlobFiles::open(dir + "/blobs", options.geometry, io_threads));

  // Crash leftovers: tmp files and blob files no record names.
  {
    PF_ASSIGN_OR_RETURN(Txn txn, impl->read_txn());
    Status err;
    std::uint64_t kept_bytes = 0;
    PF_ASSIGN_OR_RETURN(std::size_t removed, impl->blobs->sweep(
                                                 [&](const BlobKey& key) {
                                                   auto v = txn.get(Db::kBlobs,
                                                                    store::blob_key_bytes(key));
                                                   if (!v.is_ok()) {
                                                     if (err.is_ok()) err = v.take_status();
                                                     return true;  // keep what we cannot judge
                                                   }
                                                   return v->has_value();
                                                 },
                                                 &kept_bytes));
    PF_TRY(std::move(err));
    (void)removed;
    PF_ASSIGN_OR_RETURN(std::uint64_t tick, meta_u64(txn, store::kMetaPrefixTick, 0));
    impl->tick.store(tick);
  }
  if (int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);  // the directories and LOCK created above
    ::close(fd);
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

// --- boot epoch ---------------------------------------------------------------------------

Result<std::uint32_t> Store::next_boot_epoch() {
  std::uint32_t epoch = 0;
  PF_TRY(impl_->mutate([&](Txn& txn, Impl::Mutation&) -> Status {
    PF_ASSIGN_OR_RETURN(std::uint64_t last, meta_u64(txn, store::kMetaBootEpoch, 0));
    // A fresh store starts at a random epoch: a daemon that ran before the store existed
    // (ipc/boot_epoch.h's counter file) may have used small ones.
    epoch = last == 0 ? random_epoch()
                      : (last >= kMaxBootEpoch ? 1 : static_cast<std::uint32_t>(last) + 1);
    return txn.put(Db::kMeta, store::kMetaBootEpoch, store::encode_u64_record(epoch));
  }));
  return epoch;
}

// --- blobs --------------------------------------------------------------------------------

bool Store::has_blob(const BlobKey& key) const {
  const std::string kb = store::blob_key_bytes(key);
  std::lock_guard lock(impl_->mu);
  if (impl_->held.contains(kb)) return true;
  auto txn = impl_->read_txn();
  if (!txn.is_ok()) return false;
  auto v = txn->get(Db::kBlobs, kb);
  return v.is_ok() && v->has_value();
}

Result<std::size_t> Store::write_blobs(std::span<const BlobWrite> blobs) {
  const Geometry& g = impl_->options.geometry;
  for (const BlobWrite& b : blobs) PF_TRY(check_blob_arg(b.key, b.bytes, g, "write_blobs"));
  std::unique_lock lock(impl_->mu);
  // Holds blob b when stored; false when it is not (nor being written).
  auto hold_if_stored = [&](Txn& txn, const std::string& kb) -> Result<bool> {
    auto h = impl_->held.find(kb);
    if (h != impl_->held.end()) {
      ++h->second;
      return true;
    }
    PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kBlobs, kb));
    if (!v) return false;
    impl_->held.emplace(kb, 1);
    return true;
  };
  std::vector<const BlobWrite*> pending;
  {
    std::set<std::string> seen;
    for (const BlobWrite& b : blobs) {
      if (seen.insert(store::blob_key_bytes(b.key)).second) pending.push_back(&b);
    }
  }
  Status result;
  std::size_t written = 0;
  // Each pass holds what is stored, writes what nobody is writing, and waits for blobs
  // another call is writing; those are checked again in the next pass (that write may have
  // failed, or its blob may have been removed since: then this call writes it).
  while (!pending.empty()) {
    std::vector<BlobWrite> to_write;
    std::vector<std::string> to_write_kb;
    std::vector<const BlobWrite*> others;  // being written by another call: wait for it
    {
      PF_ASSIGN_OR_RETURN(Txn txn, impl_->read_txn());
      for (const BlobWrite* b : pending) {
        std::string kb = store::blob_key_bytes(b->key);
        if (impl_->writing.contains(kb)) {
          others.push_back(b);
          continue;
        }
        PF_ASSIGN_OR_RETURN(bool stored, hold_if_stored(txn, kb));
        if (stored) continue;
        impl_->writing.insert(kb);
        to_write.push_back(*b);
        to_write_kb.push_back(std::move(kb));
      }
    }
    lock.unlock();
    std::vector<Status> status = impl_->blobs->write(to_write);
    lock.lock();
    for (std::size_t i = 0; i < to_write.size(); ++i) {
      impl_->writing.erase(to_write_kb[i]);
      if (status[i].is_ok()) {
        ++impl_->held[to_write_kb[i]];
        ++written;
      } else if (result.is_ok()) {
        result = std::move(status[i]);
      }
    }
    impl_->written_cv.notify_all();
    for (const BlobWrite* b : others) {
      const std::string kb = store::blob_key_bytes(b->key);
      impl_->written_cv.wait(lock, [&] { return !impl_->writing.contains(kb); });
    }
    pending = std::move(others);
  }
  if (!result.is_ok()) return result;
  return written;
}

Status Store::read_blobs(std::span<const BlobRead> blobs,
                         const std::function<void(std::size_t, const Status&)>& on_each) {
  const Geometry& g = impl_->options.geometry;
  for (const BlobRead& b : blobs) PF_TRY(check_blob_arg(b.key, b.dst, g, "read_blobs"));
  std::vector<Status> status(blobs.size());
  // Fresh destinations (a restarted daemon's pool) are faulted in ahead of the readers, so
  // that their faults overlap reads in flight (runtime/fault_ahead.h).
  std::atomic<std::size_t> claimed{0};
  std::optional<FaultAhead> fault_ahead;
  if (blobs.size() > 1) {
    std::vector<std::byte*> dsts;
    dsts.reserve(blobs.size());
    for (const BlobRead& b : blobs) dsts.push_back(b.dst);
    fault_ahead.emplace(std::move(dsts), g.page_bytes(), claimed);
  }
  impl_->blobs->pool().run(blobs.size(), [&](std::size_t i) {
    // The pool claims indices in order, so every index up to i is claimed now: raise the
    // count the fault-ahead skips below to i + 1 (threads may get here out of order).
    std::size_t seen = claimed.load();
    while (seen < i + 1 && !claimed.compare_exchange_weak(seen, i + 1)) {
    }
    const BlobRead& b = blobs[i];
    Status s = impl_->blobs->read(b.key, b.dst);
    if (s.is_ok()) {
      zero_unfilled(g, b.dst, b.key.fill);
      const PageId page = 0;
      PageDigest d;
      s = digest_pages(*impl_->kernels, g, b.dst, {&page, 1}, {&b.key.fill, 1}, {&d, 1});
      if (s.is_ok() && (d.k != b.key.k || d.v != b.key.v)) {
        s = PF_ERROR(Code::kDataCorrupt, "store: blob " + b.key.hex() +
                                             " failed its digest check (file " +
                                             impl_->blobs->path(b.key) + ")");
      }
    }
    if (on_each) on_each(i, s);
    status[i] = std::move(s);
  });
  for (Status& s : status) PF_TRY(std::move(s));
  return Status::ok();
}

// --- manifests and refs -------------------------------------------------------------------

Status Store::commit_manifest(std::string_view cid, std::string_view json,
                              std::span<const BlobKey> blobs) {
  PF_TRY(check_cid(cid));
  if (cid_of(json) != cid) {
    return PF_ERROR(Code::kInvalidArgument,
                    "commit_manifest: " + std::string(cid) + " is not the CID of the bytes given");
  }
  return impl_->mutate([&](Txn& txn, Impl::Mutation& m) -> Status {
    PF_ASSIGN_OR_RETURN(auto existing, txn.get(Db::kManifests, cid));
    if (existing) return Status::ok();
    for (const BlobKey& key : blobs) PF_TRY(impl_->add_ref(txn, m, key, /*manifest=*/true));
    return txn.put(Db::kManifests, cid, store::encode_manifest_record(blobs, json));
  });
}

Status Store::remove_manifest(std::string_view cid) {
  PF_TRY(check_cid(cid));
  return impl_->mutate([&](Txn& txn, Impl::Mutation& m) -> Status {
    PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kManifests, cid));
    if (!v) return PF_ERROR(Code::kNotFound, "no stored manifest " + std::string(cid));
    PF_ASSIGN_OR_RETURN(store::ManifestRecord rec, store::decode_manifest_record(*v));
    std::string named_by;
    PF_TRY(txn.for_each(Db::kRefs, [&](std::string_view name, std::string_view value) {
      auto target = store::decode_text_record(value);
      if (target.is_ok() && *target == cid) named_by = name;
      return named_by.empty();
    }));
    if (!named_by.empty()) {
      return PF_ERROR(Code::kConflict,
                      "manifest " + std::string(cid) + " is named by ref '" + named_by + "'");
    }
    for (const BlobKey& key : rec.blobs) PF_TRY(impl_->drop_ref(txn, m, key, /*manifest=*/true));
    PF_TRY(status_of(txn.del(Db::kManifests, cid)));
    return status_of(txn.del(Db::kQuarantine, cid));
  });
}

bool Store::has_manifest(std::string_view cid) const {
  auto txn = impl_->read_txn();
  if (!txn.is_ok() || cid.empty()) return false;
  auto v = txn->get(Db::kManifests, cid);
  return v.is_ok() && v->has_value();
}

Result<std::string> Store::manifest(std::string_view cid) const {
  PF_TRY(check_cid(cid));
  PF_ASSIGN_OR_RETURN(Txn txn, impl_->read_txn());
  PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kManifests, cid));
  if (!v) return PF_ERROR(Code::kNotFound, "no stored manifest " + std::string(cid));
  PF_ASSIGN_OR_RETURN(store::ManifestRecord rec, store::decode_manifest_record(*v));
  if (cid_of(rec.json) != cid) {
    return PF_ERROR(Code::kDataCorrupt,
                    "stored manifest " + std::string(cid) + " does not hash to its CID");
  }
  return std::move(rec.json);
}

std::vector<StoredManifest> Store::manifests() const {
  return impl_->list<StoredManifest>(Db::kManifests, [](std::string_view cid, std::string_view v) {
    auto rec = store::decode_manifest_record(v);
    return rec.is_ok() ? std::optional<StoredManifest>({std::string(cid), std::move(rec->json)})
                       : std::nullopt;
  });
}

Status Store::set_ref(std::string_view name, std::string_view cid) {
  if (name.empty() || name.size() > kMaxRefName) {
    return PF_ERROR(Code::kInvalidArgument,
                    "a ref name must be 1.." + std::to_string(kMaxRefName) + " bytes");
  }
  PF_TRY(check_cid(cid));
  return impl_->mutate([&](Txn& txn, Impl::Mutation&) -> Status {
    PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kManifests, cid));
    if (!v) {
      return PF_ERROR(Code::kNotFound,
                      "ref '" + std::string(name) + "': no stored manifest " + std::string(cid));
    }
    return txn.put(Db::kRefs, name, store::encode_text_record(cid));
  });
}

Status Store::delete_ref(std::string_view name) {
  if (name.empty() || name.size() > kMaxRefName) {
    return PF_ERROR(Code::kNotFound, "no ref '" + std::string(name.substr(0, 80)) + "'");
  }
  return impl_->mutate([&](Txn& txn, Impl::Mutation&) -> Status {
    PF_ASSIGN_OR_RETURN(bool found, txn.del(Db::kRefs, name));
    if (!found) return PF_ERROR(Code::kNotFound, "no ref '" + std::string(name) + "'");
    return Status::ok();
  });
}

std::vector<StoredRef> Store::refs() const {
  return impl_->list<StoredRef>(Db::kRefs, [](std::string_view name, std::string_view v) {
    auto cid = store::decode_text_record(v);
    return cid.is_ok() ? std::optional<StoredRef>({std::string(name), std::move(*cid)})
                       : std::nullopt;
  });
}

// --- prefix entries -----------------------------------------------------------------------

Status Store::put_prefix(std::span<const StoredPrefix> entries) {
  for (const StoredPrefix& e : entries) {
    PF_TRY(check_blob_key(e.blob, impl_->options.geometry));
    if (e.tokens.size() > impl_->options.geometry.page_tokens) {
      return PF_ERROR(Code::kInvalidArgument, "put_prefix: an entry holds " +
                                                  std::to_string(e.tokens.size()) +
                                                  " tokens, more than a page");
    }
  }
  return impl_->mutate([&](Txn& txn, Impl::Mutation& m) -> Status {
    for (const StoredPrefix& e : entries) {
      const std::string pk = store::prefix_key(e.ns, e.key);
      PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kPrefix, pk));
      if (v) continue;  // the first entry for a key stays
      store::PrefixRecord rec{e.parent, e.tokens, e.blob, impl_->tick.fetch_add(1) + 1};
      PF_TRY(impl_->add_ref(txn, m, e.blob, /*manifest=*/false));
      PF_TRY(txn.put(Db::kPrefix, pk, store::encode_prefix_record(rec)));
      PF_TRY(txn.put(Db::kPrefixLru, store::prefix_lru_key(rec.last_use, pk), {}));
    }
    return status_of(impl_->trim(txn, m));
  });
}

std::optional<StoredPrefix> Store::find_prefix(const Namespace& ns, const Sha256& key) {
  const std::string pk = store::prefix_key(ns, key);
  std::optional<store::PrefixRecord> rec =
      impl_->lookup(Db::kPrefix, pk, store::decode_prefix_record);
  if (!rec) return std::nullopt;
  {
    std::lock_guard lock(impl_->touch_mu);
    impl_->touches[pk] = impl_->tick.fetch_add(1) + 1;
  }
  return StoredPrefix{ns, key, rec->parent, std::move(rec->tokens), rec->blob};
}

Result<std::size_t> Store::trim_prefix() {
  std::size_t removed = 0;
  PF_TRY(impl_->mutate([&](Txn& txn, Impl::Mutation& m) -> Status {
    PF_ASSIGN_OR_RETURN(removed, impl_->trim(txn, m));
    return Status::ok();
  }));
  return removed;
}

Status Store::remove_prefix(const Namespace& ns, const Sha256& key) {
  const std::string pk = store::prefix_key(ns, key);
  return impl_->mutate([&](Txn& txn, Impl::Mutation& m) -> Status {
    PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kPrefix, pk));
    if (!v) return PF_ERROR(Code::kNotFound, "no stored prefix entry " + to_hex(key));
    PF_ASSIGN_OR_RETURN(store::PrefixRecord rec, store::decode_prefix_record(*v));
    return impl_->remove_prefix_entry(txn, m, pk, rec);
  });
}

// --- quarantine ---------------------------------------------------------------------------

Status Store::quarantine(std::string_view cid, std::string_view reason) {
  PF_TRY(check_cid(cid));
  return impl_->mutate([&](Txn& txn, Impl::Mutation&) -> Status {
    PF_ASSIGN_OR_RETURN(auto v, txn.get(Db::kManifests, cid));
    if (!v) return PF_ERROR(Code::kNotFound, "no stored manifest " + std::string(cid));
    return txn.put(Db::kQuarantine, cid, store::encode_text_record(reason));
  });
}

std::optional<std::string> Store::quarantined(std::string_view cid) const {
  if (cid.empty()) return std::nullopt;
  return impl_->lookup(Db::kQuarantine, cid, store::decode_text_record);
}

StoreStats Store::stats() const {
  StoreStats s;
  std::lock_guard lock(impl_->mu);
  auto txn = impl_->read_txn();
  if (!txn.is_ok()) return s;
  auto count = [&](Db db) {
    auto n = txn->count(db);
    return n.is_ok() ? *n : 0;
  };
  s.blobs = count(Db::kBlobs);
  for (const auto& [kb, holds] : impl_->held) {
    auto v = txn->get(Db::kBlobs, kb);
    if (v.is_ok() && !*v) ++s.blobs;  // held and not referenced: a file with no record
  }
  s.blob_bytes = s.blobs * impl_->page_bytes;
  s.manifests = count(Db::kManifests);
  s.refs = count(Db::kRefs);
  s.prefix_entries = count(Db::kPrefix);
  s.quarantined = count(Db::kQuarantine);
  return s;
}

}  // namespace pf::rt
