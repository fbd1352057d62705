// Store (runtime/store.h): blobs, dedup, manifests and their references, refs, prefix
// entries and LRU trim, quarantine, open's checks, the boot epoch, read checks against
// corruption on disk, and bad input (a clear error, nothing changed).
#include "runtime/store.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/ids.h"
#include "runtime/manifest.h"
#include "runtime/store_index.h"
#include "tests/runtime/store_test_util.h"

namespace pf::rt {
namespace {

using testing::blob_files;
using testing::blob_path;
using testing::make_blob;
using testing::ScratchDir;
using testing::TestBlob;

Geometry tiny() {
  return *geometry_preset("tiny");
}
// 4 KiB pages: the O_DIRECT path.
Geometry page4k() {
  return *parse_geometry("layers=2,kv_heads=2,head_dim=64,dtype=bf16,page_tokens=4");
}

std::string json_of(int i) {
  return "{\"i\":" + std::to_string(i) + "}";
}

class StoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<kernels::PageKernels> kernels_ = kernels::make_host_kernels();
  ScratchDir dir_;

  StoreOptions options(const Geometry& g = tiny()) {
    StoreOptions o;
    o.dir = dir_.path() + "/store";
    o.geometry = g;
    o.io_threads = 2;
    return o;
  }
  std::unique_ptr<Store> open(const StoreOptions& o) {
    auto s = Store::open(o, *kernels_);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(*s) : nullptr;
  }
  std::unique_ptr<Store> open() { return open(options()); }

  // Writes the blobs; returns how many the store wrote (0 on failure, which fails the test).
  static std::size_t write(Store& s, const std::vector<const TestBlob*>& blobs) {
    std::vector<BlobWrite> w;
    for (const TestBlob* b : blobs) w.push_back({b->key, b->bytes.data()});
    Result<std::size_t> n = s.write_blobs(w);
    EXPECT_TRUE(n.is_ok()) << n.status().to_string();
    return n.is_ok() ? *n : 0;
  }
  static void expect_reads(Store& s, const Geometry& g, const std::vector<const TestBlob*>& blobs) {
    std::vector<std::vector<std::byte>> dst(
        blobs.size(), std::vector<std::byte>(g.page_bytes(), std::byte{0xAA}));
    std::vector<BlobRead> r;
    for (std::size_t i = 0; i < blobs.size(); ++i) r.push_back({blobs[i]->key, dst[i].data()});
    const Status st = s.read_blobs(r);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    for (std::size_t i = 0; i < blobs.size(); ++i) {
      EXPECT_EQ(dst[i], blobs[i]->expected(g)) << "blob " << i;
    }
  }
  // Writes blob a and commits manifest 1 naming it; returns that manifest's CID.
  static std::string store_one(Store& s, const TestBlob& a) {
    write(s, {&a});
    commit(s, 1, {&a});
    return cid_of(json_of(1));
  }
  static void commit(Store& s, int i, const std::vector<const TestBlob*>& blobs) {
    std::vector<BlobKey> keys;
    for (const TestBlob* b : blobs) keys.push_back(b->key);
    const std::string json = json_of(i);
    const Status st = s.commit_manifest(cid_of(json), json, keys);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
};

TEST_F(StoreTest, BlobsRoundTripOnBothIoPaths) {
  for (const Geometry& g : {tiny(), page4k()}) {
    SCOPED_TRACE(g.to_string());
    ScratchDir d;
    StoreOptions o = options(g);
    o.dir = d.path() + "/store";
    auto s = open(o);
    ASSERT_TRUE(s);
    const TestBlob full = make_blob(*kernels_, g, 1, g.page_tokens);
    const TestBlob partial = make_blob(*kernels_, g, 2, 1);
    const TestBlob empty = make_blob(*kernels_, g, 3, 0);
    // An unaligned source buffer (the bounce-buffer path).
    const TestBlob unaligned = make_blob(*kernels_, g, 4, g.page_tokens);
    std::vector<std::byte> shifted(g.page_bytes() + 1);
    std::memcpy(shifted.data() + 1, unaligned.bytes.data(), g.page_bytes());
    const BlobWrite w[] = {{full.key, full.bytes.data()},
                           {partial.key, partial.bytes.data()},
                           {empty.key, empty.bytes.data()},
                           {unaligned.key, shifted.data() + 1}};
    ASSERT_TRUE(s->write_blobs(w).is_ok());
    for (const TestBlob* b : {&full, &partial, &empty, &unaligned})
      EXPECT_TRUE(s->has_blob(b->key));
    expect_reads(*s, g, {&full, &partial, &empty, &unaligned});
    // On disk: page_bytes each, the unfilled slots zero.
    std::ifstream f(blob_path(o.dir, partial.key), std::ios::binary);
    std::vector<char> disk((std::istreambuf_iterator<char>(f)), {});
    const auto want = partial.expected(g);
    ASSERT_EQ(disk.size(), g.page_bytes());
    EXPECT_EQ(0, std::memcmp(disk.data(), want.data(), disk.size()));
    // An unstored blob is kNotFound.
    const TestBlob other = make_blob(*kernels_, g, 5, 2);
    std::vector<std::byte> dst(g.page_bytes());
    const BlobRead r[] = {{other.key, dst.data()}};
    EXPECT_EQ(s->read_blobs(r).code(), Code::kNotFound);
    EXPECT_FALSE(s->has_blob(other.key));
  }
}

TEST_F(StoreTest, SameBlobIsOneFile) {
  auto s = open();
  const Geometry g = tiny();
  const TestBlob a = make_blob(*kernels_, g, 7, 4);
  EXPECT_EQ(write(*s, {&a, &a}), 1u);  // one blob, written once
  EXPECT_EQ(write(*s, {&a}), 0u);      // stored already: nothing written
  commit(*s, 1, {&a});
  commit(*s, 2, {&a, &a});
  const auto files = blob_files(options().dir);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], a.key.hex());
  EXPECT_EQ(std::filesystem::file_size(blob_path(options().dir, a.key)), g.page_bytes());
  EXPECT_EQ(s->stats().blobs, 1u);
  EXPECT_EQ(s->stats().blob_bytes, g.page_bytes());
  // Three references: the file stays until the last manifest goes.
  ASSERT_TRUE(s->remove_manifest(cid_of(json_of(2))).is_ok());
  EXPECT_TRUE(s->has_blob(a.key));
  ASSERT_TRUE(s->remove_manifest(cid_of(json_of(1))).is_ok());
  EXPECT_TRUE(blob_files(options().dir).empty());
}

