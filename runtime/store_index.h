// The store's metadata index (runtime/store.h, docs/store.md "Record encodings"): an LMDB
// environment with one named database per record kind, an RAII transaction, and the binary
// encodings of the records.
//
// DESIGN
//  - Index owns the environment (MDB_NOTLS: a read transaction is not tied to its thread;
//    durable commits: no MDB_NOSYNC / MDB_NOMETASYNC). One Index per store directory per
//    process; the store's LOCK file keeps other processes out.
//  - Txn is one LMDB transaction; its destructor aborts it unless commit() succeeded. Values
//    returned by get()/for_each() point into the map and stay valid until the transaction
//    ends or (in a write transaction) the next put/del.
//  - Every record value starts with a version byte (kRecordVersion); integers are fixed-width
//    little-endian. A decoder answers kDataCorrupt for a record it cannot read (wrong
//    version, truncated, trailing bytes), never guesses.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "runtime/store.h"

struct MDB_env;
struct MDB_txn;

namespace pf::rt::store {

inline constexpr std::uint8_t kRecordVersion = 1;

enum class Db : unsigned {
  kMeta = 0,    // "meta": "format", "geometry", "boot_epoch", "prefix_tick", "prefix_bytes"
  kBlobs,       // "blobs": BlobKey -> BlobRecord (only blobs with a reference have one)
  kManifests,   // "manifests": CID -> ManifestRecord
  kRefs,        // "refs": name -> CID
  kPrefix,      // "prefix": ns || key -> PrefixRecord
  kPrefixLru,   // "prefix_lru": big-endian last_use || ns || key -> "" (LRU order)
  kQuarantine,  // "quarantine": CID -> reason
  kCount,
};

// Meta keys.
inline constexpr std::string_view kMetaFormat = "format";           // u64
inline constexpr std::string_view kMetaGeometry = "geometry";       // Geometry::to_string()
inline constexpr std::string_view kMetaBootEpoch = "boot_epoch";    // u64, the last given
inline constexpr std::string_view kMetaPrefixTick = "prefix_tick";  // u64, the last tick used
inline constexpr std::string_view kMetaPrefixBytes =
    "prefix_bytes";  // u64: blobs held by prefix entries only

// --- encodings ----------------------------------------------------------------------------

// Appends fixed-width little-endian fields.
class Encoder {
 public:
  Encoder& u8(std::uint8_t v);
  Encoder& u32(std::uint32_t v);
  Encoder& u64(std::uint64_t v);
  Encoder& bytes(const void* data, std::size_t n);
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// Reads fields back; once a read runs past the end, ok() is false and reads give zeros.
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  std::uint8_t u8();
  std::uint32_t u32();
  std::uint64_t u64();
  // n bytes (nullptr, and not ok, when fewer remain).
  const std::uint8_t* bytes(std::size_t n);
  std::string_view rest();
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }
  std::size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

// k (32) || v (32) || fill (u32): 68 bytes; the key of "blobs" records.
inline constexpr std::size_t kBlobKeyBytes = 68;
void encode_blob_key(Encoder& e, const BlobKey& key);
BlobKey decode_blob_key(Decoder& d);
std::string blob_key_bytes(const BlobKey& key);

// "blobs" value: version, bytes on disk (u64), references from manifests (u64), references
// from prefix entries (u64).
struct BlobRecord {
  std::uint64_t bytes = 0;
  std::uint64_t manifest_refs = 0;
  std::uint64_t prefix_refs = 0;
  // Held by prefix entries only: the bytes trim_prefix may reclaim.
  bool prefix_only() const { return manifest_refs == 0 && prefix_refs > 0; }
};
std::string encode_blob_record(const BlobRecord& r);
Result<BlobRecord> decode_blob_record(std::string_view v);

// "manifests" value: version, blob count (u32), the BlobKeys (68 bytes each, one per
// reference taken), then the canonical manifest bytes to the end.
struct ManifestRecord {
  std::vector<BlobKey> blobs;
  std::string json;
};
std::string encode_manifest_record(std::span<const BlobKey> blobs, std::string_view json);
Result<ManifestRecord> decode_manifest_record(std::string_view v);

// "prefix" value: version, has_parent (u8), parent (32 bytes, zero when none), last_use
// (u64), BlobKey (68), token count (u32), tokens (u32 each).
struct PrefixRecord {
  std::optional<Sha256> parent;
  std::vector<Token> tokens;
  BlobKey blob;
  std::uint64_t last_use = 0;
};
std::string encode_prefix_record(const PrefixRecord& r);
Result<PrefixRecord> decode_prefix_record(std::string_view v);
// ns || key: 64 bytes, the "prefix" key.
std::string prefix_key(const Namespace& ns, const Sha256& key);
// big-endian last_use || ns || key: 72 bytes, the "prefix_lru" key (sorts oldest first).
std::string prefix_lru_key(std::uint64_t last_use, std::string_view prefix_key);

// "refs", "quarantine" and meta "geometry" values: version, then the text to the end.
std::string encode_text_record(std::string_view text);
Result<std::string> decode_text_record(std::string_view v);

// Integer "meta" values: version, then the u64.
std::string encode_u64_record(std::uint64_t v);
Result<std::uint64_t> decode_u64_record(std::string_view v);

// --- environment and transactions ---------------------------------------------------------

class Index {
 public:
  // Opens (creating) the LMDB environment in directory `dir` (which must exist) with a map of
  // `map_bytes`, and every named database. Clears reader slots of dead processes.
  static Result<std::unique_ptr<Index>> open(const std::string& dir, std::uint64_t map_bytes);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  MDB_env* env() const { return env_; }
  unsigned dbi(Db db) const { return dbis_[static_cast<unsigned>(db)]; }

 private:
  Index() = default;
  MDB_env* env_ = nullptr;
  unsigned dbis_[static_cast<unsigned>(Db::kCount)] = {};
};

class Txn {
 public:
  // A read-only (write = false) or read-write transaction. A write transaction blocks while
  // another is open (LMDB's writer lock).
  static Result<Txn> begin(const Index& index, bool write);
  Txn(Txn&& other) noexcept;
  Txn& operator=(Txn&&) = delete;
  ~Txn();

  // The value stored under `key`, or nullopt.
  Result<std::optional<std::string_view>> get(Db db, std::string_view key);
  Status put(Db db, std::string_view key, std::string_view value);
  // Deletes `key`; false when it was absent.
  Result<bool> del(Db db, std::string_view key);
  // Calls fn(key, value) in key order until it returns false.
  Status for_each(Db db, const std::function<bool(std::string_view, std::string_view)>& fn);
  Result<std::uint64_t> count(Db db);
  // Commits (durably, for a write transaction); the transaction is over either way.
  Status commit();

 private:
  Txn(const Index& index, MDB_txn* txn) : index_(&index), txn_(txn) {}
  const Index* index_;
  MDB_txn* txn_;
};

// "lmdb WHAT: <mdb_strerror>" as kSystem (kOutOfMemory for a full map).
Status lmdb_status(std::string_view what, int rc);

}  // namespace pf::rt::store
