// The durable store end to end (docs/store.md): real daemon processes started with
// --store on one directory, stopped cleanly or SIGKILLed, restarted; clients write KV through
// their own mapping and read it back after the restart, byte for byte.
#include <gtest/gtest.h>
#include <signal.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "tests/shims/kv_io.h"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

namespace fs = std::filesystem;

// A daemon on a store directory that outlives each daemon process: restart() starts the next
// one on the same socket and store.
class StoreDaemon : public pf::testing::DaemonProcess {
 public:
  explicit StoreDaemon(std::string capacity = "64MiB", std::string geometry = "tiny")
      : DaemonProcess("pfst"),
        socket_(dir().file("s")),
        ready_(dir().file("r")),
        store_(dir().file("store")),
        capacity_(std::move(capacity)),
        geometry_(std::move(geometry)) {
    restart();
  }

  // Starts a daemon (the previous one must have stopped). A SIGKILLed daemon leaves its ready
  // file behind; it is removed first so the wait is for the new one.
  void restart() {
    std::remove(ready_.c_str());
    ASSERT_TRUE(start(kCli,
                      {"serve", "--device", "host", "--geometry", geometry_, "--capacity",
                       capacity_, "--chunk", "2MiB", "--socket", socket_, "--http", "off",
                       "--ready-file", ready_, "--store", store_, "--verify"},
                      ready_));
  }
  std::uint32_t boot_epoch() const { return ready().value("boot_epoch", 0u); }
  const std::string& socket() const { return socket_; }
  const std::string& store() const { return store_; }

 private:
  std::string socket_, ready_, store_, capacity_, geometry_;
};

struct Written {
  std::string cid;
  std::vector<std::uint32_t> tokens;
  std::uint64_t seed = 0;
};

// A branch of `n` tokens whose KV is written under `seed`, snapshotted (and freed).
Written snapshot_of(pf_client* c, std::uint32_t first_token, std::size_t n, std::uint64_t seed,
                    const char* name = nullptr) {
  Written w;
  w.tokens = token_range(first_token, n);
  w.seed = seed;
  pf_new_branch b{};
  EXPECT_EQ(pf_branch_create(c, nullptr, 0, &b), PF_OK) << pf_last_error_message(c);
  append_and_write(c, b.branch, w.tokens, seed);
  pf_snapshot_result s{};
  EXPECT_EQ(pf_snapshot(c, b.branch, name, &s), PF_OK) << pf_last_error_message(c);
  EXPECT_EQ(pf_branch_free(c, b.branch), PF_OK);
  w.cid = s.cid;
  return w;
}

// Checks the snapshot out and counts the tokens whose KV differs from what was written.
std::uint64_t checkout_mismatches(pf_client* c, const Written& w) {
  pf_branch_id b = 0;
  const pf_result r = pf_checkout(c, w.cid.c_str(), &b, nullptr, 0);
  EXPECT_EQ(r, PF_OK) << w.cid << ": " << pf_last_error_message(c);
  if (r != PF_OK) return w.tokens.size();
  const std::uint64_t bad = mismatches(c, b, 0, w.tokens.size(), w.seed);
  EXPECT_EQ(pf_branch_free(c, b), PF_OK);
  return bad;
}

json snapshots_json(pf_client* c) {
  std::size_t need = 0;
  EXPECT_EQ(pf_snapshots(c, nullptr, 0, &need), PF_OK);
  std::string buf(need, '\0');
  EXPECT_EQ(pf_snapshots(c, buf.data(), buf.size(), &need), PF_OK);
  buf.resize(need - 1);
  return json::parse(buf, nullptr, false);
}

std::vector<std::string> listed_cids(pf_client* c) {
  std::vector<std::string> out;
  for (const json& s : snapshots_json(c).value("snapshots", json::array())) {
    out.push_back(s.value("cid", ""));
  }
  return out;
}

