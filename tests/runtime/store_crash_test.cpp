// Store crash consistency with real processes: a child opens the store and commits
// manifests (write_blobs, then commit_manifest, and now and then remove_manifest) in a loop,
// reporting each step through a pipe; the parent SIGKILLs it after reading N reports, for
// many N and for seeded random N. After each kill the parent reopens the store and checks:
// every manifest listed reads back bit-identical (page bytes are a pure function of the
// manifest's index), every manifest the child reported committed (and not reported removed)
// is there, none reported removed is, and the blob files are exactly the blobs the listed
// manifests name: no tmp file, no unreferenced blob. No sleeps: the pipe orders everything.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "runtime/manifest.h"
#include "runtime/store.h"
#include "tests/runtime/store_test_util.h"

namespace pf::rt {
namespace {

using testing::blob_files;
using testing::make_blob;
using testing::ScratchDir;
using testing::TestBlob;

// 4 KiB pages: blob writes take the O_DIRECT path where the file system allows it.
Geometry geometry() {
  return *parse_geometry("layers=2,kv_heads=2,head_dim=64,dtype=bf16,page_tokens=4");
}

constexpr int kPagesPerManifest = 3;

// Manifest i: a page shared by four consecutive manifests (dedup and reference counts), a
// page of its own, and a partial last page of its own.
std::vector<TestBlob> pages_of(kernels::PageKernels& k, int i) {
  const Geometry g = geometry();
  return {make_blob(k, g, 1'000'000 + i / 4, g.page_tokens),
          make_blob(k, g, 2'000'000 + i, g.page_tokens),
          make_blob(k, g, 3'000'000 + i, 1 + i % g.page_tokens)};
}

std::string json_of(int i) {
  return "{\"i\":" + std::to_string(i) + "}";
}

int index_of(const std::string& json) {
  return std::stoi(json.substr(5));
}

enum Report : char { kWrote = 'W', kCommitted = 'C', kRemoved = 'R' };

// The child: commits manifests first, first + 1, ... and removes every third one two steps
// later, writing a report after each durable step. Never returns.
[[noreturn]] void child_loop(const std::string& dir, int first, int fd) {
  auto k = kernels::make_host_kernels();
  StoreOptions o;
  o.dir = dir;
  o.geometry = geometry();
  o.io_threads = 2;
  auto store = Store::open(o, *k);
  if (!store.is_ok()) ::_exit(10);
  auto report = [&](Report r, int i) {
    char msg[8] = {static_cast<char>(r)};
    std::memcpy(msg + 1, &i, sizeof(i));
    if (::write(fd, msg, sizeof(msg)) != sizeof(msg)) ::_exit(11);
  };
  for (int i = first; i < first + 100000; ++i) {
    const auto pages = pages_of(*k, i);
    std::vector<BlobWrite> w;
    std::vector<BlobKey> keys;
    for (const TestBlob& p : pages) {
      w.push_back({p.key, p.bytes.data()});
      keys.push_back(p.key);
    }
    if (!(*store)->write_blobs(w).is_ok()) ::_exit(12);
    report(kWrote, i);
    const std::string json = json_of(i);
    if (!(*store)->commit_manifest(cid_of(json), json, keys).is_ok()) ::_exit(13);
    report(kCommitted, i);
    if (i % 3 == 2 && (*store)->has_manifest(cid_of(json_of(i - 2)))) {
      if (!(*store)->remove_manifest(cid_of(json_of(i - 2))).is_ok()) ::_exit(14);
      report(kRemoved, i - 2);
    }
  }
  ::_exit(0);
}

class StoreCrashTest : public ::testing::Test {
 protected:
  std::unique_ptr<kernels::PageKernels> kernels_ = kernels::make_host_kernels();
  ScratchDir dir_;
  std::string store_dir() const { return dir_.path() + "/store"; }
  int next_ = 0;  // the next manifest index a child starts from
  std::set<int> committed_, removed_;