TEST_F(StoreTest, ManifestReferencesAndUnlink) {
  auto s = open();
  const Geometry g = tiny();
  const TestBlob a = make_blob(*kernels_, g, 1, 4), b = make_blob(*kernels_, g, 2, 4),
                 c = make_blob(*kernels_, g, 3, 2);
  write(*s, {&a, &b, &c});
  commit(*s, 1, {&a, &b});
  commit(*s, 2, {&b, &c});
  commit(*s, 2, {&b, &c});  // idempotent: no second set of references
  EXPECT_TRUE(s->has_manifest(cid_of(json_of(1))));
  auto m = s->manifest(cid_of(json_of(2)));
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(*m, json_of(2));
  EXPECT_EQ(s->manifests().size(), 2u);
  ASSERT_TRUE(s->remove_manifest(cid_of(json_of(1))).is_ok());
  EXPECT_FALSE(std::filesystem::exists(blob_path(options().dir, a.key)));
  EXPECT_TRUE(std::filesystem::exists(blob_path(options().dir, b.key)));
  ASSERT_TRUE(s->remove_manifest(cid_of(json_of(2))).is_ok());
  EXPECT_TRUE(blob_files(options().dir).empty());
  EXPECT_EQ(s->stats().blobs, 0u);
  EXPECT_EQ(s->remove_manifest(cid_of(json_of(2))).code(), Code::kNotFound);
  // The references survive a reopen.
  write(*s, {&a});
  commit(*s, 3, {&a});
  s.reset();
  s = open();
  expect_reads(*s, g, {&a});
  ASSERT_TRUE(s->remove_manifest(cid_of(json_of(3))).is_ok());
  EXPECT_TRUE(blob_files(options().dir).empty());
}

TEST_F(StoreTest, BlobReleasedBeforeCommitKeepsItsFile) {
  // write_blobs finds a blob stored (referenced by manifest 1); manifest 1 goes before the
  // caller commits manifest 2: the blob must still be there for it.
  auto s = open();
  const TestBlob a = make_blob(*kernels_, tiny(), 1, 4);
  write(*s, {&a});
  commit(*s, 1, {&a});
  write(*s, {&a});
  ASSERT_TRUE(s->remove_manifest(cid_of(json_of(1))).is_ok());
  EXPECT_TRUE(s->has_blob(a.key));
  commit(*s, 2, {&a});
  expect_reads(*s, tiny(), {&a});
}

