#include "runtime/store_index.h"

#include <lmdb.h>

#include <cstring>

namespace pf::rt::store {

namespace {

constexpr const char* kDbNames[] = {"meta",   "blobs",      "manifests", "refs",
                                    "prefix", "prefix_lru", "quarantine"};
static_assert(std::size(kDbNames) == static_cast<std::size_t>(Db::kCount));

MDB_val val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
std::string_view view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

Status corrupt(std::string_view what) {
  return PF_ERROR(Code::kDataCorrupt, "store index: malformed " + std::string(what) + " record");
}

// Checks the version byte; false when it is not kRecordVersion.
bool version_ok(Decoder& d) {
  return d.u8() == kRecordVersion && d.ok();
}

}  // namespace

Status lmdb_status(std::string_view what, int rc) {
  return Status(rc == MDB_MAP_FULL ? Code::kOutOfMemory : Code::kSystem,
                "lmdb " + std::string(what) + ": " + mdb_strerror(rc) +
                    (rc == MDB_MAP_FULL ? " (raise StoreOptions::index_map_bytes)" : ""));
}

// --- encodings ----------------------------------------------------------------------------

Encoder& Encoder::u8(std::uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}
Encoder& Encoder::u32(std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  return *this;
}
Encoder& Encoder::u64(std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  return *this;
}
Encoder& Encoder::bytes(const void* data, std::size_t n) {
  out_.append(static_cast<const char*>(data), n);
  return *this;
}

const std::uint8_t* Decoder::bytes(std::size_t n) {
  if (!ok_ || in_.size() - pos_ < n) {
    ok_ = false;
    return nullptr;
  }
  const auto* p = reinterpret_cast<const std::uint8_t*>(in_.data() + pos_);
  pos_ += n;
  return p;
}
std::uint8_t Decoder::u8() {
  const std::uint8_t* p = bytes(1);
  return p ? p[0] : 0;
}
std::uint32_t Decoder::u32() {
  const std::uint8_t* p = bytes(4);
  std::uint32_t v = 0;
  for (int i = 0; p && i < 4; ++i) v |= std::uint32_t{p[i]} << (8 * i);
  return v;
}
std::uint64_t Decoder::u64() {
  const std::uint8_t* p = bytes(8);
  std::uint64_t v = 0;
  for (int i = 0; p && i < 8; ++i) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}
std::string_view Decoder::rest() {
  if (!ok_) return {};
  std::string_view r = in_.substr(pos_);
  pos_ = in_.size();
  return r;
}

void encode_blob_key(Encoder& e, const BlobKey& key) {
  e.bytes(key.k.bytes.data(), 32).bytes(key.v.bytes.data(), 32).u32(key.fill);
}
BlobKey decode_blob_key(Decoder& d) {
  BlobKey key;
  if (const std::uint8_t* k = d.bytes(32)) std::memcpy(key.k.bytes.data(), k, 32);
  if (const std::uint8_t* v = d.bytes(32)) std::memcpy(key.v.bytes.data(), v, 32);
  key.fill = d.u32();
  return key;
}
std::string blob_key_bytes(const BlobKey& key) {
  Encoder e;
  encode_blob_key(e, key);
  return e.take();
}

std::string encode_blob_record(const BlobRecord& r) {
  return Encoder().u8(kRecordVersion).u64(r.bytes).u64(r.manifest_refs).u64(r.prefix_refs).take();
}
Result<BlobRecord> decode_blob_record(std::string_view v) {
  Decoder d(v);
  BlobRecord r;
  if (!version_ok(d)) return corrupt("blob");
  r.bytes = d.u64();
  r.manifest_refs = d.u64();
  r.prefix_refs = d.u64();
  if (!d.done()) return corrupt("blob");
  return r;
}

std::string encode_manifest_record(std::span<const BlobKey> blobs, std::string_view json) {
  Encoder e;
  e.u8(kRecordVersion).u32(static_cast<std::uint32_t>(blobs.size()));
  for (const BlobKey& key : blobs) encode_blob_key(e, key);
  e.bytes(json.data(), json.size());
  return e.take();
}
Result<ManifestRecord> decode_manifest_record(std::string_view v) {
  Decoder d(v);
  if (!version_ok(d)) return corrupt("manifest");
  const std::uint32_t n = d.u32();
  if (!d.ok() || v.size() < 5 + std::size_t{n} * kBlobKeyBytes) return corrupt("manifest");
  ManifestRecord r;
  r.blobs.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) r.blobs.push_back(decode_blob_key(d));
  r.json = std::string(d.rest());
  if (!d.ok()) return corrupt("manifest");
  return r;
}

std::string encode_prefix_record(const PrefixRecord& r) {
  Encoder e;
  const Sha256 zero{};
  const Sha256& parent = r.parent ? *r.parent : zero;
  e.u8(kRecordVersion).u8(r.parent ? 1 : 0).bytes(parent.data(), 32).u64(r.last_use);
  encode_blob_key(e, r.blob);
  e.u32(static_cast<std::uint32_t>(r.tokens.size()));
  for (Token t : r.tokens) e.u32(t);
  return e.take();
}
Result<PrefixRecord> decode_prefix_record(std::string_view v) {
  Decoder d(v);
  if (!version_ok(d)) return corrupt("prefix");
  PrefixRecord r;
  const std::uint8_t has_parent = d.u8();
  const std::uint8_t* parent = d.bytes(32);
  if (has_parent > 1) return corrupt("prefix");
  if (has_parent == 1 && parent) {
    r.parent.emplace();
    std::memcpy(r.parent->data(), parent, 32);
  }
  r.last_use = d.u64();
  r.blob = decode_blob_key(d);
  const std::uint32_t n = d.u32();
  if (!d.ok() || d.remaining() != std::size_t{n} * 4) return corrupt("prefix");
  r.tokens.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) r.tokens.push_back(d.u32());
  return r;
}