  // Runs one child, kills it after `reports` reports, and checks the store.
  void kill_after(int reports) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_loop(store_dir(), next_, fds[1]);
    }
    ::close(fds[1]);
    for (int n = 0; n < reports; ++n) {
      char msg[8];
      std::size_t got = 0;
      while (got < sizeof(msg)) {
        const ssize_t r = ::read(fds[0], msg + got, sizeof(msg) - got);
        if (r <= 0) break;
        got += static_cast<std::size_t>(r);
      }
      if (got < sizeof(msg)) {
        int wstatus = 0;
        ::waitpid(pid, &wstatus, 0);
        ::close(fds[0]);
        FAIL() << "the child stopped early (status " << wstatus << ")";
      }
      int i = 0;
      std::memcpy(&i, msg + 1, sizeof(i));
      if (msg[0] == kCommitted) committed_.insert(i);
      if (msg[0] == kRemoved) removed_.insert(i);
    }
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ::close(fds[0]);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "status " << wstatus;
    check();
  }

  void check() {
    StoreOptions o;
    o.dir = store_dir();
    o.geometry = geometry();
    auto store = Store::open(o, *kernels_);
    ASSERT_TRUE(store.is_ok()) << store.status().to_string();
    const Geometry g = geometry();
    std::set<int> listed;
    std::set<std::string> names;  // blob file names the listed manifests account for
    for (const StoredManifest& m : (*store)->manifests()) {
      ASSERT_EQ(m.cid, cid_of(m.json));
      const int i = index_of(m.json);
      listed.insert(i);
      const auto pages = pages_of(*kernels_, i);
      std::vector<std::vector<std::byte>> dst(pages.size(), std::vector<std::byte>(g.page_bytes()));
      std::vector<BlobRead> r;
      for (std::size_t p = 0; p < pages.size(); ++p) {
        r.push_back({pages[p].key, dst[p].data()});
        names.insert(pages[p].key.hex());
      }
      const Status st = (*store)->read_blobs(r);
      ASSERT_TRUE(st.is_ok()) << "manifest " << i << ": " << st.to_string();
      for (std::size_t p = 0; p < pages.size(); ++p) {
        ASSERT_EQ(dst[p], pages[p].expected(g)) << "manifest " << i << " page " << p;
      }
    }
    for (int i : committed_) {
      // The child removes manifest i (i % 3 == 0) after committing i + 2, maybe unreported.
      const bool may_be_removed =
          removed_.contains(i) ||
          (i % 3 == 0 && (committed_.contains(i + 2) || listed.contains(i + 2)));
      if (!may_be_removed) {
        ASSERT_TRUE(listed.contains(i)) << "lost manifest " << i;
      }
    }
    for (int i : removed_) {
      ASSERT_FALSE(listed.contains(i)) << "removed manifest " << i << " is back";
    }
    auto files = blob_files(store_dir());
    std::sort(files.begin(), files.end());
    const std::vector<std::string> want(names.begin(), names.end());
    ASSERT_EQ(files, want) << "blob files differ from the blobs the manifests name";
    ASSERT_EQ((*store)->stats().blobs, names.size());
    // The next child goes on after the last manifest that got anywhere.
    int last = next_ - 1;
    if (!listed.empty()) last = std::max(last, *listed.rbegin());
    if (!committed_.empty()) last = std::max(last, *committed_.rbegin());
    next_ = last + 1;
  }
};

TEST_F(StoreCrashTest, SigkillAtManyPointsLeavesWholeManifests) {
  // Every report count from 1 to 24: kills land right after each kind of step (and, as
  // the child runs on until the signal arrives, inside the next ones).
  for (int n = 1; n <= 24 && !HasFatalFailure(); ++n) {
    SCOPED_TRACE("kill after " + std::to_string(n) + " reports");
    kill_after(n);
  }
  // Seeded random kill points.
  std::mt19937 rng(20240611);
  for (int round = 0; round < 16 && !HasFatalFailure(); ++round) {
    const int n = std::uniform_int_distribution<int>(1, 40)(rng);
    SCOPED_TRACE("random round " + std::to_string(round) + ": kill after " + std::to_string(n));
    kill_after(n);
  }
  EXPECT_GT(committed_.size(), 100u);
  EXPECT_FALSE(removed_.empty());
}

}  // namespace
}  // namespace pf::rt