TEST_F(StoreTest, Refs) {
  auto s = open();
  const TestBlob a = make_blob(*kernels_, tiny(), 1, 4);
  const std::string cid = store_one(*s, a);
  EXPECT_EQ(s->set_ref("main", cid_of(json_of(9))).code(), Code::kNotFound);
  EXPECT_TRUE(s->refs().empty());
  ASSERT_TRUE(s->set_ref("main", cid).is_ok());
  ASSERT_EQ(s->refs().size(), 1u);
  EXPECT_EQ(s->refs()[0].name, "main");
  EXPECT_EQ(s->refs()[0].cid, cid);
  EXPECT_EQ(s->set_ref("main", cid_of(json_of(9))).code(), Code::kNotFound);
  EXPECT_EQ(s->refs()[0].cid, cid);  // unchanged
  const Status busy = s->remove_manifest(cid);
  EXPECT_EQ(busy.code(), Code::kConflict);
  EXPECT_NE(busy.message().find("main"), std::string::npos);
  EXPECT_TRUE(s->has_manifest(cid));
  EXPECT_EQ(s->delete_ref("other").code(), Code::kNotFound);
  ASSERT_TRUE(s->delete_ref("main").is_ok());
  EXPECT_TRUE(s->refs().empty());
  EXPECT_TRUE(s->remove_manifest(cid).is_ok());
}

TEST_F(StoreTest, PrefixPutFindAndLruTrim) {
  const Geometry g = tiny();
  StoreOptions o = options();
  o.prefix_capacity_bytes = 2 * g.page_bytes();
  auto s = open(o);
  const TestBlob b1 = make_blob(*kernels_, g, 1, 4), b2 = make_blob(*kernels_, g, 2, 4),
                 b3 = make_blob(*kernels_, g, 3, 4), b4 = make_blob(*kernels_, g, 4, 4);
  write(*s, {&b1, &b2, &b3, &b4});
  Namespace ns{};
  ns[0] = 7;
  auto entry = [&](std::uint8_t k, const TestBlob& b, std::optional<std::uint8_t> parent) {
    StoredPrefix e;
    e.ns = ns;
    e.key[0] = k;
    if (parent) {
      e.parent.emplace();
      (*e.parent)[0] = *parent;
    }
    e.tokens = {k, 2u, 3u, 4u};
    e.blob = b.key;
    return e;
  };
  const StoredPrefix e1 = entry(1, b1, std::nullopt), e2 = entry(2, b2, 1), e3 = entry(3, b3, 2);
  ASSERT_TRUE(s->put_prefix(std::vector{e1, e2}).is_ok());
  auto f = s->find_prefix(ns, e2.key);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->parent, e2.parent);
  EXPECT_EQ(f->tokens, e2.tokens);
  EXPECT_EQ(f->blob, e2.blob);
  EXPECT_FALSE(s->find_prefix(kDefaultNamespace, e2.key).has_value());  // other namespace
  // e1 is touched, so e2 is the least recently used when e3 overflows the capacity.
  ASSERT_TRUE(s->find_prefix(ns, e1.key).has_value());
  ASSERT_TRUE(s->put_prefix(std::vector{e3}).is_ok());
  EXPECT_TRUE(s->find_prefix(ns, e1.key).has_value());
  EXPECT_FALSE(s->find_prefix(ns, e2.key).has_value());
  EXPECT_TRUE(s->find_prefix(ns, e3.key).has_value());
  EXPECT_FALSE(s->has_blob(b2.key));
  EXPECT_FALSE(std::filesystem::exists(blob_path(o.dir, b2.key)));
  EXPECT_EQ(s->stats().prefix_entries, 2u);
  // A blob a manifest pins costs the prefix budget nothing and its entry stays.
  commit(*s, 1, {&b4});
  ASSERT_TRUE(s->put_prefix(std::vector{entry(4, b4, 3)}).is_ok());
  auto trimmed = s->trim_prefix();
  ASSERT_TRUE(trimmed.is_ok());
  EXPECT_EQ(*trimmed, 0u);
  EXPECT_EQ(s->stats().prefix_entries, 3u);
  // An entry whose key exists keeps the old one.
  StoredPrefix again = entry(1, b3, std::nullopt);
  ASSERT_TRUE(s->put_prefix(std::vector{again}).is_ok());
  EXPECT_EQ(s->find_prefix(ns, e1.key)->blob, b1.key);
  // LRU order survives a reopen (touches are flushed by write transactions).
  ASSERT_TRUE(s->find_prefix(ns, e1.key).has_value());
  ASSERT_TRUE(s->remove_prefix(ns, entry(4, b4, 3).key).is_ok());
  EXPECT_TRUE(s->has_blob(b4.key));  // the manifest still holds it
  s.reset();
  o.prefix_capacity_bytes = g.page_bytes();
  s = open(o);
  trimmed = s->trim_prefix();
  ASSERT_TRUE(trimmed.is_ok());
  EXPECT_EQ(*trimmed, 1u);
  EXPECT_FALSE(s->find_prefix(ns, e3.key).has_value());  // e1 was used after e3
  EXPECT_TRUE(s->find_prefix(ns, e1.key).has_value());
  EXPECT_EQ(s->remove_prefix(ns, e3.key).code(), Code::kNotFound);
  ASSERT_TRUE(s->remove_prefix(ns, e1.key).is_ok());
  EXPECT_FALSE(s->has_blob(b1.key));
}