TEST(ShimsStore, SnapshotsRefsAndPrefixPagesSurviveARestartBitIdentical) {
  StoreDaemon d;
  const std::uint32_t first_epoch = d.boot_epoch();
  std::vector<Written> written;
  std::vector<std::uint32_t> prefix_tokens = token_range(9000, 4 * 4);  // 4 full tiny pages
  {
    ClientPtr c(connect_or_fail(d.socket()));
    for (std::uint64_t i = 0; i < 5; ++i) {
      written.push_back(snapshot_of(c.get(), 100 * static_cast<std::uint32_t>(i), 7 + 5 * i, 40 + i,
                                    i == 2 ? "kept" : nullptr));
    }
    for (const Written& w : written) {
      EXPECT_EQ(pf_wait_durable(c.get(), w.cid.c_str()), PF_OK) << pf_last_error_message(c.get());
    }
    // A committed prefix (the prefix index, not a snapshot).
    pf_new_branch b{};
    ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &b), PF_OK);
    append_and_write(c.get(), b.branch, prefix_tokens, 77);
    ASSERT_EQ(pf_commit(c.get(), b.branch), PF_OK);
    ASSERT_EQ(pf_branch_free(c.get(), b.branch), PF_OK);
  }
  ASSERT_EQ(d.stop(SIGTERM), 0) << d.log();  // a clean stop writes everything queued
  d.restart();
  EXPECT_NE(d.boot_epoch(), first_epoch);
  EXPECT_NE(d.log().find("store " + d.store() + ": 5 snapshots, 1 refs"), std::string::npos)
      << d.log();

  ClientPtr c(connect_or_fail(d.socket()));
  std::vector<std::string> listed = listed_cids(c.get());
  EXPECT_EQ(listed.size(), written.size());
  for (const Written& w : written) {
    EXPECT_NE(std::find(listed.begin(), listed.end(), w.cid), listed.end()) << w.cid;
    EXPECT_EQ(checkout_mismatches(c.get(), w), 0u) << w.cid;
  }
  char target[PF_CID_BYTES] = {};
  ASSERT_EQ(pf_ref_get(c.get(), "kept", target, sizeof target), PF_OK);
  EXPECT_EQ(std::string(target), written[2].cid);

  // The prefix pages come back from the store: a new branch on those tokens reuses them, with
  // their bytes.
  pf_new_branch b{};
  ASSERT_EQ(pf_branch_create(c.get(), prefix_tokens.data(), prefix_tokens.size(), &b), PF_OK);
  EXPECT_EQ(b.reused_tokens, prefix_tokens.size());
  EXPECT_EQ(mismatches(c.get(), b.branch, 0, prefix_tokens.size(), 77), 0u);
  EXPECT_EQ(pf_branch_free(c.get(), b.branch), PF_OK);

  // Unpinned (after its ref is deleted), a snapshot is gone after the next restart too.
  ASSERT_EQ(pf_ref_delete(c.get(), "kept"), PF_OK);
  ASSERT_EQ(pf_unpin(c.get(), written[2].cid.c_str()), PF_OK);
  c.reset();
  ASSERT_EQ(d.stop(SIGTERM), 0) << d.log();
  d.restart();
  c.reset(connect_or_fail(d.socket()));
  listed = listed_cids(c.get());
  EXPECT_EQ(listed.size(), written.size() - 1);
  EXPECT_EQ(std::find(listed.begin(), listed.end(), written[2].cid), listed.end());
  EXPECT_EQ(pf_ref_get(c.get(), "kept", target, sizeof target), PF_NOT_FOUND);
}

TEST(ShimsStore, SigkillDuringWritesLeavesOnlyWholeSnapshots) {
  // Each round: snapshots, the first ones confirmed durable, then SIGKILL while the later ones
  // are still being written (or not yet), at a different point each round. After every
  // restart: every confirmed snapshot is there, and every snapshot listed checks out
  // bit-identical (a partial one would fail its read check).
  StoreDaemon d;
  std::map<std::string, Written> all;
  std::vector<std::string> confirmed;
  constexpr int kRounds = 6;
  for (int round = 0; round < kRounds; ++round) {
    {
      ClientPtr c(connect_or_fail(d.socket()));
      // What is listed now was committed before the last kill: check it whole.
      for (const std::string& cid : listed_cids(c.get())) {
        ASSERT_TRUE(all.count(cid)) << "a snapshot nobody made: " << cid;
        EXPECT_EQ(checkout_mismatches(c.get(), all.at(cid)), 0u) << "round " << round;
      }
      const std::vector<std::string> listed = listed_cids(c.get());
      for (const std::string& cid : confirmed) {
        EXPECT_NE(std::find(listed.begin(), listed.end(), cid), listed.end())
            << "confirmed durable, then lost: " << cid;
      }
      const std::uint32_t base = 10000 * static_cast<std::uint32_t>(round + 1);
      for (int j = 0; j < 2; ++j) {
        Written w = snapshot_of(c.get(), base + 1000 * j, 9 + 4 * j, 1000 * round + j);
        ASSERT_EQ(pf_wait_durable(c.get(), w.cid.c_str()), PF_OK) << pf_last_error_message(c.get());
        confirmed.push_back(w.cid);
        all[w.cid] = w;
      }
      // The kill point moves: after 0..5 more snapshots whose writes are still queued.
      for (int j = 0; j < round; ++j) {
        Written w = snapshot_of(c.get(), base + 5000 + 100 * j, 30 + j, 1000 * round + 10 + j);
        all[w.cid] = w;
      }
    }
    d.kill_hard();
    d.restart();
  }
  ClientPtr c(connect_or_fail(d.socket()));
  const std::vector<std::string> listed = listed_cids(c.get());
  for (const std::string& cid : confirmed) {
    EXPECT_NE(std::find(listed.begin(), listed.end(), cid), listed.end()) << cid;
  }
  for (const std::string& cid : listed) {
    ASSERT_TRUE(all.count(cid)) << cid;
    EXPECT_EQ(checkout_mismatches(c.get(), all.at(cid)), 0u) << cid;
  }
}