std::string prefix_key(const Namespace& ns, const Sha256& key) {
  return Encoder().bytes(ns.data(), 32).bytes(key.data(), 32).take();
}
std::string prefix_lru_key(std::uint64_t last_use, std::string_view prefix_key) {
  Encoder e;
  for (int i = 7; i >= 0; --i) e.u8(static_cast<std::uint8_t>(last_use >> (8 * i)));
  e.bytes(prefix_key.data(), prefix_key.size());
  return e.take();
}

std::string encode_text_record(std::string_view text) {
  return Encoder().u8(kRecordVersion).bytes(text.data(), text.size()).take();
}
Result<std::string> decode_text_record(std::string_view v) {
  Decoder d(v);
  if (!version_ok(d)) return corrupt("text");
  return std::string(d.rest());
}

std::string encode_u64_record(std::uint64_t v) {
  return Encoder().u8(kRecordVersion).u64(v).take();
}
Result<std::uint64_t> decode_u64_record(std::string_view v) {
  Decoder d(v);
  if (!version_ok(d)) return corrupt("meta integer");
  const std::uint64_t x = d.u64();
  if (!d.done()) return corrupt("meta integer");
  return x;
}

// --- environment and transactions ---------------------------------------------------------

Result<std::unique_ptr<Index>> Index::open(const std::string& dir, std::uint64_t map_bytes) {
  std::unique_ptr<Index> index(new Index());
  int rc = mdb_env_create(&index->env_);
  if (rc != 0) return lmdb_status("env_create", rc);
  if ((rc = mdb_env_set_maxdbs(index->env_, static_cast<MDB_dbi>(Db::kCount))) != 0) {
    return lmdb_status("set_maxdbs", rc);
  }
  if ((rc = mdb_env_set_mapsize(index->env_, map_bytes)) != 0) {
    return lmdb_status("set_mapsize", rc);
  }
  // MDB_NOTLS: read transactions are not bound to a thread (the store's io threads);
  // MDB_NORDAHEAD: random access to a map much larger than the hot set.
  if ((rc = mdb_env_open(index->env_, dir.c_str(), MDB_NOTLS | MDB_NORDAHEAD, 0600)) != 0) {
    return lmdb_status("open " + dir, rc);
  }
  int dead = 0;
  if ((rc = mdb_reader_check(index->env_, &dead)) != 0) return lmdb_status("reader_check", rc);
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(index->env_, nullptr, 0, &txn)) != 0) {
    return lmdb_status("txn_begin", rc);
  }
  for (unsigned i = 0; i < static_cast<unsigned>(Db::kCount); ++i) {
    if ((rc = mdb_dbi_open(txn, kDbNames[i], MDB_CREATE, &index->dbis_[i])) != 0) {
      mdb_txn_abort(txn);
      return lmdb_status(std::string("dbi_open ") + kDbNames[i], rc);
    }
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return lmdb_status("commit", rc);
  return index;
}

Index::~Index() {
  if (env_) mdb_env_close(env_);
}

Result<Txn> Txn::begin(const Index& index, bool write) {
  MDB_txn* txn = nullptr;
  const int rc = mdb_txn_begin(index.env(), nullptr, write ? 0 : MDB_RDONLY, &txn);
  if (rc != 0) return lmdb_status("txn_begin", rc);
  return Txn(index, txn);
}

Txn::Txn(Txn&& other) noexcept : index_(other.index_), txn_(std::exchange(other.txn_, nullptr)) {}

Txn::~Txn() {
  if (txn_) mdb_txn_abort(txn_);
}

Result<std::optional<std::string_view>> Txn::get(Db db, std::string_view key) {
  MDB_val k = val(key), v{};
  const int rc = mdb_get(txn_, index_->dbi(db), &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string_view>();
  if (rc != 0) return lmdb_status("get", rc);
  return std::optional<std::string_view>(view(v));
}

Status Txn::put(Db db, std::string_view key, std::string_view value) {
  MDB_val k = val(key), v = val(value);
  const int rc = mdb_put(txn_, index_->dbi(db), &k, &v, 0);
  return rc == 0 ? Status::ok() : lmdb_status("put", rc);
}

Result<bool> Txn::del(Db db, std::string_view key) {
  MDB_val k = val(key);
  const int rc = mdb_del(txn_, index_->dbi(db), &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != 0) return lmdb_status("del", rc);
  return true;
}

Status Txn::for_each(Db db, const std::function<bool(std::string_view, std::string_view)>& fn) {
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(txn_, index_->dbi(db), &cursor);
  if (rc != 0) return lmdb_status("cursor_open", rc);
  MDB_val k{}, v{};
  for (rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
    if (!fn(view(k), view(v))) {
      rc = MDB_NOTFOUND;
      break;
    }
  }
  mdb_cursor_close(cursor);
  return rc == MDB_NOTFOUND ? Status::ok() : lmdb_status("cursor_get", rc);
}

Result<std::uint64_t> Txn::count(Db db) {
  MDB_stat st{};
  const int rc = mdb_stat(txn_, index_->dbi(db), &st);
  if (rc != 0) return lmdb_status("stat", rc);
  return std::uint64_t{st.ms_entries};
}

Status Txn::commit() {
  const int rc = mdb_txn_commit(std::exchange(txn_, nullptr));
  return rc == 0 ? Status::ok() : lmdb_status("commit", rc);
}

}  // namespace pf::rt::store