TEST_F(StoreTest, PrefixBlobMustBeStored) {
  auto s = open();
  const TestBlob b = make_blob(*kernels_, tiny(), 1, 4);
  StoredPrefix e;
  e.blob = b.key;
  EXPECT_EQ(s->put_prefix(std::vector{e}).code(), Code::kNotFound);
  EXPECT_EQ(s->stats().prefix_entries, 0u);
}

TEST_F(StoreTest, Quarantine) {
  auto s = open();
  const TestBlob a = make_blob(*kernels_, tiny(), 1, 4);
  const std::string cid = store_one(*s, a);
  EXPECT_FALSE(s->quarantined(cid).has_value());
  EXPECT_EQ(s->quarantine(cid_of(json_of(2)), "x").code(), Code::kNotFound);
  ASSERT_TRUE(s->quarantine(cid, "page 3 failed its digest").is_ok());
  EXPECT_EQ(s->quarantined(cid), "page 3 failed its digest");
  EXPECT_EQ(s->stats().quarantined, 1u);
  EXPECT_TRUE(s->has_manifest(cid));  // still listed
  s.reset();
  s = open();
  EXPECT_EQ(s->quarantined(cid), "page 3 failed its digest");
  ASSERT_TRUE(s->remove_manifest(cid).is_ok());
  EXPECT_FALSE(s->quarantined(cid).has_value());
}

TEST_F(StoreTest, OpenRefusesAnotherGeometry) {
  open().reset();
  StoreOptions o = options(*geometry_preset("llama-3-8b"));
  auto s = Store::open(o, *kernels_);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
  EXPECT_NE(s.status().message().find(tiny().to_string()), std::string::npos);
  EXPECT_NE(s.status().message().find(o.geometry.to_string()), std::string::npos);
  EXPECT_TRUE(open() != nullptr);  // nothing changed
}

TEST_F(StoreTest, OpenRefusesAnotherFormat) {
  open().reset();
  {
    auto index = store::Index::open(options().dir + "/index", std::uint64_t{1} << 24);
    ASSERT_TRUE(index.is_ok());
    auto txn = store::Txn::begin(**index, true);
    ASSERT_TRUE(txn.is_ok());
    ASSERT_TRUE(
        txn->put(store::Db::kMeta, store::kMetaFormat, store::encode_u64_record(99)).is_ok());
    ASSERT_TRUE(txn->commit().is_ok());
  }
  auto s = Store::open(options(), *kernels_);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
  EXPECT_NE(s.status().message().find("format version 99"), std::string::npos);
}