// The blob files of a snapshot's pages (docs/store.md: blobs/XX/<k hex><v hex>-<fill>).
std::vector<fs::path> blob_files_of(pf_client* c, const std::string& store,
                                    const std::string& cid) {
  std::size_t need = 0;
  EXPECT_EQ(pf_manifest(c, cid.c_str(), nullptr, 0, &need), PF_OK);
  std::string buf(need, '\0');
  EXPECT_EQ(pf_manifest(c, cid.c_str(), buf.data(), buf.size(), &need), PF_OK);
  buf.resize(need - 1);
  const json m = json::parse(buf);
  std::vector<fs::path> out;
  for (const json& p : m.at("pages")) {
    const std::string prefix = p.at("k").get<std::string>() + p.at("v").get<std::string>();
    for (const auto& e : fs::recursive_directory_iterator(fs::path(store) / "blobs")) {
      if (e.is_regular_file() && e.path().filename().string().rfind(prefix, 0) == 0) {
        out.push_back(e.path());
      }
    }
  }
  return out;
}

TEST(ShimsStore, ACorruptedBlobIsDetectedAndItsSnapshotQuarantined) {
  StoreDaemon d;
  Written bad, good;
  std::vector<fs::path> files;
  {
    ClientPtr c(connect_or_fail(d.socket()));
    bad = snapshot_of(c.get(), 500, 10, 5);
    good = snapshot_of(c.get(), 700, 10, 6);
    ASSERT_EQ(pf_wait_durable(c.get(), bad.cid.c_str()), PF_OK);
    ASSERT_EQ(pf_wait_durable(c.get(), good.cid.c_str()), PF_OK);
    files = blob_files_of(c.get(), d.store(), bad.cid);
  }
  ASSERT_FALSE(files.empty());
  ASSERT_EQ(d.stop(SIGTERM), 0);
  {
    // One byte flipped inside the first page's K block (the written slots).
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekg(3);
    char ch = 0;
    f.read(&ch, 1);
    ch = static_cast<char>(ch ^ 0x5a);
    f.seekp(3);
    f.write(&ch, 1);
  }
  d.restart();
  ClientPtr c(connect_or_fail(d.socket()));
  pf_branch_id b = 0;
  // The checkout returns before its pages are read (lazy page-in); reading them finds the
  // damage: the view answers kDataCorrupt naming the blob's file.
  ASSERT_EQ(pf_checkout(c.get(), bad.cid.c_str(), &b, nullptr, 0), PF_OK);
  pf_branch_info info{};
  std::vector<std::uint32_t> pages(64);
  EXPECT_EQ(pf_branch_view(c.get(), b, &info, pages.data(), pages.size(), nullptr, 0),
            PF_DATA_CORRUPT);
  EXPECT_NE(std::string(pf_last_error_message(c.get())).find(files[0].filename().string()),
            std::string::npos)
      << pf_last_error_message(c.get());
  EXPECT_EQ(pf_branch_free(c.get(), b), PF_OK);
  // Quarantined: refused again without reading, and other snapshots are untouched.
  EXPECT_EQ(pf_checkout(c.get(), bad.cid.c_str(), &b, nullptr, 0), PF_DATA_CORRUPT);
  EXPECT_NE(std::string(pf_last_error_message(c.get())).find("quarantined"), std::string::npos);
  EXPECT_EQ(checkout_mismatches(c.get(), good), 0u);
  c.reset();
  // The quarantine is on disk: it lasts across restarts.
  ASSERT_EQ(d.stop(SIGTERM), 0);
  d.restart();
  c.reset(connect_or_fail(d.socket()));
  EXPECT_EQ(pf_checkout(c.get(), bad.cid.c_str(), &b, nullptr, 0), PF_DATA_CORRUPT);
  EXPECT_NE(std::string(pf_last_error_message(c.get())).find("quarantined"), std::string::npos);
  EXPECT_EQ(checkout_mismatches(c.get(), good), 0u);
}