TEST_F(StoreTest, SecondOpenIsAConflict) {
  auto s = open();
  auto again = Store::open(options(), *kernels_);
  EXPECT_EQ(again.status().code(), Code::kConflict);
  // Another process too.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto k = kernels::make_host_kernels();
    auto child = Store::open(options(), *k);
    ::_exit(!child.is_ok() && child.status().code() == Code::kConflict ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  s.reset();
  EXPECT_TRUE(open() != nullptr);
}

TEST_F(StoreTest, BootEpochIncrementsAndWraps) {
  auto s = open();
  auto e1 = s->next_boot_epoch();
  ASSERT_TRUE(e1.is_ok());
  EXPECT_GE(*e1, 1u);
  EXPECT_LE(*e1, kMaxBootEpoch);
  s.reset();
  s = open();
  auto e2 = s->next_boot_epoch();
  ASSERT_TRUE(e2.is_ok());
  EXPECT_EQ(*e2, *e1 == kMaxBootEpoch ? 1u : *e1 + 1);
  s.reset();
  {
    auto index = store::Index::open(options().dir + "/index", std::uint64_t{1} << 24);
    ASSERT_TRUE(index.is_ok());
    auto txn = store::Txn::begin(**index, true);
    ASSERT_TRUE(txn.is_ok());
    ASSERT_TRUE(
        txn->put(store::Db::kMeta, store::kMetaBootEpoch, store::encode_u64_record(kMaxBootEpoch))
            .is_ok());
    ASSERT_TRUE(txn->commit().is_ok());
  }
  s = open();
  auto e3 = s->next_boot_epoch();
  ASSERT_TRUE(e3.is_ok());
  EXPECT_EQ(*e3, 1u);
  EXPECT_EQ(*s->next_boot_epoch(), 2u);
}

TEST_F(StoreTest, OpenRemovesLeftovers) {
  auto s = open();
  const TestBlob kept = make_blob(*kernels_, tiny(), 1, 4),
                 dropped = make_blob(*kernels_, tiny(), 2, 4);
  write(*s, {&kept, &dropped});
  commit(*s, 1, {&kept});
  s.reset();
  const std::string tmp = blob_path(options().dir, kept.key) + ".tmp";
  std::ofstream(tmp) << "partial";
  std::ofstream(options().dir + "/blobs/00/junk") << "x";
  s = open();
  const auto files = blob_files(options().dir);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], kept.key.hex());
  EXPECT_FALSE(s->has_blob(dropped.key));
  expect_reads(*s, tiny(), {&kept});
}

TEST_F(StoreTest, CorruptBlobsAreReported) {
  const Geometry g = page4k();
  auto s = open(options(g));
  const TestBlob a = make_blob(*kernels_, g, 1, 3), b = make_blob(*kernels_, g, 2, 4);
  write(*s, {&a, &b});
  commit(*s, 1, {&a, &b});
  std::vector<std::byte> dst(g.page_bytes());
  {
    std::fstream f(blob_path(options(g).dir, a.key),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(17);
    f.put(static_cast<char>(a.bytes[17] ^ std::byte{0x40}));
  }
  const BlobRead ra[] = {{b.key, dst.data()}, {a.key, dst.data()}};
  Status st = s->read_blobs(std::span(ra).subspan(1));
  EXPECT_EQ(st.code(), Code::kDataCorrupt);
  EXPECT_NE(st.message().find(a.key.hex()), std::string::npos) << st.message();
  std::filesystem::resize_file(blob_path(options(g).dir, b.key), g.page_bytes() / 2);
  st = s->read_blobs(std::span(ra).subspan(0, 1));
  EXPECT_EQ(st.code(), Code::kDataCorrupt);
  EXPECT_NE(st.message().find(b.key.hex()), std::string::npos) << st.message();
  // A flipped byte past fill changes nothing a reader sees (the slots read back as zero).
  const TestBlob c = make_blob(*kernels_, g, 3, 1);
  write(*s, {&c});
  {
    std::fstream f(blob_path(options(g).dir, c.key),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(g.offset(0, Half::kK, 2)));
    f.put(1);
  }
  expect_reads(*s, g, {&c});
}

TEST_F(StoreTest, BadInputChangesNothing) {
  auto s = open();
  const Geometry g = tiny();
  const TestBlob a = make_blob(*kernels_, g, 1, 4);
  write(*s, {&a});
  commit(*s, 1, {&a});
  const StoreStats before = s->stats();
  BlobKey too_full = a.key;
  too_full.fill = g.page_tokens + 1;
  const BlobWrite w[] = {{a.key, a.bytes.data()}, {too_full, a.bytes.data()}};
  EXPECT_EQ(s->write_blobs(w).status().code(), Code::kInvalidArgument);
  const BlobWrite null_bytes[] = {{a.key, nullptr}};
  EXPECT_EQ(s->write_blobs(null_bytes).status().code(), Code::kInvalidArgument);
  const BlobRead null_dst[] = {{a.key, nullptr}};
  EXPECT_EQ(s->read_blobs(null_dst).code(), Code::kInvalidArgument);
  const std::string json = json_of(2);
  EXPECT_EQ(s->commit_manifest("not-a-cid", json, {}).code(), Code::kInvalidArgument);
  EXPECT_EQ(s->commit_manifest(cid_of(json_of(3)), json, {}).code(), Code::kInvalidArgument);
  const TestBlob unstored = make_blob(*kernels_, g, 9, 4);
  const BlobKey keys[] = {a.key, unstored.key};
  const Status missing = s->commit_manifest(cid_of(json), json, keys);
  EXPECT_EQ(missing.code(), Code::kNotFound);
  EXPECT_NE(missing.message().find(unstored.key.hex()), std::string::npos);
  EXPECT_FALSE(s->has_manifest(cid_of(json)));
  EXPECT_EQ(s->remove_manifest("sha256:xyz").code(), Code::kInvalidArgument);
  EXPECT_EQ(s->set_ref("", cid_of(json_of(1))).code(), Code::kInvalidArgument);
  EXPECT_EQ(s->set_ref(std::string(1000, 'r'), cid_of(json_of(1))).code(), Code::kInvalidArgument);
  EXPECT_EQ(s->set_ref("r", "bogus").code(), Code::kInvalidArgument);
  EXPECT_EQ(s->manifest("bogus").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->manifest(cid_of(json_of(5))).status().code(), Code::kNotFound);
  EXPECT_EQ(s->quarantine("bogus", "x").code(), Code::kInvalidArgument);
  StoredPrefix e;
  e.blob = a.key;
  e.tokens.assign(g.page_tokens + 1, 1);
  EXPECT_EQ(s->put_prefix(std::vector{e}).code(), Code::kInvalidArgument);
  EXPECT_EQ(s->remove_prefix(kDefaultNamespace, Sha256{}).code(), Code::kNotFound);
  const StoreStats after = s->stats();
  EXPECT_EQ(after.blobs, before.blobs);
  EXPECT_EQ(after.manifests, before.manifests);
  EXPECT_EQ(after.refs, before.refs);
  EXPECT_EQ(after.prefix_entries, before.prefix_entries);
  EXPECT_EQ(after.quarantined, before.quarantined);
  EXPECT_EQ(blob_files(options().dir).size(), 1u);
  StoreOptions bad = options();
  bad.geometry.layers = 0;
  EXPECT_EQ(Store::open(bad, *kernels_).status().code(), Code::kInvalidArgument);
}

TEST_F(StoreTest, ConcurrentWritersAndRemovers) {
  auto s = open();
  const Geometry g = tiny();
  std::vector<TestBlob> shared;
  for (int i = 0; i < 4; ++i) shared.push_back(make_blob(*kernels_, g, 100 + i, 4));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const int id = t * 1000 + i;
        const TestBlob own = make_blob(*kernels_, g, 1000 + id, 1 + i % 4);
        const TestBlob& sh = shared[(t + i) % shared.size()];
        const BlobWrite w[] = {{own.key, own.bytes.data()}, {sh.key, sh.bytes.data()}};
        const BlobKey keys[] = {own.key, sh.key};
        const std::string json = json_of(id);
        Status st = s->write_blobs(w).status();
        if (st.is_ok()) st = s->commit_manifest(cid_of(json), json, keys);
        if (st.is_ok() && i % 2 == 1) st = s->remove_manifest(cid_of(json_of(id - 1)));
        if (!st.is_ok()) {
          ADD_FAILURE() << "thread " << t << ", step " << i << ": " << st.to_string();
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(s->manifests().size(), 4u * 13);
  for (int t = 0; t < 4; ++t) {
    for (int i = 1; i < 25; i += (i == 23 ? 1 : 2)) {  // the manifests not removed
      const TestBlob own = make_blob(*kernels_, g, 1000 + t * 1000 + i, 1 + i % 4);
      expect_reads(*s, g, {&own});
    }
  }
}

}  // namespace
}  // namespace pf::rt