TEST(ShimsStore, SigkillDuringALazyPageInLosesNothing) {
  // 64 KiB pages: a checkout after the restart returns before its 60 pages are read; the
  // daemon is killed right after (while the loader may still be reading), restarted, and the
  // snapshot checks out whole. Loading only reads the store, so no kill point can hurt it.
  StoreDaemon d("64MiB", "layers=4,kv_heads=4,head_dim=128,dtype=bf16,page_tokens=4");
  Written w;
  {
    ClientPtr c(connect_or_fail(d.socket()));
    w = snapshot_of(c.get(), 100, 240, 77, "lazy");
    ASSERT_EQ(pf_wait_durable(c.get(), w.cid.c_str()), PF_OK) << pf_last_error_message(c.get());
  }
  ASSERT_EQ(d.stop(SIGTERM), 0);
  for (int round = 0; round < 3; ++round) {
    d.restart();
    ClientPtr c(connect_or_fail(d.socket()));
    pf_branch_id b = 0;
    ASSERT_EQ(pf_checkout(c.get(), "lazy", &b, nullptr, 0), PF_OK)
        << pf_last_error_message(c.get());
    pf_branch_info info{};
    ASSERT_EQ(pf_branch_view_ready(c.get(), b, 0, &info, nullptr, 0, nullptr, 0), PF_OK)
        << pf_last_error_message(c.get());
    EXPECT_EQ(info.n_pages, 60u);
    EXPECT_LE(info.ready_pages, info.n_pages);
    c.reset();
    d.stop(SIGKILL);
  }
  d.restart();
  ClientPtr c(connect_or_fail(d.socket()));
  EXPECT_EQ(checkout_mismatches(c.get(), w), 0u);
}

TEST(ShimsStore, ASmallPoolDemotesSnapshotsToTheStoreAndPagesThemBackIn) {
  // A pool of one 2 MiB chunk of 64 KiB pages; 12 snapshots of 8 pages each need more.
  // Without a store a snapshot would be refused; with one, durable snapshots are paged out
  // least recently used first.
  StoreDaemon d("2MiB", "layers=4,kv_heads=4,head_dim=128,dtype=bf16,page_tokens=4");
  ClientPtr c(connect_or_fail(d.socket()));
  std::vector<Written> written;
  for (std::uint64_t i = 0; i < 12; ++i) {
    written.push_back(snapshot_of(c.get(), 1000 * static_cast<std::uint32_t>(i), 32, 300 + i));
    ASSERT_EQ(pf_wait_durable(c.get(), written.back().cid.c_str()), PF_OK)
        << pf_last_error_message(c.get());
  }
  const pf_pool_stats st = pool_stats(c.get());
  ASSERT_GT(12u * 8u, st.capacity_pages) << "the pool must be too small for every snapshot";
  EXPECT_LE(st.used_pages, st.capacity_pages);
  // Every one checks out with its bytes, twice over (each checkout pages out others).
  for (int pass = 0; pass < 2; ++pass) {
    for (const Written& w : written) EXPECT_EQ(checkout_mismatches(c.get(), w), 0u) << w.cid;
  }
}

TEST(ShimsStore, CachedPrefixPagesEvictedUnderPressureComeBackFromTheStore) {
  // A committed prefix is cached (index only). Filling the small pool with durable snapshots
  // evicts it from memory; a branch on the same tokens then reuses it from the store, with its
  // bytes (promotion), instead of recomputing.
  StoreDaemon d("2MiB", "layers=4,kv_heads=4,head_dim=128,dtype=bf16,page_tokens=4");
  ClientPtr c(connect_or_fail(d.socket()));
  const std::vector<std::uint32_t> prefix = token_range(70000, 6 * 4);  // 6 full pages
  pf_new_branch b{};
  ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &b), PF_OK);
  append_and_write(c.get(), b.branch, prefix, 99);
  ASSERT_EQ(pf_commit(c.get(), b.branch), PF_OK);
  ASSERT_EQ(pf_branch_free(c.get(), b.branch), PF_OK);
  const std::uint64_t capacity = pool_stats(c.get()).capacity_pages;
  for (std::uint64_t i = 0; i * 8 < 2 * capacity; ++i) {
    const Written w = snapshot_of(c.get(), 100000 + 1000 * static_cast<std::uint32_t>(i), 32, i);
    ASSERT_EQ(pf_wait_durable(c.get(), w.cid.c_str()), PF_OK) << pf_last_error_message(c.get());
  }
  pf_new_branch again{};
  ASSERT_EQ(pf_branch_create(c.get(), prefix.data(), prefix.size(), &again), PF_OK)
      << pf_last_error_message(c.get());
  EXPECT_EQ(again.reused_tokens, prefix.size());
  EXPECT_EQ(mismatches(c.get(), again.branch, 0, prefix.size(), 99), 0u);
  EXPECT_EQ(pf_branch_free(c.get(), again.branch), PF_OK);
}

TEST(ShimsStore, KeyedPagesInANamespaceSurviveARestart) {
  // The SGLang / vLLM path: pages published by key (in a namespace) are found by key after a
  // restart, paged in from the store with their bytes; another namespace still sees none.
  StoreDaemon d;
  std::array<std::uint8_t, PF_NAMESPACE_BYTES> ns{};
  ns.fill(0x5c);
  std::vector<std::uint8_t> keys(3 * PF_KEY_BYTES);
  for (std::size_t i = 0; i < keys.size(); ++i) keys[i] = static_cast<std::uint8_t>(i * 7 + 1);
  std::uint32_t pages[3] = {};
  std::size_t page_bytes = 0;
  {
    ClientPtr c(connect_or_fail(d.socket()));
    page_bytes = pool_info(c.get()).page_bytes;
    ASSERT_EQ(pf_pages_alloc(c.get(), 3, pages, 3), PF_OK);
    for (int i = 0; i < 3; ++i) {
      void* p = nullptr;
      ASSERT_EQ(pf_page_ptr(c.get(), pages[i], &p), PF_OK);
      for (std::size_t b = 0; b < page_bytes; ++b) {
        static_cast<std::uint8_t*>(p)[b] = static_cast<std::uint8_t>(b * 31 + i);
      }
    }
    ASSERT_EQ(pf_pages_publish_ns(c.get(), keys.data(), pages, 3, nullptr, ns.data(), nullptr),
              PF_OK)
        << pf_last_error_message(c.get());
  }
  ASSERT_EQ(d.stop(SIGTERM), 0) << d.log();  // drains the write-behind
  d.restart();
  ClientPtr c(connect_or_fail(d.socket()));
  std::uint32_t found[3] = {};
  std::size_t n = 0;
  ASSERT_EQ(
      pf_pages_lookup_keys_ns(c.get(), keys.data(), 3, ns.data(), PF_LOOKUP_HOLD, found, 3, &n),
      PF_OK)
      << pf_last_error_message(c.get());
  ASSERT_EQ(n, 3u);
  for (int i = 0; i < 3; ++i) {
    void* p = nullptr;
    ASSERT_EQ(pf_page_ptr(c.get(), found[i], &p), PF_OK);
    std::size_t bad = 0;
    for (std::size_t b = 0; b < page_bytes; ++b) {
      bad += static_cast<const std::uint8_t*>(p)[b] != static_cast<std::uint8_t>(b * 31 + i);
    }
    EXPECT_EQ(bad, 0u) << "page " << i;
  }
  EXPECT_EQ(pf_pages_release(c.get(), found, 3), PF_OK);
  ASSERT_EQ(pf_pages_lookup_keys(c.get(), keys.data(), 3, 0, found, 3, &n), PF_OK);
  EXPECT_EQ(n, 0u);  // the default namespace never sees them
}

TEST(ShimsStore, WaitDurableWithoutAStoreIsUnavailable) {
  Daemon d;
  ClientPtr c(connect_or_fail(d.socket()));
  Written w = snapshot_of(c.get(), 1, 5, 1);
  EXPECT_EQ(pf_wait_durable(c.get(), w.cid.c_str()), PF_UNAVAILABLE);
  EXPECT_NE(std::string(pf_last_error_message(c.get())).find("--store"), std::string::npos);
  EXPECT_EQ(pf_wait_durable(c.get(), "no-such-ref"), PF_NOT_FOUND);
}

TEST(ShimsStore, AStoreOfAnotherGeometryIsRefusedAtStart) {
  StoreDaemon d;
  const std::string store = d.store();
  ASSERT_EQ(d.stop(SIGTERM), 0);
  pf::testing::TempDir other("pfst2");
  pf::testing::Child child(
      kCli,
      {"serve", "--device", "host", "--geometry", "llama-3-8b", "--capacity", "64MiB", "--socket",
       other.file("s"), "--http", "off", "--store", store},
      other.file("log"));
  EXPECT_EQ(child.wait(), 1);
  const std::string log = pf::testing::read_file(other.file("log"));
  EXPECT_NE(log.find("geometry"), std::string::npos) << log;
}

}  // namespace
}  // namespace pf::shimtest
